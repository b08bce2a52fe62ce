//! Every (command, flag) pair, table-driven: each flag of `swift sft`, `pt`, `rlhf`, `infer`,
//! `deploy`, `export`, `eval`, `encode` and `web-ui` changes the run (its output, or what `args.json` records) or
//! is refused by name where it cannot apply. The tables are checked against the commands'
//! definitions (swift-spec), so a new flag without an entry fails here until someone says what
//! it does and how that is shown.
//!
//! * `Recorded`: the training commands record every setting in `args.json`; one run per command
//!   with many flags set at once shows each value arrived (the behaviour of most is asserted by
//!   the tests named in `Asserted`).
//! * `Output`: `swift infer` on the tiny model answers two rows differently (or reports a
//!   different summary) than with the defaults.
//! * `Refused`: with the given context the command exits non-zero naming the flag.
//! * `Asserted`: another end-to-end test asserts the flag's effect; the table names it, and this
//!   file checks that the test exists and mentions the flag.
//! * `SameAsInfer`: `swift deploy` reads the flag through the same group and the same
//!   swift-pipeline code (`bundle`, the template) as `swift infer`, whose entry shows its effect.

use std::path::{Path, PathBuf};

use crate::common::*;
use clap::Args;
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
enum Check {
    /// `args.json` holds this value for the flag (given as `--flag VALUE...`).
    Recorded(&'static [&'static str]),
    /// Refused (exit non-zero, the message names `--flag`) when added to these arguments.
    Refused(&'static [&'static str]),
    /// `swift infer` / `swift encode` with `CONTEXT... --flag VALUE...` answers differently (or
    /// succeeds where it failed) than with `CONTEXT...` alone. `{qa}` and `{bad}` in the
    /// context stand for generated dataset files (question/answer columns; a malformed line).
    Output(&'static [&'static str], &'static [&'static str]),
    /// Read by the same group and pipeline code as in `swift infer`, whose table shows its effect.
    SameAsInfer,
    /// This test (a function somewhere under tests/) asserts the flag's effect.
    Asserted(&'static str),
}
use Check::*;

type Table = &'static [(&'static str, Check)];

