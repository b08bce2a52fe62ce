//! Data parallel (issue 22): two ranks on loopback (Gloo, one libtorch thread each) train the
//! tiny llama with the losses and checkpoint tensors of one process given the same global batch,
//! whether `swift` starts its ranks itself (`NPROC_PER_NODE`), torchrun starts them
//! (`torchrun --no-python`), or two "nodes" do (`NNODES=2 NODE_RANK=0|1`); a rank that dies or
//! hangs ends the other with an error naming it. DPO with 2 ranks equals 1 process too.
//! `--deepspeed zero1|zero2` give the same losses, tensors and optimizer state as one process
//! with each rank holding about half of the optimizer state, and a ZeRO checkpoint resumes in
//! one process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A free loopback port for one launch's rendezvous.
fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port().to_string()
}

/// Eight chat rows of unequal lengths.
fn eight_rows(dir: &Path) -> PathBuf {
    write_chat(&dir.join("chat.jsonl"), &[CHAT_QA, CHAT_QA].concat()[..8])
}

/// `swift sft` on the tiny llama into `dir/name` with `flags`, as `launcher` starts it.
fn sft_cmd(
    launcher: &[&str],
    env: &[(&str, &str)],
    dir: &Path,
    name: &str,
    flags: &[&str],
) -> Command {
    let data = eight_rows(dir);
    let model = tiny();
    let out = dir.join(name);
    let swift = swift_bin();
    let mut cmd = match launcher.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(&swift);
            c
        }
        None => Command::new(&swift),
    };
    cmd.arg("sft")
        .args(["--model", model.to_str().unwrap()])
        .args(["--dataset", data.to_str().unwrap()])
        .args(["--output_dir", out.to_str().unwrap()])
        .args(["--logging_steps", "1"])
        .args(if flags.contains(&"--save_steps") {
            &[][..]
        } else {
            &["--save_steps", "100"][..]
        })
        .args(flags)
        .env_remove("RUST_LOG")
        .env_remove("SWIFT_PLUGIN_PATH")
        .env("OMP_NUM_THREADS", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn cmd_output(mut cmd: Command) -> Output {
    cmd.output().expect("swift runs")
}

fn run_ok(mut cmd: Command) -> Output {
    let out = cmd.output().expect("swift runs");
    ok(out.clone());
    out
}

/// (step, loss) of a run folder.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    records(run)
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get("loss")?.as_f64()?)))
        .collect()
}

/// The optimizer-state elements per rank and their total, from rank 0's ZeRO log line.
fn zero_state_per_rank(stderr: &str) -> (Vec<u64>, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("optimizer-state elements per rank"))
        .unwrap_or_else(|| panic!("no ZeRO line in: {stderr}"));
    let list = line
        .split("per rank [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .expect("a list");
    let per: Vec<u64> = list
        .split(", ")
        .map(|x| x.parse().expect("a count"))
        .collect();
    let total = line
        .split("] of ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|x| x.parse().ok())
        .expect("a total");
    (per, total)
}

/// Elements of the optimizer's own state (`optim.*`) in a checkpoint: what one process holds.
fn optimizer_state_elements(ckpt: &Path) -> u64 {
    let bytes = std::fs::read(ckpt.join("optimizer.safetensors")).expect("optimizer state");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    st.tensors()
        .iter()
        .filter(|(n, _)| n.starts_with("optim."))
        .map(|(_, v)| v.shape().iter().product::<usize>() as u64)
        .sum()
}

/// Two ranks with `--deepspeed stage` against the one-process run `one` (same global batch):
/// the same losses, tensors and optimizer state, and each rank holding about half of the
/// state (one tensor's worth of imbalance at most: ZeRO's shards are whole tensors).
fn assert_zero_run(t: &Path, one: &Path, name: &str, flags: &[&str], file: &str, step: u64) {
    let port = free_port();
    let out = run_ok(sft_cmd(
        &[],
        &[("NPROC_PER_NODE", "2"), ("MASTER_PORT", &port)],
        t,
        name,
        flags,
    ));
    let run = run_folder(&t.join(name));
    assert_same_run(one, &run, file, step, 1e-5);
    assert_same_run(one, &run, "optimizer.safetensors", step, 1e-5);
    let whole = optimizer_state_elements(&one.join(format!("checkpoint-{step}")));
    let (per, total) = zero_state_per_rank(&stderr(&out));
    assert_eq!(total, whole, "{name}: {per:?}");
    assert_eq!(per.len(), 2);
    for p in &per {
        assert!(
            (*p as f64 - whole as f64 / 2.0).abs() <= 0.05 * whole as f64,
            "{name}: {per:?} of {whole}"
        );
    }
}

/// Asserts equal losses per step (within 1e-5) and equal tensors in `file` of the last
/// checkpoint (within `tol`).
fn assert_same_run(one: &Path, two: &Path, file: &str, step: u64, tol: f32) {
    let evals = |run: &Path| -> Vec<f64> {
        records(run)
            .iter()
            .filter_map(|r| r.get("eval_loss")?.as_f64())
            .collect()
    };
    // The evaluation at the end (a run saving more often also evaluates earlier).
    let (ea, eb) = (evals(one), evals(two));
    assert_eq!(ea.is_empty(), eb.is_empty(), "{ea:?} vs {eb:?}");
    if let (Some(x), Some(y)) = (ea.last(), eb.last()) {
        assert!((x - y).abs() < 1e-5, "eval_loss {ea:?} vs {eb:?}");
    }
    let (a, b) = (losses(one), losses(two));
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!((la - lb).abs() < 1e-5, "step {sa}: {la} vs {lb}");
    }
    let ck = format!("checkpoint-{step}/{file}");
    let (wa, wb) = (
        read_safetensors(&one.join(&ck)),
        read_safetensors(&two.join(&ck)),
    );
    assert_eq!(wa.len(), wb.len());
    assert!(!wa.is_empty());
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let d = va
            .iter()
            .zip(vb)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(d < tol, "{na} differs by {d}");
    }
}

