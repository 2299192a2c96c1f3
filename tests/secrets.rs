//! Secret hygiene: runs the real binary at `RUST_LOG=trace` with the access log on, sends
//! good requests, a wrong key, malformed requests carrying the key, an upstream that rejects
//! the gateway's credential and one that fails, then asserts that neither the gateway key, the
//! wrong key nor the upstream key appears in stdout (access log), stderr (application, Pingora
//! and audit logs), `/metrics`, or any response the clients received (headers and bodies).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const WRONG_KEY: &str = "sk-wrong-but-secret-9f8e7d";

/// One raw HTTP/1.1 exchange (`Connection: close`); the whole response text.
fn exchange(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn post(port: u16, path: &str, auth: &str, body: &str) -> String {
    exchange(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn keys_never_reach_logs_metrics_or_responses() {
    let up = MockUpstream::start(|rec| {
        let body = String::from_utf8_lossy(&rec.body).into_owned();
        if body.contains("reject-me") {
            Reply::Full(
                401,
                vec![],
                br#"{"error":{"message":"Incorrect API key provided: sk-upstr***42","type":"invalid_request_error"}}"#.to_vec(),
            )
        } else if body.contains("fail-me") {
            Reply::Full(500, vec![], b"{\"error\":{\"message\":\"boom\"}}".to_vec())
        } else if body.contains("\"stream\":true") {
            Reply::Stream(
                vec![chat_stream("gpt-4-0125-preview", &["a", "b"], 2)],
                Duration::ZERO,
            )
        } else {
            Reply::Full(
                200,
                vec![],
                chat_completion("gpt-4-0125-preview", "hi", 1, 1),
            )
        }
    });
    let dir = std::env::temp_dir().join(format!("switchyard-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (port, mport) = (free_port(), free_port());
    let config = dir.join("gw.yaml");
    std::fs::write(
        &config,
        format!(
            r#"server: {{listen: "127.0.0.1:{port}", metrics_listen: "127.0.0.1:{mport}", access_log: true,
  upgrade_sock: "{dir}/up.sock", pid_file: "{dir}/pid"}}
auth: {{keys: [{{user: alice, key: "{GATEWAY_KEY}"}}]}}
providers:
  openai: {{endpoint: "{url}", auth: {{method: api_key, config: {{api_key: "{UPSTREAM_KEY}"}}}}}}
routing: {{patterns: [{{pattern: "^gpt-", default_provider: openai}}]}}
"#,
            dir = dir.display(),
            url = up.url()
        ),
    )
    .unwrap();
    let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let good = format!("Authorization: Bearer {GATEWAY_KEY}\r\n");
    let chat = |extra: &str| {
        format!(r#"{{"model":"gpt-4","messages":[{{"role":"user","content":"{extra}"}}]}}"#)
    };
    let mut responses = vec![
        post(port, "/v1/chat/completions", &good, &chat("hello")),
        post(
            port,
            "/v1/chat/completions",
            &good,
            r#"{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"s"}]}"#,
        ),
        post(port, "/v1/chat/completions", &good, &chat("reject-me")),
        post(port, "/v1/chat/completions", &good, &chat("fail-me")),
        post(port, "/providers/openai/v1/chat/completions", &good, &chat("pt")),
        post(port, "/providers/openai/v1/chat/completions", &good, &chat("reject-me")),
        post(
            port,
            "/v1/chat/completions",
            &format!("Authorization: Bearer {WRONG_KEY}\r\n"),
            &chat("x"),
        ),
        post(
            port,
            "/v1/chat/completions",
            &format!("X-Api-Key: {WRONG_KEY}\r\n"),
            &chat("x"),
        ),
        post(port, "/v1/chat/completions", &good, "{not json"),
        // Malformed requests that carry the key: Pingora's own refusals and ours.
        exchange(
            port,
            &format!("GET /v1/models HTTP/1.1\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nBad Header\r\n\r\n"),
        ),
        exchange(
            port,
            &format!("POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx"),
        ),
        exchange(
            port,
            &format!("POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer {GATEWAY_KEY}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ),
        exchange(
            port,
            &format!("GET /v1/models?api_key={GATEWAY_KEY} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ),
    ];
    assert!(responses[0].starts_with("HTTP/1.1 200"), "{}", responses[0]);
    assert!(responses[1].contains("data: [DONE]"), "{}", responses[1]);
    assert!(responses[2].starts_with("HTTP/1.1 502"), "{}", responses[2]);
    assert!(responses[6].starts_with("HTTP/1.1 401"), "{}", responses[6]);
    assert!(responses[9].starts_with("HTTP/1.1 400"), "{}", responses[9]);
    let metrics = exchange(
        mport,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(metrics.contains("ai_proxy_requests_total"), "{metrics}");
    responses.push(metrics);
    // Let the access-log thread write, then stop the gateway (SIGTERM drains).
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
    let out = std::fs::read_to_string(&stdout).unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        out.contains("\"status\":502"),
        "no access log captured:\n{out}"
    );
    assert!(err.contains("DEBUG"), "no debug log captured:\n{err}");
    for secret in [GATEWAY_KEY, WRONG_KEY, UPSTREAM_KEY] {
        assert!(!out.contains(secret), "{secret} in stdout:\n{out}");
        assert!(!err.contains(secret), "{secret} in stderr:\n{err}");
        for r in &responses {
            assert!(!r.contains(secret), "{secret} in a response:\n{r}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
