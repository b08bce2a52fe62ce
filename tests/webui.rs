//! `swift web-ui` end to end: the real binary serving on a loopback port.
//!
//! * safety: a public address without `--api_key` refuses to start; with a key, requests without
//!   it get 401 (and `/?api_key=KEY` stores it in a cookie); a foreign `Host` or `Origin` gets
//!   403; a run with an unknown flag, a value out of range, or a path outside the allowed roots
//!   is refused before anything starts;
//! * `--plugin-dir`: a plugin's tuner and optimizer show with their options, and the runs get
//!   the flag;
//! * runs survive a server restart: a run launched before it is listed after it, still running,
//!   and can be stopped (its PID is in its folder);
//! * in headless Chromium (Debian's, driven by Playwright from the reference virtualenv,
//!   `tests/webui_browser.py`): the train form for a 4-step LoRA SFT of the tiny llama, the
//!   equivalent command, launch, the loss chart gaining points, the run finishing, the error
//!   paths (a dataset that does not exist, a path outside the roots, a run that fails), the chat
//!   on the new checkpoint with a streamed answer, an evaluation's table and a merge's result;
//!   a screenshot of each tab in `target/webui-screenshots/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

/// A running `swift web-ui`; killed when dropped.
struct WebUi {
    child: Child,
    /// `127.0.0.1:PORT` (where to connect), whatever address it bound.
    connect: String,
    /// The address it printed.
    listening: String,
}