/// The tuner, data, template, encoding, trainer and quantization flags shared by the training
/// commands.
const TRAINING: Table = &[
    (
        "model",
        Asserted("lora_loss_falls_and_the_run_folder_is_complete"),
    ),
    ("model_type", Recorded(&["llama"])),
    (
        "torch_dtype",
        Asserted("bfloat16_training_keeps_the_lora_tensors_in_float32"),
    ),
    ("device", Recorded(&["cpu"])),
    ("allow_unused_weights", Recorded(&["true"])),
    ("template", Recorded(&["chatml"])),
    ("system", Recorded(&["Be brief."])),
    ("enable_thinking", Recorded(&["false"])),
    ("max_length", Recorded(&["200"])),
    ("truncation_strategy", Recorded(&["right"])),
    (
        "dataset",
        Asserted("lora_loss_falls_and_the_run_folder_is_complete"),
    ),
    ("data_seed", Recorded(&["7"])),
    ("columns", Recorded(&[r#"{"output": "output"}"#])),
    ("skip_bad_rows", Recorded(&["true"])),
    ("model_name", Recorded(&["Tiny"])),
    ("model_author", Recorded(&["Tests"])),
    ("val_dataset", Recorded(&["alpaca-en-demo#2"])),
    (
        "split_dataset_ratio",
        Asserted("validation_split_is_evaluated_every_eval_steps"),
    ),
    ("eval_steps", Refused(&[])),
    ("eval_on_start", Refused(&[])),
    (
        "eval_use_evalscope",
        Asserted("benchmarks_run_at_each_evaluation_step_of_training"),
    ),
    (
        "eval_dataset",
        Asserted("benchmarks_run_at_each_evaluation_step_of_training"),
    ),
    (
        "eval_limit",
        Asserted("benchmarks_run_at_each_evaluation_step_of_training"),
    ),
    ("eval_few_shot", Refused(&[])),
    (
        "eval_generation_config",
        Asserted("a_generation_benchmark_during_training_equals_eval_of_the_checkpoint"),
    ),
    (
        "tuner_type",
        Asserted("freeze_keeps_the_named_parameters_and_trains_the_rest"),
    ),
    ("lora_rank", Recorded(&["4"])),
    ("lora_alpha", Recorded(&["8"])),
    (
        "lora_dropout",
        Asserted("resuming_gives_the_losses_of_an_uninterrupted_run"),
    ),
    ("target_modules", Recorded(&["q_proj", "v_proj"])),
    (
        "modules_to_save",
        Asserted("modules_to_save_train_whole_layers_that_peft_and_the_merge_agree_on"),
    ),
    ("use_rslora", Recorded(&["true"])),
    (
        "use_dora",
        Asserted("peft_agrees_with_dora_rslora_pissa_and_olora_adapters"),
    ),
    ("init_weights", Recorded(&["gaussian"])),
    ("lora_lr_ratio", Recorded(&["2"])),
    (
        "feedforward_modules",
        Asserted("ia3_matches_peft_and_peft_loads_its_checkpoint"),
    ),
    (
        "adalora_init_r",
        Asserted("adalora_trains_and_peft_loads_its_checkpoint"),
    ),
    (
        "adalora_target_r",
        Asserted("adalora_trains_and_peft_loads_its_checkpoint"),
    ),
    (
        "adalora_tinit",
        Asserted("adalora_trains_and_peft_loads_its_checkpoint"),
    ),
    (
        "adalora_tfinal",
        Asserted("adalora_trains_and_peft_loads_its_checkpoint"),
    ),
    (
        "adalora_deltaT",
        Asserted("adalora_trains_and_peft_loads_its_checkpoint"),
    ),
    (
        "adalora_beta1",
        Asserted("adalora_trains_and_peft_loads_its_checkpoint"),
    ),
    (
        "adalora_beta2",
        Asserted("adalora_trains_and_peft_loads_its_checkpoint"),
    ),
    (
        "adalora_orth_reg_weight",
        Asserted("adalora_trains_and_peft_loads_its_checkpoint"),
    ),
    (
        "vera_rank",
        Asserted("vera_matches_peft_and_peft_loads_its_checkpoint"),
    ),
    (
        "vera_projection_prng_key",
        Asserted("vera_matches_peft_and_peft_loads_its_checkpoint"),
    ),
    (
        "vera_dropout",
        Asserted("vera_matches_peft_and_peft_loads_its_checkpoint"),
    ),
    (
        "vera_d_initial",
        Asserted("vera_matches_peft_and_peft_loads_its_checkpoint"),
    ),
    (
        "boft_block_size",
        Asserted("boft_matches_peft_and_peft_loads_its_checkpoint"),
    ),
    (
        "boft_block_num",
        Asserted("boft_with_two_butterfly_factors_trains_reloads_and_merges"),
    ),
    (
        "boft_n_butterfly_factor",
        Asserted("boft_with_two_butterfly_factors_trains_reloads_and_merges"),
    ),
    (
        "boft_dropout",
        Asserted("boft_matches_peft_and_peft_loads_its_checkpoint"),
    ),
    (
        "fourier_n_frequency",
        Asserted("fourierft_matches_peft_and_peft_loads_its_checkpoint"),
    ),
    (
        "fourier_scaling",
        Asserted("fourierft_matches_peft_and_peft_loads_its_checkpoint"),
    ),
    (
        "random_loc_seed",
        Asserted("fourierft_matches_peft_and_peft_loads_its_checkpoint"),
    ),
    (
        "group_size_ratio",
        Asserted(
            "longlora_trains_at_max_length_1024_and_peft_and_infer_read_it_with_full_attention",
        ),
    ),
    (
        "embedder_and_normalizer",
        Asserted("longlora_flags_are_checked"),
    ),
    ("freeze_parameters", Refused(&[])),
    ("trainable_parameters", Refused(&[])),
    ("lisa_activated_layers", Refused(&[])),
    // Issue 21's image flags: refused by name on the text-only tiny model.
    ("freeze_vit", Refused(&[])),
    ("freeze_aligner", Refused(&[])),
    ("freeze_llm", Refused(&[])),
    ("vit_lr", Refused(&[])),
    ("aligner_lr", Refused(&[])),
    ("max_pixels", Refused(&[])),
    ("lisa_step_interval", Refused(&[])),
    ("llamapro_num_new_blocks", Refused(&[])),
    (
        "quant_method",
        Asserted("qlora_trains_lora_over_a_frozen_4bit_base_and_the_loss_falls"),
    ),
    ("quant_bits", Refused(&[])),
    ("learning_rate", Recorded(&["0.001"])),
    ("lr_scheduler_type", Recorded(&["linear"])),
    ("warmup_ratio", Recorded(&["0.1"])),
    ("warmup_steps", Recorded(&["1"])),
    ("num_train_epochs", Recorded(&["2"])),
    ("max_steps", Recorded(&["2"])),
    ("per_device_train_batch_size", Recorded(&["2"])),
    (
        "gradient_accumulation_steps",
        Asserted("gradient_accumulation_equals_one_big_batch"),
    ),
    ("max_grad_norm", Recorded(&["0.5"])),
    ("weight_decay", Recorded(&["0.01"])),
    ("adam_beta1", Recorded(&["0.8"])),
    ("adam_beta2", Recorded(&["0.9"])),
    ("adam_epsilon", Recorded(&["0.000001"])),
    (
        "optimizer",
        Asserted("a_plugins_optimizer_trains_with_its_own_update"),
    ),
    (
        "use_galore",
        Asserted("galore_and_q_galore_resume_mid_run_to_the_uninterrupted_run"),
    ),
    (
        "galore_quantization",
        Asserted("optimizer_flags_that_cannot_apply_are_refused_by_name"),
    ),
    ("galore_rank", Refused(&[])),
    ("galore_update_proj_gap", Refused(&[])),
    ("galore_scale", Refused(&[])),
    ("galore_target_modules", Refused(&[])),
    ("seed", Recorded(&["3"])),
    ("dataset_shuffle", Recorded(&["false"])),
    ("train_dataloader_shuffle", Recorded(&["false"])),
    ("logging_steps", Recorded(&["1"])),
    ("save_steps", Recorded(&["1"])),
    ("save_total_limit", Recorded(&["1"])),
    (
        "output_dir",
        Asserted("lora_loss_falls_and_the_run_folder_is_complete"),
    ),
    (
        "add_version",
        Asserted("a_second_run_into_the_same_folder_leaves_the_first_byte_identical"),
    ),
    ("overwrite_output_dir", Refused(&[])),
    (
        "resume_from_checkpoint",
        Asserted("resuming_gives_the_losses_of_an_uninterrupted_run"),
    ),
    ("rows_per_pass", Recorded(&["0"])),
    ("max_pass_tokens", Recorded(&["0"])),
    ("gradient_checkpointing", Recorded(&["true"])),
    (
        "packing",
        Asserted("sft_and_pt_with_packing_log_the_losses_of_unpacked_training"),
    ),
    ("packing_strategy", Refused(&[])),
    (
        "ddp_timeout",
        Asserted("a_killed_rank_ends_the_other_within_ddp_timeout_naming_it"),
    ),
    (
        "deepspeed",
        Asserted("two_ranks_train_lora_and_full_as_one_process_with_the_global_batch"),
    ),
];

/// `swift sft` differs from the shared table in `loss_scale` only.
const SFT: Table = &[("loss_scale", Recorded(&["all"]))];
/// `swift pt` trains on every token: `--loss_scale` cannot apply.
const PT: Table = &[("loss_scale", Refused(&[]))];
/// `swift rlhf`'s own flags (with `--rlhf_type dpo`, the default).
const RLHF: Table = &[
    ("loss_scale", Recorded(&["all"])),
    // Preference rows keep their final answer: truncate from the left.
    ("truncation_strategy", Recorded(&["left"])),
    ("max_length", Recorded(&["300"])),
    (
        "rlhf_type",
        Asserted("lora_reward_model_trains_saves_the_head_and_scores_pairs"),
    ),
    ("loss_type", Recorded(&["ipo"])),
    ("beta", Recorded(&["0.2"])),
    ("label_smoothing", Refused(&["--rlhf_type", "orpo"])),
    ("rpo_alpha", Recorded(&["0.5"])),
    ("simpo_gamma", Refused(&[])),
    ("cpo_alpha", Refused(&[])),
    ("desirable_weight", Refused(&[])),
    ("undesirable_weight", Refused(&[])),
    ("rlhf_chunk_size", Recorded(&["0"])),
    ("disable_dropout", Refused(&["--tuner_type", "full"])),
    ("center_rewards_coefficient", Refused(&[])),
    ("ref_model", Refused(&["--rlhf_type", "orpo"])),
    ("rows_per_pass", Refused(&[])),
    ("max_pass_tokens", Refused(&[])),
];

const INFER: Table = &[
    (
        "max_pixels",
        Asserted("max_pixels_applies_to_infer_and_deploy_images"),
    ),
    (
        "allow_unused_weights",
        Asserted("model_folders_with_weights_their_config_does_not_use_are_refused"),
    ),
    (
        "ignore_adapter_mismatch",
        Asserted("adapters_that_do_not_match_their_files_or_base_are_refused"),
    ),
    ("model", Asserted("builtin_families_match_transformers")),
    (
        "model_type",
        Asserted("bad_inputs_give_one_clear_error_each"),
    ),
    ("torch_dtype", Asserted("bfloat16_runs_close_to_float32")),
    ("device", Asserted("bfloat16_runs_close_to_float32")),
    ("template", Output(&[], &["chatml"])),
    ("system", Output(&[], &["Answer in French."])),
    (
        "enable_thinking",
        Asserted("generation_prompts_match_the_chat_template_end_to_end"),
    ),
    ("max_new_tokens", Output(&[], &["2"])),
    ("temperature", Output(&[], &["1.5"])),
    ("top_k", Output(&["--temperature", "1.5"], &["1"])),
    ("top_p", Output(&["--temperature", "1.5"], &["0.01"])),
    ("repetition_penalty", Output(&[], &["3"])),
    ("seed", Output(&["--temperature", "1.5"], &["7"])),
    (
        "stop_words",
        Asserted("batched_generation_equals_one_by_one"),
    ),
    ("stream", Refused(&[])),
    ("infer_backend", Refused(&[])),
    (
        "adapters",
        Asserted("peft_loads_the_adapter_and_agrees_on_the_tiny_model"),
    ),
    ("merge_lora", Refused(&[])),
    ("max_batch_size", Output(&[], &["1"])),
    ("max_length", Output(&[], &["8"])),
    (
        "val_dataset",
        Asserted("batched_generation_equals_one_by_one"),
    ),
    (
        "result_path",
        Asserted("batched_generation_equals_one_by_one"),
    ),
    ("images", Asserted("infer_and_deploy_answer_about_an_image")),
    (
        "debug_input_ids",
        Asserted("builtin_families_match_transformers"),
    ),
    (
        "debug_greedy_tokens",
        Asserted("bfloat16_runs_close_to_float32"),
    ),
    ("nll_file", Asserted("nll_on_wiki_demo_is_2_94")),
    ("nll_tokens", Asserted("nll_on_wiki_demo_is_2_94")),
];

const DEPLOY: Table = &[
    (
        "max_pixels",
        Asserted("max_pixels_applies_to_infer_and_deploy_images"),
    ),
    ("allow_unused_weights", SameAsInfer),
    (
        "ignore_adapter_mismatch",
        Asserted("adapters_that_do_not_match_their_files_or_base_are_refused"),
    ),
    ("model", Asserted("openai_client_scenario")),
    ("model_type", SameAsInfer),
    ("torch_dtype", SameAsInfer),
    ("device", SameAsInfer),
    ("template", SameAsInfer),
    ("system", SameAsInfer),
    ("enable_thinking", SameAsInfer),
    ("infer_backend", Asserted("bad_flags_are_clear_errors")),
    ("adapters", Asserted("openai_client_scenario")),
    ("host", Asserted("openai_client_scenario")),
    ("port", Asserted("openai_client_scenario")),
    ("api_key", Asserted("openai_client_scenario")),
    ("served_model_name", Asserted("openai_client_scenario")),
    ("max_batch_size", Asserted("full_queue_scenario")),
    ("max_queue", Asserted("full_queue_scenario")),
    ("max_model_len", Asserted("openai_client_scenario")),
    ("debug_step_delay_ms", Asserted("full_queue_scenario")),
];

const EXPORT: Table = &[
    (
        "ignore_adapter_mismatch",
        Asserted("adapters_that_do_not_match_their_files_or_base_are_refused"),
    ),
    (
        "from_gguf",
        Asserted("smollm_gguf_converts_to_a_hugging_face_folder"),
    ),
    (
        "output_dir",
        Asserted("merged_folder_behaves_like_the_adapter_in_swift_and_transformers"),
    ),
    ("model", Refused(&["--from_gguf", "x.gguf"])),
    (
        "adapters",
        Asserted("merged_folder_behaves_like_the_adapter_in_swift_and_transformers"),
    ),
    (
        "merge_lora",
        Asserted("merged_folder_behaves_like_the_adapter_in_swift_and_transformers"),
    ),
    (
        "to_gguf",
        Asserted("tiny_models_export_to_gguf_that_llama_cpp_tools_read"),
    ),
    ("gguf_type", Refused(&["--merge_lora", "true"])),
    (
        "to_ollama",
        Asserted("modelfile_comes_from_the_swift_template"),
    ),
    (
        "template",
        Refused(&["--quant_method", "rtn", "--quant_bits", "8"]),
    ),
    (
        "quant_method",
        Asserted("bnb_and_rtn_exports_load_and_match_the_numpy_reference"),
    ),
    (
        "quant_bits",
        Asserted("bnb_and_rtn_exports_load_and_match_the_numpy_reference"),
    ),
    (
        "dataset",
        Refused(&["--quant_method", "rtn", "--quant_bits", "8"]),
    ),
    ("group_size", Refused(&["--to_gguf"])),
    (
        "quant_n_samples",
        Refused(&["--quant_method", "bnb", "--quant_bits", "4"]),
    ),
    (
        "max_length",
        Refused(&["--quant_method", "bnb", "--quant_bits", "4"]),
    ),
    (
        "act_order",
        Refused(&["--quant_method", "awq", "--quant_bits", "4"]),
    ),
    (
        "quant_lm_head",
        Refused(&["--quant_method", "bnb", "--quant_bits", "4"]),
    ),
    (
        "bnb_4bit_quant_type",
        Refused(&["--quant_method", "rtn", "--quant_bits", "4"]),
    ),
    (
        "bnb_4bit_use_double_quant",
        Refused(&["--quant_method", "hqq", "--quant_bits", "4"]),
    ),
    ("device", Refused(&["--to_gguf"])),
];

/// `swift eval` (tests/eval.rs): multiple choice is scored by log-likelihood on a plain-text
/// prompt, so the sampling and template flags are refused for it.
const EVAL: Table = &[
    ("model", Asserted("an_mcq_csv_is_scored_into_a_run_folder")),
    ("model_type", SameAsInfer),
    ("torch_dtype", SameAsInfer),
    ("device", SameAsInfer),
    ("allow_unused_weights", SameAsInfer),
    ("adapters", SameAsInfer),
    ("ignore_adapter_mismatch", SameAsInfer),
    ("template", Refused(&[])),
    ("system", Refused(&[])),
    ("enable_thinking", Refused(&[])),
    ("max_new_tokens", Refused(&[])),
    ("temperature", Refused(&[])),
    ("top_k", Refused(&[])),
    ("top_p", Refused(&[])),
    ("repetition_penalty", Refused(&[])),
    ("seed", Refused(&[])),
    ("stop_words", Refused(&[])),
    ("stream", Refused(&[])),
    (
        "infer_backend",
        Asserted("malformed_rows_and_impossible_requests_are_refused_by_name"),
    ),
    (
        "eval_dataset",
        Asserted("an_mcq_csv_is_scored_into_a_run_folder"),
    ),
    (
        "output_dir",
        Asserted("an_mcq_csv_is_scored_into_a_run_folder"),
    ),
    (
        "eval_limit",
        Asserted("mmlu_on_smollm2_agrees_with_the_transformers_reference"),
    ),
    (
        "eval_few_shot",
        Asserted("mmlu_on_smollm2_agrees_with_the_transformers_reference"),
    ),
    (
        "eval_url",
        Asserted("eval_url_against_swift_deploy_scores_as_local_eval"),
    ),
    ("api_key", Refused(&[])),
];

/// `swift web-ui` (tests/webui.rs): the server's own flags.
const WEB_UI: Table = &[
    (
        "server_name",
        Asserted("a_public_address_needs_an_api_key_and_foreign_requests_are_refused"),
    ),
    (
        "server_port",
        Asserted("a_public_address_needs_an_api_key_and_foreign_requests_are_refused"),
    ),
    (
        "lang",
        Asserted("a_public_address_needs_an_api_key_and_foreign_requests_are_refused"),
    ),
    (
        "api_key",
        Asserted("a_public_address_needs_an_api_key_and_foreign_requests_are_refused"),
    ),
    (
        "output_dir",
        Asserted("runs_are_checked_before_launch_and_survive_a_server_restart"),
    ),
    (
        "allowed_roots",
        Asserted("runs_are_checked_before_launch_and_survive_a_server_restart"),
    ),
];

const ENCODE: Table = &[
    (
        "model",
        Refused(&[
            "--tokenizer",
            "../tests/fixtures/models/llama/tokenizer.json",
        ]),
    ),
    (
        "tokenizer",
        Asserted("registered_datasets_encode_as_llama3_inference_prompts"),
    ),
    (
        "template",
        Asserted("a_text_plugin_template_encodes_with_bos_eos_placeholders"),
    ),
    (
        "system",
        Asserted("generation_prompts_match_the_chat_template_end_to_end"),
    ),
    (
        "enable_thinking",
        Asserted("generation_prompts_match_the_chat_template_end_to_end"),
    ),
    (
        "max_length",
        Asserted("show_marks_trained_spans_and_truncation_is_counted"),
    ),
    (
        "truncation_strategy",
        Asserted("show_marks_trained_spans_and_truncation_is_counted"),
    ),
    (
        "loss_scale",
        Asserted("show_marks_trained_spans_and_truncation_is_counted"),
    ),
    (
        "dataset",
        Asserted("registered_demo_sets_match_the_chat_templates_through_the_binary"),
    ),
    (
        "data_seed",
        Output(&["--dataset", "alpaca-en-demo#2"], &["7"]),
    ),
    (
        "columns",
        Output(
            &["--dataset", "{qa}"],
            &[r#"{"q": "query", "a": "response"}"#],
        ),
    ),
    ("skip_bad_rows", Output(&["--dataset", "{bad}"], &["true"])),
    (
        "model_name",
        Output(
            &["--dataset", "identity#2", "--model_author", "Tests"],
            &["Tiny"],
        ),
    ),
    (
        "model_author",
        Output(
            &["--dataset", "identity#2", "--model_name", "Tiny"],
            &["Tests"],
        ),
    ),
    (
        "generation_prompt",
        Asserted("generation_prompts_match_the_chat_template_end_to_end"),
    ),
    (
        "show",
        Asserted("show_marks_trained_spans_and_truncation_is_counted"),
    ),
    (
        "json",
        Asserted("registered_demo_sets_match_the_chat_templates_through_the_binary"),
    ),
];

/// Every numeric flag (of any command): a value outside its range and the range the refusal
/// must name (`must be RANGE`), the same on the command line and through serde. A numeric flag
/// missing here fails `numeric_flags_refuse_values_outside_their_range`: declare its range in
/// swift-spec (`spec/src/range.rs`) and add it.
const NUMERIC: &[(&str, &str, &str)] = &[
    ("max_length", "0", "an integer >= 1"),
    ("data_seed", "-1", "an integer >= 0"),
    ("split_dataset_ratio", "1", "a finite number in [0, 1)"),
    ("eval_steps", "0", "an integer >= 1"),
    ("eval_limit", "0", "an integer >= 1"),
    ("eval_few_shot", "-1", "an integer >= 0"),
    ("lora_rank", "0", "an integer >= 1"),
    ("lora_alpha", "0", "a finite number > 0"),
    ("lora_dropout", "1.5", "a finite number in [0, 1)"),
    ("lora_lr_ratio", "-1", "a finite number > 0"),
    ("adalora_init_r", "0", "an integer >= 1"),
    ("adalora_target_r", "0", "an integer >= 1"),
    ("adalora_tinit", "-1", "an integer >= 0"),
    ("adalora_tfinal", "-1", "an integer >= 0"),
    ("adalora_deltaT", "0", "an integer >= 1"),
    ("adalora_beta1", "1", "a finite number in (0, 1)"),
    ("adalora_beta2", "0", "a finite number in (0, 1)"),
    ("adalora_orth_reg_weight", "-1", "a finite number >= 0"),
    ("vera_rank", "0", "an integer >= 1"),
    ("vera_projection_prng_key", "-1", "an integer >= 0"),
    ("vera_dropout", "1.5", "a finite number in [0, 1)"),
    ("vera_d_initial", "-1", "a finite number >= 0"),
    ("boft_block_size", "-1", "an integer >= 0"),
    ("boft_block_num", "-1", "an integer >= 0"),
    ("boft_n_butterfly_factor", "0", "an integer >= 1"),
    ("boft_dropout", "1.5", "a finite number in [0, 1)"),
    ("fourier_n_frequency", "0", "an integer >= 1"),
    ("fourier_scaling", "0", "a finite number > 0"),
    ("random_loc_seed", "-1", "an integer >= 0"),
    ("group_size_ratio", "0", "a finite number in (0, 1]"),
    ("lisa_activated_layers", "0", "an integer >= 1"),
    ("lisa_step_interval", "0", "an integer >= 1"),
    ("llamapro_num_new_blocks", "0", "an integer >= 1"),
    ("vit_lr", "0", "a finite number > 0"),
    ("aligner_lr", "-1", "a finite number > 0"),
    ("max_pixels", "0", "an integer >= 1"),
    ("quant_bits", "9", "an integer in [1, 8]"),
    ("learning_rate", "-1", "a finite number >= 0"),
    ("warmup_ratio", "1.5", "a finite number in [0, 1]"),
    ("warmup_steps", "-1", "an integer >= 0"),
    ("num_train_epochs", "0", "a finite number > 0"),
    ("max_steps", "0", "an integer >= 1"),
    ("per_device_train_batch_size", "0", "an integer >= 1"),
    ("gradient_accumulation_steps", "0", "an integer >= 1"),
    ("max_grad_norm", "-1", "a finite number >= 0"),
    ("weight_decay", "-0.1", "a finite number >= 0"),
    ("adam_beta1", "1", "a finite number in [0, 1)"),
    ("adam_beta2", "-0.5", "a finite number in [0, 1)"),
    ("adam_epsilon", "0", "a finite number > 0"),
    ("galore_rank", "0", "an integer >= 1"),
    ("galore_update_proj_gap", "0", "an integer >= 1"),
    ("galore_scale", "-1", "a finite number >= 0"),
    ("seed", "-1", "an integer >= 0"),
    ("logging_steps", "0", "an integer >= 1"),
    ("save_steps", "0", "an integer >= 1"),
    ("save_total_limit", "0", "an integer >= 1"),
    ("rows_per_pass", "-1", "an integer >= 0"),
    ("max_pass_tokens", "-1", "an integer >= 0"),
    ("ddp_timeout", "0", "an integer >= 1"),
    ("beta", "0", "a finite number > 0"),
    ("label_smoothing", "0.5", "a finite number in [0, 0.5)"),
    ("rpo_alpha", "-1", "a finite number >= 0"),
    ("simpo_gamma", "-1", "a finite number >= 0"),
    ("cpo_alpha", "-1", "a finite number >= 0"),
    ("desirable_weight", "0", "a finite number > 0"),
    ("undesirable_weight", "0", "a finite number > 0"),
    ("rlhf_chunk_size", "-1", "an integer >= 0"),
    ("center_rewards_coefficient", "-1", "a finite number >= 0"),
    ("max_new_tokens", "0", "an integer >= 1"),
    ("temperature", "-1", "a finite number >= 0"),
    ("top_k", "-1", "an integer >= 0"),
    ("top_p", "0", "a finite number in (0, 1]"),
    ("repetition_penalty", "0", "a finite number > 0"),
    ("port", "70000", "an integer in [0, 65535]"),
    ("server_port", "70000", "an integer in [0, 65535]"),
    ("max_batch_size", "0", "an integer >= 1"),
    ("max_queue", "0", "an integer >= 1"),
    ("max_model_len", "0", "an integer >= 1"),
    ("debug_step_delay_ms", "-1", "an integer >= 0"),
    ("debug_greedy_tokens", "-1", "an integer >= 0"),
    ("nll_tokens", "0", "an integer >= 1"),
    ("group_size", "-1", "an integer >= 0"),
    ("quant_n_samples", "0", "an integer >= 1"),
];

/// The flag ids of a command's specification (clap's ids are the field names).
fn flags_of<T: Args>() -> Vec<String> {
    T::augment_args(clap::Command::new("x"))
        .get_arguments()
        .filter(|a| a.get_long().is_some())
        .map(|a| a.get_id().to_string())
        .collect()
}

/// The table of a command: its own entries first, then the shared ones.
fn table(own: Table, shared: Table) -> Vec<(&'static str, Check)> {
    let mut t: Vec<(&str, Check)> = own.to_vec();
    for e in shared {
        if !t.iter().any(|(f, _)| f == &e.0) {
            t.push(*e);
        }
    }
    t
}

/// A command, its table, its flags as clap defines them, and its specification's parsers.
type CommandTable = (
    &'static str,
    Vec<(&'static str, Check)>,
    Vec<String>,
    Parsers,
);

/// A command specification's two ways in: its clap definition (the command line) and serde
/// (`--config` files, `SWIFT_*` variables, everything the host layers), as plain functions.
#[derive(Clone, Copy)]
struct Parsers {
    command: fn() -> clap::Command,
    /// The defaults with `flag` set to a JSON value, read back through serde.
    with_value: fn(&str, Value) -> Result<(), String>,
}

impl Parsers {
    fn of<T: Args + clap::FromArgMatches + serde::Serialize + serde::de::DeserializeOwned>() -> Self
    {
        Parsers {
            command: || T::augment_args(clap::Command::new("x")).no_binary_name(true),
            with_value: |flag, v| {
                let m = T::augment_args(clap::Command::new("x"))
                    .no_binary_name(true)
                    .try_get_matches_from(Vec::<String>::new())
                    .unwrap();
                let mut defaults = serde_json::to_value(T::from_arg_matches(&m).unwrap()).unwrap();
                defaults[flag] = v;
                serde_json::from_value::<T>(defaults)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        }
    }
}

fn all_tables() -> Vec<CommandTable> {
    use swift_spec::*;
    vec![
        (
            "sft",
            table(SFT, TRAINING),
            flags_of::<TrainSpec>(),
            Parsers::of::<TrainSpec>(),
        ),
        (
            "pt",
            table(PT, TRAINING),
            flags_of::<TrainSpec>(),
            Parsers::of::<TrainSpec>(),
        ),
        (
            "rlhf",
            table(RLHF, TRAINING),
            flags_of::<RlhfSpec>(),
            Parsers::of::<RlhfSpec>(),
        ),
        (
            "infer",
            table(INFER, &[]),
            flags_of::<InferSpec>(),
            Parsers::of::<InferSpec>(),
        ),
        (
            "deploy",
            table(DEPLOY, &[]),
            flags_of::<DeploySpec>(),
            Parsers::of::<DeploySpec>(),
        ),
        (
            "export",
            table(EXPORT, &[]),
            flags_of::<ExportSpec>(),
            Parsers::of::<ExportSpec>(),
        ),
        (
            "eval",
            table(EVAL, &[]),
            flags_of::<EvalSpec>(),
            Parsers::of::<EvalSpec>(),
        ),
        (
            "encode",
            table(ENCODE, &[]),
            flags_of::<EncodeSpec>(),
            Parsers::of::<EncodeSpec>(),
        ),
        (
            "web-ui",
            table(WEB_UI, &[]),
            flags_of::<WebUiSpec>(),
            Parsers::of::<WebUiSpec>(),
        ),
    ]
}

#[test]
fn every_flag_of_every_command_has_an_entry_and_asserting_tests_exist() {
    let mut sources = String::new();
    for e in std::fs::read_dir(workspace_root().join("tests")).unwrap() {
        let p = e.unwrap().path();
        let files: Vec<PathBuf> = if p.is_dir() {
            std::fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect()
        } else {
            vec![p]
        };
        for f in files {
            if f.extension().is_some_and(|x| x == "rs") {
                sources.push_str(&std::fs::read_to_string(&f).unwrap());
            }
        }
    }
    for (cmd, table, flags, _) in all_tables() {
        for f in &flags {
            assert!(
                table.iter().any(|(t, _)| t == f),
                "swift {cmd} --{f} has no entry in tests/flags.rs: say how its effect is shown"
            );
        }
        for (f, check) in &table {
            assert!(
                flags.iter().any(|x| x == f),
                "tests/flags.rs lists --{f} for swift {cmd}, which has no such flag"
            );
            if let SameAsInfer = check {
                let shown = INFER
                    .iter()
                    .any(|(g, c)| g == f && !matches!(c, SameAsInfer));
                assert!(
                    shown,
                    "swift {cmd} --{f}: swift infer's table does not show it"
                );
            }
            if let Asserted(test) = check {
                let body = test_body(&sources, test).unwrap_or_else(|| {
                    panic!("swift {cmd} --{f}: the asserting test `{test}` does not exist")
                });
                assert!(
                    body.contains(f) || body.contains(&f.replace('_', "-")),
                    "swift {cmd} --{f}: the asserting test `{test}` never mentions the flag"
                );
            }
        }
    }
}

/// The text of test function `name` in `sources` (to its closing brace at column 0), with the
/// helpers it calls by name from the same sources (one level deep).
fn test_body<'a>(sources: &'a str, name: &str) -> Option<String> {
    let body = |n: &str| -> Option<&'a str> {
        let at = sources.find(&format!("fn {n}("))?;
        let rest = &sources[at..];
        let end = rest.find("\n}\n").map_or(rest.len(), |e| e + 3);
        Some(&rest[..end])
    };
    let own = body(name)?;
    let mut text = own.to_string();
    // Helpers called from the test (`helper(`), e.g. a shared runner with the flags.
    for word in own.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if word.len() > 3 && word != name && own.contains(&format!("{word}(")) {
            if let Some(b) = body(word) {
                text.push_str(b);
            }
        }
    }
    Some(text)
}

/// `--flag VALUE...` for a flag id.
fn flag_args(flag: &str, values: &[&str]) -> Vec<String> {
    let mut v = vec![format!("--{flag}")];
    v.extend(values.iter().map(|s| s.to_string()));
    v
}

/// A value a `Refused` entry sets its flag to (anything but the default).
fn refused_value(flag: &str) -> Vec<&'static str> {
    match flag {
        "columns" => vec![r#"{"a": "b"}"#],
        "target_modules" | "freeze_parameters" | "trainable_parameters" | "dataset" => {
            vec!["model.layers.0"]
        }
        "stream" | "merge_lora" | "packing" => vec!["false"],
        "eval_on_start" | "overwrite_output_dir" => vec!["true"],
        "loss_scale" => vec!["all"],
        "packing_strategy" => vec!["sequential"],
        "infer_backend" => vec!["no-such-backend"],
        "template" => vec!["chatml"],
        "bnb_4bit_quant_type" => vec!["fp4"],
        "bnb_4bit_use_double_quant" | "act_order" | "disable_dropout" => vec!["false"],
        "ref_model" => vec!["tests/fixtures/models/llama"],
        "model" => vec!["tests/fixtures/models/llama"],
        "gguf_type" => vec!["q8_0"],
        "device" => vec!["cpu"],
        "top_p" => vec!["0.5"],
        "enable_thinking" => vec!["true"],
        "freeze_vit" | "freeze_aligner" => vec!["false"],
        "freeze_llm" | "quant_lm_head" => vec!["true"],
        _ => vec!["3"],
    }
}

/// The arguments a command needs to run at all on the tiny model (`combined`: the training
/// run that sets the table's values for max_steps and max_length itself).
fn base_args_for(cmd: &str, out: &Path, combined: bool) -> Vec<String> {
    let mut v = base_args(cmd, out);
    if combined {
        for flag in ["--max_steps", "--max_length", "--truncation_strategy"] {
            if let Some(i) = v.iter().position(|a| a == flag) {
                v.drain(i..i + 2);
            }
        }
    }
    v
}

fn base_args(cmd: &str, out: &Path) -> Vec<String> {
    let model = tiny().display().to_string();
    let out = out.display().to_string();
    let v: Vec<&str> = match cmd {
        "sft" | "pt" => vec![
            "--model",
            &model,
            "--dataset",
            "alpaca-en-demo#4",
            "--max_steps",
            "1",
            "--max_length",
            "512",
            "--output_dir",
            &out,
        ],
        "rlhf" => vec![
            "--model",
            &model,
            "--dataset",
            "dpo-en-demo#4",
            "--max_steps",
            "1",
            "--max_length",
            "256",
            "--truncation_strategy",
            "left",
            "--output_dir",
            &out,
        ],
        "infer" => vec!["--model", &model],
        "export" => vec!["--model", &model, "--output_dir", &out],
        "eval" => vec!["--model", &model, "--eval_dataset", "mmlu"],
        _ => vec![],
    };
    v.into_iter().map(String::from).collect()
}

fn run_swift(cmd: &str, args: &[String]) -> std::process::Output {
    let mut all = vec![cmd.to_string()];
    all.extend(args.iter().cloned());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    swift_env(&refs, &[("SWIFT_RS_CACHE", &cache().display().to_string())])
}

#[test]
fn refused_flags_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (cmd, table, _, _) in all_tables() {
        for (flag, check) in table {
            let Refused(context) = check else { continue };
            let out = dir.path().join(format!("{cmd}-{flag}"));
            let mut args = base_args(cmd, &out);
            if cmd == "export" && flag == "model" {
                args.retain(|a| a != "--model" && !a.ends_with("models/llama"));
            }
            args.extend(context.iter().map(|s| s.to_string()));
            if cmd == "infer" {
                // The interactive chat reads stdin: the refused flags are tried on a dataset.
                args.extend(
                    ["--val_dataset", "alpaca-en-demo#1", "--result_path"].map(String::from),
                );
                args.push(dir.path().join("r.jsonl").display().to_string());
            }
            args.extend(flag_args(flag, &refused_value(flag)));
            let o = run_swift(cmd, &args);
            let err = stderr(&o);
            assert!(
                !o.status.success(),
                "swift {cmd} --{flag} {context:?} was accepted; it should be refused:\n{err}"
            );
            let named = err.contains(&format!("--{flag}"))
                || err.contains(&format!("--{}", flag.replace('_', "-")))
                || (flag == "infer_backend" && err.contains("no-such-backend"));
            assert!(
                named,
                "swift {cmd} --{flag}: the refusal does not name the flag:\n{err}"
            );
        }
    }
}

/// The value `args.json` should hold for `--flag VALUES`.
fn expected_json(values: &[&str], recorded: &Value) -> Value {
    if recorded.is_array() {
        return Value::Array(
            values
                .iter()
                .map(|v| Value::String(v.to_string()))
                .collect(),
        );
    }
    let v = values[0];
    match recorded {
        Value::Bool(_) => Value::Bool(v == "true"),
        Value::Number(_) => serde_json::from_str(v).unwrap(),
        _ => Value::String(v.to_string()),
    }
}

/// One run per training command with every `Recorded` flag set at once; each value is in its
/// `args.json`.
#[test]
fn training_runs_record_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    for (cmd, table, _, _) in all_tables() {
        if !matches!(cmd, "sft" | "pt" | "rlhf") {
            continue;
        }
        let out = dir.path().join(cmd);
        let mut args = base_args_for(cmd, &out, true);
        let mut recorded = Vec::new();
        for (flag, check) in &table {
            if let Recorded(values) = check {
                // rlhf: no LoRA dropout in the combined run (disable_dropout is on).
                args.extend(flag_args(flag, values));
                recorded.push((*flag, *values));
            }
        }
        let o = run_swift(cmd, &args);
        assert!(
            o.status.success(),
            "swift {cmd} with every recorded flag failed:\n{}",
            stderr(&o)
        );
        let a = args_json(&run_folder(&out));
        for (flag, values) in recorded {
            let got = a.get(flag).unwrap_or(&Value::Null);
            let want = expected_json(values, got);
            let same = match (got, &want) {
                (Value::Number(g), Value::Number(w)) => {
                    (g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-12
                }
                // args.json records what a name resolved to (e.g. the family for model_type).
                (Value::String(g), Value::String(w)) => g.eq_ignore_ascii_case(w),
                _ => *got == want,
            };
            assert!(
                same,
                "swift {cmd} --{flag}: args.json has {got}, the flag gave {want}"
            );
        }
    }
}

/// Writes the generated datasets the `{qa}` / `{bad}` placeholders stand for.
fn placeholders(dir: &Path, args: &[&str]) -> Vec<String> {
    let qa = dir.join("qa.jsonl");
    std::fs::write(&qa, "{\"q\": \"Say hi.\", \"a\": \"Hi!\"}\n").unwrap();
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"query\": \"Say hi.\", \"response\": \"Hi!\"}\n{not json\n",
    )
    .unwrap();
    args.iter()
        .map(|a| match *a {
            "{qa}" => qa.display().to_string(),
            "{bad}" => bad.display().to_string(),
            other => other.to_string(),
        })
        .collect()
}

/// What a run of `swift infer --val_dataset` or `swift encode --json` produced (its result
/// rows or stdout, plus infer's batch count), or `Err` with stderr when it failed.
fn output_of(cmd: &str, dir: &Path, name: &str, extra: &[String]) -> Result<String, String> {
    let mut args: Vec<String> = Vec::new();
    let result = dir.join(format!("{name}.jsonl"));
    if cmd == "infer" {
        args = base_args("infer", dir);
        args.extend(["--val_dataset", "alpaca-en-demo#2", "--result_path"].map(String::from));
        args.push(result.display().to_string());
        if !extra.iter().any(|a| a == "--max_new_tokens") {
            args.extend(["--max_new_tokens", "12"].map(String::from));
        }
    } else {
        args.extend(
            [
                "--model",
                &tiny().display().to_string(),
                "--template",
                "chatml",
                "--json",
            ]
            .map(String::from),
        );
    }
    args.extend(extra.iter().cloned());
    let o = run_swift(cmd, &args);
    if !o.status.success() {
        return Err(stderr(&o));
    }
    if cmd == "encode" {
        return Ok(stdout(&o));
    }
    let log = stderr(&o);
    let at = log
        .find("time_to_first_token_per_batch_s")
        .expect("the summary lists the batches");
    let rest = &log[at..];
    let batches =
        serde_json::from_str::<Vec<f64>>(&rest[rest.find('[').unwrap()..=rest.find(']').unwrap()])
            .unwrap()
            .len();
    Ok(format!(
        "{}\nbatches {batches}",
        std::fs::read_to_string(&result).unwrap()
    ))
}

#[test]
fn infer_and_encode_flags_change_the_output() {
    let dir = tempfile::tempdir().unwrap();
    for (cmd, table) in [("infer", INFER), ("encode", ENCODE)] {
        for (i, (flag, check)) in table.iter().enumerate() {
            let Output(context, values) = check else {
                continue;
            };
            let context = placeholders(dir.path(), context);
            let mut flagged = context.clone();
            flagged.extend(flag_args(flag, values));
            let before = output_of(cmd, dir.path(), &format!("{cmd}{i}a"), &context);
            let after = output_of(cmd, dir.path(), &format!("{cmd}{i}b"), &flagged);
            assert!(
                after.is_ok(),
                "swift {cmd} {flagged:?} failed: {}",
                after.unwrap_err()
            );
            assert_ne!(
                before, after,
                "swift {cmd} --{flag} {values:?} did not change the run"
            );
        }
    }
}

/// Whether clap reads the flag as a number.
fn is_numeric(a: &clap::Arg) -> bool {
    use std::any::TypeId;
    let t = a.get_value_parser().type_id();
    [
        TypeId::of::<f64>(),
        TypeId::of::<f32>(),
        TypeId::of::<usize>(),
        TypeId::of::<u64>(),
        TypeId::of::<u32>(),
        TypeId::of::<u16>(),
        TypeId::of::<u8>(),
        TypeId::of::<i64>(),
        TypeId::of::<i32>(),
    ]
    .iter()
    .any(|id| t == *id)
}

/// Every numeric flag of every command refuses a value outside its range, naming the flag and
/// the range, on the command line and through serde (the `--config` file and `SWIFT_*` path);
/// every float flag refuses `nan` and `inf`. In-process: no binary runs.
#[test]
fn numeric_flags_refuse_values_outside_their_range() {
    for (cmd, _, _, parsers) in all_tables() {
        let command = (parsers.command)();
        for arg in command.get_arguments().filter(|a| is_numeric(a)) {
            let flag = arg.get_id().as_str();
            let Some((_, bad, range)) = NUMERIC.iter().find(|(f, _, _)| *f == flag) else {
                panic!(
                    "swift {cmd} --{flag} is numeric but tests/flags.rs NUMERIC has no range for \
                     it: declare one in spec/src/range.rs and add it"
                )
            };
            let want = format!("must be {range}");
            let long = format!("--{}", arg.get_long().unwrap());
            let err = (parsers.command)()
                .try_get_matches_from([format!("{long}={bad}")])
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&long) && err.contains(&want),
                "swift {cmd} --{flag} {bad}: the refusal should name the flag and `{want}`: {err}"
            );
            let value: Value = serde_json::from_str(bad).unwrap();
            let err = (parsers.with_value)(flag, value)
                .expect_err(&format!("swift {cmd}: serde took {flag} = {bad}"));
            assert!(
                err.contains(&want),
                "swift {cmd}: {flag} = {bad} in a config file: the refusal should say `{want}`: {err}"
            );
            if a_float(arg) {
                for v in ["nan", "inf", "-inf"] {
                    let err = (parsers.command)()
                        .try_get_matches_from([format!("{long}={v}")])
                        .map(|_| ())
                        .unwrap_err()
                        .to_string();
                    assert!(
                        err.contains(&want),
                        "swift {cmd} --{flag} {v}: should be refused with `{want}`: {err}"
                    );
                }
            }
        }
    }
    for (flag, _, _) in NUMERIC {
        assert!(
            all_tables()
                .iter()
                .any(|(_, _, flags, _)| flags.iter().any(|f| f == flag)),
            "tests/flags.rs NUMERIC lists --{flag}, which no command has"
        );
    }
}