#[test]
fn two_ranks_train_lora_and_full_as_one_process_with_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // Five validation rows: one process evaluates them in batches of 4, two ranks in batches of
    // 2 shared between them (2 + 1 rows on rank 0, 2 on rank 1); the sums are added.
    let val = write_chat(&t.join("val.jsonl"), &CHAT_QA);
    // LoRA with dropout on (0.1): one process with 4 rows per batch against NPROC_PER_NODE=2
    // ranks of 2 rows each; each row's masks depend on the step's seed and its index only.
    // One row per pass on both sides: a pass's masks are drawn over its rows laid end to end,
    // so only passes of one row are the same passes on one process and on two ranks.
    let lora = [
        "--rows_per_pass",
        "1",
        "--tuner_type",
        "lora",
        "--lora_dropout",
        "0.1",
        "--learning_rate",
        "1e-2",
        "--max_steps",
        "3",
        "--val_dataset",
        val.to_str().unwrap(),
    ];
    run_ok(sft_cmd(
        &[],
        &[],
        t,
        "lora1",
        &[&lora[..], &["--per_device_train_batch_size", "4"]].concat(),
    ));
    let port = free_port();
    let two = run_ok(sft_cmd(
        &[],
        &[("NPROC_PER_NODE", "2"), ("MASTER_PORT", &port)],
        t,
        "lora2",
        &[&lora[..], &["--per_device_train_batch_size", "2"]].concat(),
    ));
    let err = stderr(&two);
    assert!(
        err.contains("rank 1: done (rank 0 writes the run folder)"),
        "{err}"
    );
    assert!(
        err.contains("data parallel: rank 0 of 2, 2 units per device, global batch 4"),
        "{err}"
    );
    // Rank 1 logs warnings only: the steps are told once.
    assert_eq!(err.matches("step 1/3:").count(), 1, "{err}");
    let (one_run, two_run) = (run_folder(&t.join("lora1")), run_folder(&t.join("lora2")));
    assert_same_run(&one_run, &two_run, "adapter_model.safetensors", 3, 1e-5);
    // Rank 0 alone wrote: one run folder, one log.
    assert_eq!(std::fs::read_dir(t.join("lora2")).unwrap().count(), 1);
    // ZeRO-1 and ZeRO-2: the same run, each rank holding half of the optimizer state; ZeRO-2's
    // step-2 checkpoint (its state gathered from both ranks) resumes in one process.
    let lora_zero = [&lora[..], &["--per_device_train_batch_size", "2"]].concat();
    let zero1 = [&lora_zero[..], &["--deepspeed", "zero1"]].concat();
    assert_zero_run(
        t,
        &one_run,
        "lora_z1",
        &zero1,
        "adapter_model.safetensors",
        3,
    );
    let zero2 = [
        &lora_zero[..],
        &["--deepspeed", "zero2", "--save_steps", "2"],
    ]
    .concat();
    assert_zero_run(
        t,
        &one_run,
        "lora_z2",
        &zero2,
        "adapter_model.safetensors",
        3,
    );
    let ckpt = run_folder(&t.join("lora_z2")).join("checkpoint-2");
    run_ok(sft_cmd(
        &[],
        &[],
        t,
        "lora_resumed",
        &[
            &lora[..],
            &["--per_device_train_batch_size", "4"],
            &["--resume_from_checkpoint", ckpt.to_str().unwrap()],
        ]
        .concat(),
    ));
    let resumed = run_folder(&t.join("lora_resumed"));
    assert_eq!(losses(&resumed).len(), 1);
    let step3 = losses(&one_run)[2].1;
    assert!((losses(&resumed)[0].1 - step3).abs() < 1e-5);
    let ck = "checkpoint-3/adapter_model.safetensors";
    for ((na, a), (nb, b)) in read_safetensors(&one_run.join(ck))
        .iter()
        .zip(&read_safetensors(&resumed.join(ck)))
    {
        assert_eq!(na, nb);
        let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(d < 1e-5, "{na} differs by {d} after resuming");
    }
    // Full fine-tuning with accumulation, launched by torchrun: 2 steps of 2 × 2 × 1 rows.
    let python = reference_python(&["torch.distributed.run"]);
    let full = [
        "--tuner_type",
        "full",
        "--learning_rate",
        "1e-4",
        "--max_steps",
        "2",
        "--gradient_accumulation_steps",
        "2",
    ];
    run_ok(sft_cmd(
        &[],
        &[],
        t,
        "full1",
        &[&full[..], &["--per_device_train_batch_size", "2"]].concat(),
    ));
    let port = free_port();
    let torchrun = [
        python.to_str().unwrap(),
        "-m",
        "torch.distributed.run",
        "--no-python",
        "--nproc_per_node",
        "2",
        "--master_port",
        &port,
    ];
    let out = run_ok(sft_cmd(
        &torchrun,
        &[],
        t,
        "full2",
        &[&full[..], &["--per_device_train_batch_size", "1"]].concat(),
    ));
    // Under torchrun too, rank 1 logs warnings only: the steps are told once.
    assert_eq!(
        stderr(&out).matches("step 1/2:").count(),
        1,
        "{}",
        stderr(&out)
    );
    let full_one = run_folder(&t.join("full1"));
    assert_same_run(
        &full_one,
        &run_folder(&t.join("full2")),
        "model.safetensors",
        2,
        1e-5,
    );
    for stage in ["zero1", "zero2"] {
        let flags = [
            &full[..],
            &["--per_device_train_batch_size", "1", "--deepspeed", stage],
        ]
        .concat();
        let name = format!("full_{stage}");
        assert_zero_run(t, &full_one, &name, &flags, "model.safetensors", 2);
    }
}

