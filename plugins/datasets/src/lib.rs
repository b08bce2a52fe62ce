//! The built-in dataset preprocessors and named datasets, registered through the plugin contract
//! (the same `register` path a third-party plugin uses).
//!
//! `auto` (implemented by `swift-data`, which sees every registered preprocessor) picks, for each
//! row, the highest-priority preprocessor whose `detect_columns` the row has. An entry `a|b|c`
//! of `detect_columns` is satisfied by any one of those columns (ms-swift's column aliases).
//!
//! | name | detect columns | priority |
//! |---|---|---|
//! | `preference` | chosen, rejected (or `_messages`) | 50 |
//! | `kto` | messages/conversations + label | 40 |
//! | `messages` | messages | 30 |
//! | `sharegpt` | conversations/conversation | 30 |
//! | `alpaca` | instruction + input | 20 |
//! | `response` | a query alias | 10 |
//! | `text` | text/content | 0 |

mod common;
mod conversation;
mod preference;
mod query_response;

use swift_plugin_api::prelude::*;

pub use common::{MESSAGES_KEYS, QUERY_KEYS, RESPONSE_KEYS, SYSTEM_KEYS};
pub use conversation::{parse_conversation, tool_calls, Conversation, Conversations};
pub use preference::{Preference, CHOSEN_KEYS, REJECTED_KEYS};
pub use query_response::{Alpaca, PlainText, QueryResponse};

use common::any_of;

/// LLaMA-Factory demo datasets that `make setup` fetches into the asset cache:
/// (name, file under `llamafactory/data/`, description).
pub const DEMO_SETS: &[(&str, &str, &str)] = &[
    ("alpaca-en-demo", "alpaca_en_demo.json", "999 English alpaca instructions (LLaMA-Factory demo)"),
    ("alpaca-zh-demo", "alpaca_zh_demo.json", "1000 Chinese alpaca instructions (LLaMA-Factory demo)"),
    (
        "identity",
        "identity.json",
        "91 self-introduction rows; {{name}}/{{author}} filled from --model_name/--model_author",
    ),
    ("dpo-en-demo", "dpo_en_demo.json", "300 preference pairs, sharegpt ranking format"),
    ("dpo-zh-demo", "dpo_zh_demo.json", "300 Chinese preference pairs, sharegpt ranking format"),
    ("kto-en-demo", "kto_en_demo.json", "300 messages rows with a boolean KTO label"),
    ("glaive-toolcall-en-demo", "glaive_toolcall_en_demo.json", "300 tool-calling conversations (sharegpt)"),
    ("glaive-toolcall-zh-demo", "glaive_toolcall_zh_demo.json", "300 Chinese tool-calling conversations (sharegpt)"),
    (
        "v1-sft-demo",
        "v1_sft_demo.jsonl",
        "500 messages rows with typed content parts; {{name}}/{{author}} filled from --model_name/--model_author",
    ),
    ("v1-dpo-demo", "v1_dpo_demo.jsonl", "10 preference pairs as chosen_messages/rejected_messages"),
    ("reason-tool-use-demo", "reason_tool_use_demo_50.jsonl", "50 tool-use conversations with reasoning parts"),
    ("mllm-demo", "mllm_demo.json", "6 image conversations (messages + images)"),
    ("c4-demo", "c4_demo.jsonl", "300 C4 web documents (pre-training text)"),
    ("wiki-demo", "wiki_demo.txt", "30 Wikipedia articles, one per line (pre-training text)"),
];

fn record(
    name: &str,
    aliases: &[&str],
    description: &str,
    detect: Vec<String>,
    priority: i32,
) -> PreprocessorRecord {
    PreprocessorRecord {
        name: name.into(),
        aliases: aliases.iter().map(|a| (*a).to_string()).collect(),
        description: description.into(),
        detect_columns: detect,
        priority,
    }
}

fn register(r: &mut Registrar) -> Result<(), PluginError> {
    r.preprocessor(
        record(
            "preference",
            &["pair", "dpo", "ranking"],
            "chosen/rejected pairs (text, sharegpt ranking, message lists, chosen_messages/rejected_messages)",
            vec![any_of(CHOSEN_KEYS), any_of(REJECTED_KEYS)],
            50,
        ),
        Preference,
    )?;
    r.preprocessor(
        record(
            "kto",
            &[],
            "messages/conversations with a boolean `label` (desirable or not)",
            vec![any_of(MESSAGES_KEYS), "label".into()],
            40,
        ),
        Conversations {
            require_label: true,
        },
    )?;
    r.preprocessor(
        record(
            "messages",
            &["openai"],
            "OpenAI-style `messages` (roles, tool_calls, tool, typed content parts)",
            vec!["messages".into()],
            30,
        ),
        Conversations {
            require_label: false,
        },
    )?;
    r.preprocessor(
        record(
            "sharegpt",
            &["conversations"],
            "`conversations` with from/value (human, gpt, system, function_call, observation) and `tools`",
            vec!["conversations|conversation".into()],
            30,
        ),
        Conversations { require_label: false },
    )?;
    r.preprocessor(
        record(
            "alpaca",
            &[],
            "instruction/input/output rows (query = instruction + \"\\n\" + input)",
            vec!["instruction".into(), "input".into()],
            20,
        ),
        Alpaca,
    )?;
    r.preprocessor(
        record(
            "response",
            &["query-response", "query_response"],
            "query/response rows with ms-swift's aliases (prompt, question, instruction, input → query; \
             output, answer, completion, ... → response), history and system",
            vec![any_of(QUERY_KEYS)],
            10,
        ),
        QueryResponse,
    )?;
    r.preprocessor(
        record(
            "text",
            &["pretrain", "pt"],
            "plain text for pre-training: `text` becomes one assistant message",
            vec!["text|content".into()],
            0,
        ),
        PlainText,
    )?;
    for (name, file, description) in DEMO_SETS {
        r.dataset(DatasetRecord {
            name: (*name).into(),
            aliases: Some(name.replace('-', "_"))
                .filter(|a| a != name)
                .into_iter()
                .collect(),
            description: (*description).into(),
            path: format!("asset:llamafactory/data/{file}"),
            preprocessor: "auto".into(),
            columns: Default::default(),
        })?;
    }
    Ok(())
}

swift_plugin_api::builtin_plugin!(register);

#[cfg(test)]
mod tests;