impl WebUi {
    fn start(args: &[&str]) -> WebUi {
        let mut child = Command::new(swift_bin())
            .arg("web-ui")
            .args(args)
            .env_remove("SWIFT_PLUGIN_PATH")
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("swift web-ui starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reading the listening line");
        let Some(addr) = line
            .trim()
            .strip_prefix("listening on http://")
            .map(String::from)
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected first line from swift web-ui: {line:?}");
        };
        let port = addr.rsplit(':').next().unwrap().to_string();
        WebUi {
            child,
            connect: format!("127.0.0.1:{port}"),
            listening: addr,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.connect)
    }

    /// One request over a plain socket with the given headers (`Host` is this server's unless
    /// given): status, headers, body.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, String, String) {
        let mut s = std::net::TcpStream::connect(&self.connect).expect("connects");
        let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {}\r\n", self.connect));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        if method == "POST" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        write!(s, "{head}\r\n{body}").expect("sending the request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("reading the response");
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (status, head.to_string(), dechunk(head, body))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, b) = self.request("GET", path, &[], None);
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, _, b) = self.request("POST", path, &[], Some(&body));
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    /// Polls run `id` until `done` holds for its detail (at most `secs` seconds).
    fn wait_for(&self, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (s, d) = self.get(&format!("/api/jobs/{id}"));
            assert_eq!(s, 200, "{d}");
            if done(&d) {
                return d;
            }
            assert!(Instant::now() < deadline, "run {id} never got there: {d:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl WebUi {
    /// SIGKILL: the server dies at once, as in a crash.
    fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WebUi {
    /// SIGTERM (the server stops its chat model server), then SIGKILL after 10 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A chunked body's data (axum streams some answers).
fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_public_address_needs_an_api_key_and_foreign_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = s(&tmp.path().join("out"));
    let err = assert_fails(
        swift(&[
            "web-ui",
            "--server_name",
            "0.0.0.0",
            "--server_port",
            "0",
            "--output_dir",
            &out,
        ]),
        &[
            "--server_name 0.0.0.0 is not a loopback address",
            "--api_key",
        ],
    );
    assert!(!err.contains("listening"), "{err}");

    // `--host`/`--port` are the aliases; `--lang zh` the Chinese labels.
    let ui = WebUi::start(&[
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--api_key",
        "k3y",
        "--output_dir",
        &out,
        "--lang",
        "zh",
    ]);
    assert!(ui.listening.starts_with("0.0.0.0:"), "{}", ui.listening);
    let (status, _, body) = ui.request("GET", "/", &[], None);
    assert_eq!(status, 401, "no key: {body}");
    assert!(body.contains("api_key"), "the refusal says how: {body}");
    let (status, _, _) = ui.request(
        "GET",
        "/api/jobs",
        &[("Authorization", "Bearer wrong")],
        None,
    );
    assert_eq!(status, 401);
    let auth = ("Authorization", "Bearer k3y");
    let (status, _, page) = ui.request("GET", "/", &[auth], None);
    assert_eq!(status, 200);
    assert!(page.contains("训练") && page.contains("对话"), "--lang zh");
    let port = ui.connect.rsplit(':').next().unwrap();
    let evil_host = format!("evil.example:{port}");
    let (status, _, body) = ui.request("GET", "/", &[auth, ("Host", &evil_host)], None);
    assert_eq!(status, 403, "a foreign Host (DNS rebinding): {body}");
    let (status, _, body) = ui.request(
        "POST",
        "/api/jobs",
        &[auth, ("Origin", "http://evil.example")],
        Some(&json!({"command": "sft", "flags": {}})),
    );
    assert_eq!(status, 403, "a foreign Origin: {body}");
    assert_eq!(
        std::fs::read_dir(tmp.path().join("out/webui"))
            .unwrap()
            .count(),
        0,
        "nothing launched"
    );
    // Opening /?api_key=KEY once keeps the key in a cookie.
    let (status, head, _) = ui.request("GET", "/?api_key=k3y", &[], None);
    assert_eq!(status, 303, "{head}");
    assert!(
        head.contains("swift_webui_key=k3y; HttpOnly; SameSite=Strict"),
        "{head}"
    );
    let (status, _, _) = ui.request(
        "GET",
        "/api/jobs",
        &[("Cookie", "swift_webui_key=k3y")],
        None,
    );
    assert_eq!(status, 200);
}

#[test]
fn runs_are_checked_before_launch_and_survive_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let data = ten_chat_rows(&data_dir);
    let models = workspace_root().join("tests/fixtures/models");
    let args = [
        "--server_port",
        "0",
        "--output_dir",
        &s(&out),
        "--allowed_roots",
        &s(&models),
        &s(&data_dir),
    ];
    let ui = WebUi::start(&args);
    assert!(
        ui.listening.starts_with("127.0.0.1:"),
        "loopback by default: {}",
        ui.listening
    );
    let flags = |extra: Value| {
        let mut f = json!({"model": s(&tiny()), "dataset": s(&data), "max_steps": "100000",
                           "logging_steps": "1", "save_steps": "100000", "lora_rank": "4"});
        for (k, v) in extra.as_object().unwrap() {
            f[k] = v.clone();
        }
        json!({"command": "sft", "flags": f})
    };
    let (status, p) = ui.post("/api/preview", flags(json!({})));
    assert_eq!(status, 200, "{p}");
    let line = p["line"].as_str().unwrap();
    assert!(line.starts_with("swift sft --dataset "), "{line}");
    assert!(line.contains("--lora_rank 4 --max_steps 100000"), "{line}");
    for (extra, want) in [
        (json!({"no_such_flag": "1"}), "no-such-flag"),
        (json!({"lora_rank": "0"}), "must be an integer >= 1"),
        (json!({"model": "/etc"}), "outside the allowed roots"),
        (
            json!({"dataset": s(&data_dir.join("missing.jsonl"))}),
            "does not exist",
        ),
        (json!({"config": s(&data)}), "--config is set by the web UI"),
    ] {
        let (status, e) = ui.post("/api/jobs", flags(extra.clone()));
        assert_eq!(status, 400, "{extra}: {e}");
        let msg = e["error"].as_str().unwrap();
        assert!(msg.contains(want), "{extra}: {msg}");
    }
    let (_, jobs) = ui.get("/api/jobs");
    assert_eq!(jobs, json!([]), "nothing was launched");

    let (status, r) = ui.post("/api/jobs", flags(json!({})));
    assert_eq!(status, 200, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let d = ui.wait_for(&id, 120, |d| {
        d["points"].as_array().is_some_and(|p| !p.is_empty())
    });
    assert_eq!(d["state"], "running", "{d:#}");
    let pid = d["pid"].as_u64().unwrap();
    let job = out.join("webui").join(&id).canonicalize().unwrap();
    assert_eq!(
        read_json(&job.join("job.json"))["pid"],
        pid,
        "the PID is in the run's folder"
    );
    assert!(d["line"]
        .as_str()
        .unwrap()
        .contains(&format!("--output_dir {}", job.display())));

    // The server dies; the run goes on; a new server lists it and stops it.
    ui.kill_hard();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the run outlives the server"
    );
    let ui = WebUi::start(&args);
    let (_, jobs) = ui.get("/api/jobs");
    assert_eq!(jobs[0]["id"], id.as_str(), "{jobs}");
    assert_eq!(jobs[0]["state"], "running", "{jobs}");
    let (status, r) = ui.post(&format!("/api/jobs/{id}/stop"), json!({}));
    assert_eq!(status, 200, "{r}");
    let d = ui.wait_for(&id, 30, |d| d["state"] != "running");
    assert_eq!(d["state"], "stopped", "{d:#}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        // An orphan is reaped by init; until then it may linger as a zombie.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") {
            break;
        }
        assert!(Instant::now() < deadline, "run {pid} still alive");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, e) = ui.post(&format!("/api/jobs/{id}/stop"), json!({}));
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().contains("not running"), "{e}");
}

