//! Running the `swift` binary that cargo built for this test run (with its tensor engine library
//! next to it, built once per test process: `cargo test` builds no cdylib): plain runs, runs with one
//! libtorch thread or extra environment, runs fed on stdin, `swift infer`'s logits diagnostic,
//! a `swift deploy` server on a loopback port, and the checks on what a run printed.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::floats;

/// The `swift` binary cargo built for this test run, with its tensor engine next to it.
pub fn swift_bin() -> PathBuf {
    runtime_so();
    PathBuf::from(env!("CARGO_BIN_EXE_swift"))
}

/// The tensor engine (libswift_runtime.so) next to the `swift` binary, built once per test
/// process: `cargo test` builds the binary but not the engine library the binary opens.
pub fn runtime_so() -> &'static Path {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(super::workspace_root()).args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "swift-runtime",
        ]);
        // The variables `cargo test` sets for this test process (its package's): a build script
        // that tracks them (ring's, under swift-eval's TLS) would rerun, and every crate above
        // it rebuild, at each switch between this build and the test build.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key == "OUT_DIR"
                || key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || key.starts_with("CARGO_BIN_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_PRIMARY_PACKAGE",
                ]
                .contains(&key.as_ref())
            {
                build.env_remove(key.as_ref());
            }
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the tensor engine failed");
        let so = Path::new(env!("CARGO_BIN_EXE_swift")).with_file_name("libswift_runtime.so");
        assert!(so.is_file(), "{} was not built", so.display());
        so
    })
}

/// `swift ARGS` with no SWIFT_PLUGIN_PATH or RUST_LOG from the outside, and `env` set.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(swift_bin());
    cmd.args(args)
        .env_remove("SWIFT_PLUGIN_PATH")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs swift with the given arguments and no SWIFT_* variables from the outside.
pub fn swift(args: &[&str]) -> Output {
    swift_env(args, &[])
}

/// [`swift`] with extra environment variables.
pub fn swift_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().expect("swift runs")
}

/// One libtorch thread: on a shared 2-core machine, OpenMP's spinning threads make a training
/// step up to 5× slower when another process holds a core.
pub const ONE_THREAD: (&str, &str) = ("OMP_NUM_THREADS", "1");

/// [`swift`] with one libtorch thread.
pub fn swift1(args: &[&str]) -> Output {
    swift_env(args, &[ONE_THREAD])
}

/// [`swift_env`] with `input` written to its stdin (the interactive chat).
pub fn swift_input(args: &[&str], env: &[(&str, &str)], input: &str) -> Output {
    let mut child = command(args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("swift starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing swift's stdin");
    child.wait_with_output().expect("swift runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "swift failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts that the run failed cleanly (no panic) with every one of `needles` in its stderr;
/// returns the stderr.
pub fn assert_fails(o: Output, needles: &[&str]) -> String {
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "swift should have failed (wanted {needles:?}):\nstdout:\n{}\nstderr:\n{err}",
        stdout(&o)
    );
    for n in needles {
        assert!(err.contains(n), "{n:?} not in stderr:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The JSON object on the last line of a successful run's stdout.
pub fn json_out(o: Output) -> Value {
    let out = ok(o);
    let last = out.trim().lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `swift infer EXTRA --debug_input_ids IDS --debug_greedy_tokens GREEDY` with one libtorch
/// thread: the last position's logits and the greedy continuation.
pub fn infer_logits(extra: &[&str], ids: &str, greedy: usize) -> (Vec<f64>, Value) {
    infer_logits_env(&[ONE_THREAD], extra, ids, greedy)
}

/// [`infer_logits`] with the given environment instead of one thread.
pub fn infer_logits_env(
    env: &[(&str, &str)],
    extra: &[&str],
    ids: &str,
    greedy: usize,
) -> (Vec<f64>, Value) {
    let n = greedy.to_string();
    let mut args = vec!["infer"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--debug_input_ids", ids, "--debug_greedy_tokens", &n]);
    let v = json_out(swift_env(&args, env));
    (floats(&v["last_logits"]), v["greedy"].clone())
}

/// A running `swift deploy` on a free loopback port; killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// `ADDR/v1`, for OpenAI clients.
    pub base_url: String,
}

impl Server {
    /// `swift deploy ARGS --host 127.0.0.1 --port 0` with one libtorch thread; returns once it
    /// prints the address it listens on.
    pub fn start(args: &[&str]) -> Server {
        let mut child = command(&[&["deploy"], args].concat(), &[ONE_THREAD])
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("swift deploy starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the listening line");
        let Some(addr) = line.trim().strip_prefix("listening on ").map(String::from) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected first line from swift deploy: {line:?}");
        };
        Server {
            child,
            base_url: format!("{addr}/v1"),
            addr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to 60 s) for the server to exit; its exit status.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "swift deploy did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-C: SIGINT to the server.
    pub fn interrupt(&self) {
        let ok = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    }

    /// One HTTP POST of a JSON body over a plain socket: the status code and the response body.
    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        let host = self.addr.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(host).expect("connects");
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("sending the request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("reading the response");
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