#[test]
fn deepspeed_refuses_what_is_not_built_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    for (value, needle) in [
        (
            "zero3",
            "zero3 (parameters sharded over the ranks) is not built",
        ),
        ("zero2_offload", "nothing to offload to"),
        ("ds_config.json", "configuration files are not read"),
        ("stage2", "not a configuration swift-rs knows"),
    ] {
        let cmd = sft_cmd(&[], &[], tmp.path(), "refused", &["--deepspeed", value]);
        assert_fails(
            cmd_output(cmd),
            &[
                &format!(
                    "--deepspeed {}",
                    if value == "stage2" {
                        "\"stage2\""
                    } else {
                        value
                    }
                ),
                needle,
            ],
        );
    }
}

#[test]
fn a_rank_that_fails_with_an_error_is_quoted_by_the_other() {
    // Started as torchrun would: rank 1 is given a dataset that does not exist, so it joins the
    // group and then fails reading it; rank 0's first collective fails quoting rank 1's error.
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let port = free_port();
    let missing = t.join("missing.jsonl");
    let ranks: Vec<Child> = (0..2)
        .map(|r| {
            let rank = r.to_string();
            let env = [
                ("RANK", rank.as_str()),
                ("WORLD_SIZE", "2"),
                ("MASTER_PORT", port.as_str()),
            ];
            let mut cmd = sft_cmd(
                &[],
                &env,
                t,
                "failed",
                &["--max_steps", "2", "--ddp_timeout", "60"],
            );
            if r == 1 {
                // A later --dataset is not allowed: rebuild rank 1's command with the bad file.
                cmd = Command::new(swift_bin());
                cmd.arg("sft")
                    .args(["--model", tiny().to_str().unwrap()])
                    .args(["--dataset", missing.to_str().unwrap()])
                    .args(["--output_dir", t.join("failed").to_str().unwrap()])
                    .args(["--max_steps", "2", "--ddp_timeout", "60"])
                    .env_remove("RUST_LOG")
                    .env_remove("SWIFT_PLUGIN_PATH")
                    .env("OMP_NUM_THREADS", "1");
                for (k, v) in env {
                    cmd.env(k, v);
                }
            }
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a rank starts")
        })
        .collect();
    let [r0, r1]: [Child; 2] = ranks.try_into().expect("two ranks");
    let t0 = Instant::now();
    let out0 = r0.wait_with_output().expect("rank 0 ends");
    let out1 = r1.wait_with_output().expect("rank 1 ends");
    assert!(!out1.status.success());
    assert_fails(out0, &["rank 1 stopped with an error:", "missing.jsonl"]);
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
}

