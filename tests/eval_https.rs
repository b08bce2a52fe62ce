//! `swift eval --eval_url https://…`: a TLS proxy made here (rcgen's test CA and a certificate
//! for 127.0.0.1, rustls) in front of `swift deploy` of the tiny llama. With the CA named by
//! `SSL_CERT_FILE` (as OpenAI's Python client and curl read it) the answers and scores equal
//! those over plain http; without it the server's certificate is refused.

use crate::common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

const QA: &str = "{\"query\": \"Say hi.\", \"response\": \"hi there\"}\n\
{\"query\": \"Count.\", \"response\": \"one two three\"}\n";

/// A certificate for 127.0.0.1 signed by a fresh CA: the CA's PEM, the server's TLS settings.
fn certificates() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "swift-rs test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    #[allow(deprecated)] // ring's provider: no post-quantum key exchange, not needed here.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), Arc::new(config))
}

/// One request read from `r`: its head and a `Content-Length` body (`None`: the connection
/// ended first, as when the client refuses the certificate).
fn read_request(r: &mut impl Read) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if buf.len() >= end + 4 + len {
                return Some(buf);
            }
        }
        match r.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
}

/// A TLS-terminating proxy on 127.0.0.1 to `backend` (`127.0.0.1:PORT`), one request per
/// connection (as swift eval sends them); its port.
fn tls_proxy(config: Arc<rustls::ServerConfig>, backend: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, backend) = (config.clone(), backend.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let Some(request) = read_request(&mut tls) else {
                    return;
                };
                let mut up = TcpStream::connect(&backend).unwrap();
                up.write_all(&request).unwrap();
                let mut answer = Vec::new();
                up.read_to_end(&mut answer).unwrap();
                tls.write_all(&answer).unwrap();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

/// `swift eval --eval_url URL` of `qa` into `out` with `env`.
fn eval_url(url: &str, qa: &Path, out: &Path, env: &[(&str, &str)]) -> std::process::Output {
    swift_env(
        &[
            "eval",
            "--eval_url",
            url,
            "--eval_dataset",
            &qa.display().to_string(),
            "--max_new_tokens",
            "8",
            "--output_dir",
            &out.display().to_string(),
        ],
        env,
    )
}

#[test]
fn eval_url_over_https_scores_as_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let qa = write_text(&dir.path().join("qa.jsonl"), QA);
    let model = tiny().display().to_string();
    let server = Server::start(&["--model", &model, "--served_model_name", "tiny-llama"]);
    let (ca_pem, config) = certificates();
    let ca = write_text(&dir.path().join("ca.pem"), &ca_pem);
    let backend = server.addr.trim_start_matches("http://").to_string();
    let port = tls_proxy(config, backend);
    let https = format!("https://127.0.0.1:{port}/v1");

    let plain_out = dir.path().join("plain");
    ok(eval_url(&server.base_url, &qa, &plain_out, &[]));
    let tls_out = dir.path().join("tls");
    let ca_s = ca.display().to_string();
    ok(eval_url(&https, &qa, &tls_out, &[("SSL_CERT_FILE", &ca_s)]));
    let (plain, tls) = (run_folder(&plain_out), run_folder(&tls_out));
    let (p, t) = (
        read_jsonl(&plain.join("predictions/qa.jsonl")),
        read_jsonl(&tls.join("predictions/qa.jsonl")),
    );
    assert_eq!(p.len(), 2);
    for (a, b) in p.iter().zip(&t) {
        assert_eq!(a["prediction"], b["prediction"]);
    }
    let (pr, tr) = (
        read_json(&plain.join("report.json")),
        read_json(&tls.join("report.json")),
    );
    assert_eq!(tr["model"], "tiny-llama");
    assert_eq!(tr["eval_url"], https.as_str());
    assert_eq!(
        pr["benchmarks"][0]["metrics"],
        tr["benchmarks"][0]["metrics"]
    );

    // The system's roots do not hold the test CA: the certificate is refused, and the message
    // says how to name the CA.
    let refused = eval_url(&https, &qa, &dir.path().join("refused"), &[]);
    assert_fails(refused, &[https.as_str(), "certificate", "SSL_CERT_FILE"]);
}