fn a_float(a: &clap::Arg) -> bool {
    let t = a.get_value_parser().type_id();
    t == std::any::TypeId::of::<f64>() || t == std::any::TypeId::of::<f32>()
}

/// A refusal case: arguments, environment, the texts the refusal must hold.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);

/// The host refuses an out-of-range value from each of its three sources (flag, `--config`
/// file, `SWIFT_*` variable) before it opens the tensor engine, naming the flag and the range.
#[test]
fn out_of_range_values_are_refused_from_flags_config_files_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("c.toml");
    std::fs::write(&toml, "learning_rate = nan\n").unwrap();
    let yaml = dir.path().join("c.yaml");
    std::fs::write(&yaml, "per_device_train_batch_size: 0\n").unwrap();
    let toml = toml.display().to_string();
    let yaml = yaml.display().to_string();
    let cases: [Case; 6] = [
        (
            &["sft", "--num_train_epochs=-1"],
            &[],
            &["--num-train-epochs", "must be a finite number > 0, got -1"],
        ),
        (
            &["sft", "--learning_rate", "-1"],
            &[],
            &["--learning-rate", "must be a finite number >= 0, got -1"],
        ),
        (
            &["sft", "--config", &toml],
            &[],
            &[
                "learning_rate",
                "must be a finite number >= 0, got NaN",
                "c.toml",
            ],
        ),
        (
            &["rlhf", "--config", &yaml],
            &[],
            &[
                "per_device_train_batch_size",
                "must be an integer >= 1, got 0",
            ],
        ),
        (
            &["sft"],
            &[("SWIFT_LORA_DROPOUT", "1.5")],
            &["--lora_dropout (from $SWIFT_LORA_DROPOUT): must be a finite number in [0, 1), got 1.5"],
        ),
        (
            &["infer", "--top_p", "1.5"],
            &[],
            &["--top-p", "must be a finite number in (0, 1], got 1.5"],
        ),
    ];
    for (args, env, want) in cases {
        let o = swift_env(args, env);
        let err = stderr(&o);
        assert!(!o.status.success(), "swift {args:?} {env:?} was accepted");
        for w in want {
            assert!(
                err.contains(w),
                "swift {args:?} {env:?}: no `{w}` in:\n{err}"
            );
        }
    }
}