#[test]
fn two_nodes_on_loopback_train_and_checkpoint() {
    // NNODES=2, one rank per node: two launchers meeting at one MASTER_ADDR:MASTER_PORT.
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let flags = [
        "--tuner_type",
        "lora",
        "--lora_dropout",
        "0",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
    ];
    let port = free_port();
    let nodes: Vec<Child> = ["0", "1"]
        .iter()
        .map(|node| {
            let env = [
                ("NNODES", "2"),
                ("NODE_RANK", *node),
                ("NPROC_PER_NODE", "1"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", port.as_str()),
            ];
            sft_cmd(&[], &env, t, &format!("node{node}"), &flags)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a node starts")
        })
        .collect();
    for n in nodes {
        ok(n.wait_with_output().expect("a node ends"));
    }
    // Node 0 holds rank 0, which alone writes; node 1 wrote nothing.
    let run = run_folder(&t.join("node0"));
    assert!(run.join("checkpoint-2/adapter_model.safetensors").is_file());
    assert!(!t.join("node1").exists());
    run_ok(sft_cmd(
        &[],
        &[],
        t,
        "one",
        &[&flags[..6], &["--per_device_train_batch_size", "4"]].concat(),
    ));
    assert_same_run(
        &run_folder(&t.join("one")),
        &run,
        "adapter_model.safetensors",
        2,
        1e-5,
    );
    // The same two nodes launched by torchrun (`--nnodes 2 --node_rank 0|1`, static rendezvous at
    // MASTER_ADDR:MASTER_PORT): the ranks come from torchrun's environment and agent store.
    let python = reference_python(&["torch.distributed.run"]);
    let port = free_port();
    let nodes: Vec<Child> = ["0", "1"]
        .iter()
        .map(|node| {
            let torchrun = [
                python.to_str().unwrap(),
                "-m",
                "torch.distributed.run",
                "--no-python",
                "--nnodes",
                "2",
                "--node_rank",
                node,
                "--nproc_per_node",
                "1",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port.as_str(),
            ];
            sft_cmd(&torchrun, &[], t, &format!("torchrun{node}"), &flags)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a torchrun node starts")
        })
        .collect();
    for n in nodes {
        ok(n.wait_with_output().expect("a torchrun node ends"));
    }
    let run = run_folder(&t.join("torchrun0"));
    assert!(run.join("checkpoint-2/adapter_model.safetensors").is_file());
    assert!(!t.join("torchrun1").exists());
    assert_same_run(
        &run_folder(&t.join("one")),
        &run,
        "adapter_model.safetensors",
        2,
        1e-5,
    );
}

#[test]
fn two_ranks_train_dpo_as_one_process_with_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = tiny();
    let run = |name: &str, batch: &str, env: &[(&str, &str)]| {
        let out = t.join(name);
        let args = [
            "rlhf",
            "--rlhf_type",
            "dpo",
            "--model",
            model.to_str().unwrap(),
            "--dataset",
            demo("dpo-en-demo#8"),
            "--max_length",
            "96",
            "--truncation_strategy",
            "left",
            "--lora_dropout",
            "0",
            "--logging_steps",
            "1",
            "--max_steps",
            "2",
            "--learning_rate",
            "1e-2",
            "--per_device_train_batch_size",
            batch,
            "--output_dir",
            out.to_str().unwrap(),
        ];
        ok(swift_env(&args, &[&[ONE_THREAD][..], env].concat()));
        run_folder(&out)
    };
    let one = run("one", "4", &[]);
    let port = free_port();
    let two = run(
        "two",
        "2",
        &[("NPROC_PER_NODE", "2"), ("MASTER_PORT", &port)],
    );
    assert_same_run(&one, &two, "adapter_model.safetensors", 2, 1e-5);
    // The preference metrics are the global batch's too.
    let metric = |run: &Path, m: &str| -> Vec<f64> {
        records(run)
            .iter()
            .filter_map(|r| r.get(m)?.as_f64())
            .collect()
    };
    for m in ["rewards/accuracies", "rewards/margins", "logps/chosen"] {
        let (a, b) = (metric(&one, m), metric(&two, m));
        assert_eq!(a.len(), 2, "{m}: {a:?}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4, "{m}: {a:?} vs {b:?}");
        }
    }
}