#[test]
fn a_plugins_tuner_and_optimizer_show_with_their_options_and_runs_get_its_plugin_dir() {
    let plugins = plugin_dir_with(&["swift-example-plugin"]);
    let tmp = tempfile::tempdir().unwrap();
    let out = s(&tmp.path().join("out"));
    let dir = s(plugins.path());
    let ui = WebUi::start(&[
        "--plugin-dir",
        &dir,
        "--server_port",
        "0",
        "--output_dir",
        &out,
    ]);
    let (status, _, page) = ui.request("GET", "/", &[], None);
    assert_eq!(status, 200);
    for want in [
        r#"data-tuner="example-gain""#,
        r#"data-optimizer="example-sign-sgd""#,
        r#"data-flag="sign_sgd_momentum" placeholder="0.0" min="0" max="1""#,
        r#"<option value="example-gain""#,
    ] {
        assert!(page.contains(want), "no {want} in the page");
    }
    let (status, p) = ui.post(
        "/api/preview",
        json!({"command": "sft", "flags": {"tuner_type": "example-gain", "dataset": "alpaca-en-demo#4"}}),
    );
    assert_eq!(status, 200, "{p}");
    let line = p["line"].as_str().unwrap();
    assert!(
        line.starts_with(&format!("swift --plugin-dir {dir} sft ")),
        "{line}"
    );
}

/// Debian's chromium, which `make setup` installs.
fn chromium() -> PathBuf {
    let p = PathBuf::from("/usr/bin/chromium");
    assert!(
        p.is_file(),
        "{} is missing: the web UI's browser test drives Debian's chromium; install it with \
         `make setup` (or `apt-get install chromium`)",
        p.display()
    );
    p
}

#[test]
fn the_browser_trains_a_lora_charts_it_and_chats_with_the_checkpoint() {
    let python = reference_python(&["playwright"]);
    let chromium = chromium();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let data_dir = tmp.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let data = ten_chat_rows(&data_dir);
    let bad = data_dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"ok\"}]}\n{not json\n").unwrap();
    let mcq = data_dir.join("quiz.csv");
    std::fs::write(&mcq, "question,A,B,C,D,answer\nTwo plus two?,3,4,5,6,B\nThe sky is?,green,blue,red,black,B\nOne plus one?,2,3,4,5,A\n").unwrap();
    let models = workspace_root().join("tests/fixtures/models");
    let ui = WebUi::start(&[
        "--server_port",
        "0",
        "--output_dir",
        &s(&out),
        "--allowed_roots",
        &s(&models),
        &s(&data_dir),
    ]);
    let shots = workspace_root().join("target/webui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = workspace_root().join("tests/webui_browser.py");
    let o = Command::new(&python)
        .arg(&script)
        .args([
            "--url",
            &ui.url(),
            "--chromium",
            &s(&chromium),
            "--model",
            &s(&tiny()),
        ])
        .args([
            "--dataset",
            &s(&data),
            "--bad-dataset",
            &s(&bad),
            "--quiz",
            &s(&mcq),
        ])
        .args([
            "--missing",
            &s(&data_dir.join("missing.jsonl")),
            "--outside",
            "/etc",
        ])
        .args(["--shots", &s(&shots)])
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "the browser scenario failed:\n{report}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: Value = serde_json::from_str(report.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no report ({e}): {report}"));
    // The chart gained points while the page watched, up to one per step.
    let seen: Vec<u64> = r["chart_points_seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(seen.first(), Some(&0), "{seen:?}");
    assert_eq!(
        seen.last(),
        Some(&4),
        "4 steps, logged every step: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(
        r["command"].as_str().unwrap().contains("--max_steps 4"),
        "{r}"
    );
    assert!(
        r["streamed_chunks"].as_u64().unwrap() >= 2,
        "a streamed answer: {r}"
    );
    assert!(!r["answer"].as_str().unwrap().is_empty(), "{r}");
    for e in ["missing_error", "outside_error", "failed_error"] {
        assert!(!r[e].as_str().unwrap_or("").is_empty(), "{e}: {r}");
    }
    assert!(
        r["missing_error"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{r}"
    );
    assert!(
        r["outside_error"]
            .as_str()
            .unwrap()
            .contains("outside the allowed roots"),
        "{r}"
    );
    assert!(
        r["failed_error"].as_str().unwrap().contains("bad.jsonl"),
        "{r}"
    );
    assert!(
        r["chat_error"]
            .as_str()
            .unwrap()
            .contains("temperature must be between 0 and 2"),
        "{r}"
    );
    assert!(r["eval_table"].as_str().unwrap().contains("acc"), "{r}");
    assert!(
        r["export_outputs"].as_str().unwrap().contains("result"),
        "{r}"
    );
    for tab in ["train", "chat", "eval", "export"] {
        let shot = shots.join(format!("{tab}.png"));
        assert!(
            file_size(&shot) > 10_000,
            "{} was not written",
            shot.display()
        );
    }
    // What the page showed is what the folders hold.
    let job = out.join("webui").join(r["train_id"].as_str().unwrap());
    let run = run_folder(&job);
    assert_eq!(step_losses(&run).len(), 4);
    assert!(run.join("checkpoint-4/adapter_model.safetensors").is_file());
}