/// Waits until rank 0 has logged a step (the run is under way), or panics.
fn wait_for_a_step(out: &Path, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        let logged = std::fs::read_dir(out).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join("logging.jsonl"))
                .find(|p| std::fs::read_to_string(p).is_ok_and(|s| s.contains("\"step\"")))
        });
        if logged.is_some() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended before its first step: {status}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no step logged in 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(st.success());
}

/// The pids of `pid`'s children.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn a_killed_rank_ends_the_other_within_ddp_timeout_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let long = [
        "--tuner_type",
        "lora",
        "--max_steps",
        "100000",
        "--per_device_train_batch_size",
        "1",
    ];
    // 1. NPROC_PER_NODE: rank 1 is killed; rank 0 names it, and so does the launcher.
    let port = free_port();
    let mut launcher = sft_cmd(
        &[],
        &[("NPROC_PER_NODE", "2"), ("MASTER_PORT", &port)],
        t,
        "killed",
        &[&long[..], &["--ddp_timeout", "60"]].concat(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("swift starts");
    wait_for_a_step(&t.join("killed"), &mut launcher);
    let ranks = children_of(launcher.id());
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    let t0 = Instant::now();
    signal(ranks[1], "-KILL");
    let out = launcher.wait_with_output().expect("swift ends");
    let took = t0.elapsed();
    let err = assert_fails(out, &["rank 1 stopped", "was killed by signal 9"]);
    assert!(err.contains(&format!("rank 1 (pid {})", ranks[1])), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    // 2. Started as torchrun would (RANK set), rank 1 stops answering (SIGSTOP): rank 0's
    // collective times out after --ddp_timeout 8 s and names it.
    let port = free_port();
    let ranks: Vec<Child> = (0..2)
        .map(|r| {
            let rank = r.to_string();
            let env = [
                ("RANK", rank.as_str()),
                ("WORLD_SIZE", "2"),
                ("MASTER_PORT", port.as_str()),
            ];
            sft_cmd(
                &[],
                &env,
                t,
                "stopped",
                &[&long[..], &["--ddp_timeout", "8"]].concat(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("a rank starts")
        })
        .collect();
    let [mut r0, mut r1]: [Child; 2] = ranks.try_into().expect("two ranks");
    wait_for_a_step(&t.join("stopped"), &mut r0);
    let t0 = Instant::now();
    signal(r1.id(), "-STOP");
    let out = r0.wait_with_output().expect("rank 0 ends");
    let took = t0.elapsed();
    let _ = r1.kill();
    let _ = r1.wait();
    assert_fails(out, &["rank 1 stopped", "--ddp_timeout 8s"]);
    assert!(
        took >= Duration::from_secs(7) && took < Duration::from_secs(25),
        "{took:?}"
    );
}
