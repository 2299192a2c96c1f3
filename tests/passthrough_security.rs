//! Native passthrough under attack: methods a provider's API does not use, requests the
//! gateway cannot read (answered as the client's fault, not the provider's), gateway keys in
//! the query string, encoded dot segments and duplicated `Content-Length`.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn body_of(text: &str) -> Value {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The value of a header in a raw response (case-insensitive name).
fn header_of<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let head = text.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn auth() -> String {
    format!("Authorization: Bearer {GATEWAY_KEY}\r\n")
}

/// An upstream that reflects TRACE the way RFC 9110 §9.3.8 describes: the request it
/// received, headers included, as the body.
fn reflecting_upstream() -> MockUpstream {
    MockUpstream::start(|rec| {
        Reply::Full(
            200,
            vec![("content-type".into(), "message/http".into())],
            rec.everything().into_bytes(),
        )
    })
}

#[test]
fn methods_the_providers_api_does_not_use_are_405_before_any_upstream_connection() {
    let up = reflecting_upstream();
    let gw = gateway(&up.url(), "");
    for method in ["TRACE", "CONNECT", "PROPFIND", "OPTIONS", "PUT", "PATCH"] {
        let (status, text) = raw_http(
            &gw.base,
            format!(
                "{method} /providers/openai/v1/models HTTP/1.1\r\nHost: x\r\n{}Content-Length: 0\r\nConnection: close\r\n\r\n",
                auth()
            )
            .as_bytes(),
        );
        assert!(
            !text.contains(UPSTREAM_KEY),
            "{method}: credential reflected: {text}"
        );
        if method == "CONNECT" {
            // Pingora refuses CONNECT itself (bare 405) before any hook runs.
            assert_eq!(status, 405, "{method}: {text}");
            continue;
        }
        assert_eq!(status, 405, "{method}: {text}");
        let v = body_of(&text);
        assert_eq!(v["error"]["code"], "method_not_allowed", "{method}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{method}");
        assert_eq!(
            header_of(&text, "allow"),
            Some("GET, HEAD, POST, DELETE"),
            "{method}"
        );
    }
    assert!(
        up.recorded().is_empty(),
        "a refused method reached the upstream: {:?}",
        up.recorded()
    );
    // The methods the API uses still pass.
    for method in ["GET", "POST", "DELETE"] {
        let (status, text) = raw_http(
            &gw.base,
            format!(
                "{method} /providers/openai/v1/files/f HTTP/1.1\r\nHost: x\r\n{}Content-Length: 0\r\nConnection: close\r\n\r\n",
                auth()
            )
            .as_bytes(),
        );
        assert_eq!(status, 200, "{method}: {text}");
    }
    assert_eq!(up.recorded().len(), 3);
}

#[test]
fn each_provider_kind_allows_only_its_apis_methods() {
    use switchyard::pipeline::passthrough::allowed_methods;
    use switchyard::providers::ProviderKind::*;
    for kind in [OpenAi, Azure, Anthropic, Bedrock, Vertex, Watsonx, Oci] {
        let allow = allowed_methods(kind);
        for never in ["TRACE", "CONNECT", "OPTIONS", "TRACK"] {
            assert!(!allow.split(", ").any(|m| m == never), "{kind:?}: {allow}");
        }
        assert!(allow.starts_with("GET, HEAD, POST"), "{kind:?}: {allow}");
    }
    assert_eq!(allowed_methods(Bedrock), "GET, HEAD, POST");
    assert_eq!(allowed_methods(Oci), "GET, HEAD, POST");
    assert!(allowed_methods(Vertex).contains("PATCH"));
}

#[test]
fn encoded_dot_segments_are_refused_on_every_provider() {
    let up = reflecting_upstream();
    let bedrock = format!(
        r#"  bedrock:
    endpoint: "{url}"
    region: us-east-1
    auth: {{method: static, config: {{access_key_id: AKIDEXAMPLE, secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}}}}
  openai:
    endpoint: "{url}"
    auth: {{method: api_key, config: {{api_key: "{UPSTREAM_KEY}"}}}}
"#,
        url = up.url()
    );
    let gw = gateway_with("", &bedrock, "");
    for target in [
        "/providers/bedrock/model/..%2F..%2Fadmin/invoke",
        "/providers/bedrock/model/..%2f..%2fadmin/invoke",
        "/providers/bedrock/model/x%2F%2E%2E%2Fadmin/invoke",
        "/providers/bedrock/model/x%2F.%2Fadmin/invoke",
        "/providers/bedrock/model/%2e%2E%2Fadmin/invoke",
        "/providers/bedrock/model/..%5Cadmin/invoke",
        "/providers/bedrock/model/%252e%252e%252Fadmin/invoke",
        "/providers/openai/v1/%252e%252e/admin",
        "/providers/openai/v1/%2E%2e/admin",
    ] {
        let (status, text) = raw_http(
            &gw.base,
            format!(
                "POST {target} HTTP/1.1\r\nHost: x\r\n{}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}",
                auth()
            )
            .as_bytes(),
        );
        assert_eq!(status, 400, "{target}: {text}");
        assert_eq!(body_of(&text)["error"]["code"], "invalid_path", "{target}");
    }
    assert!(up.recorded().is_empty(), "{:?}", up.recorded());
    // A model ARN (an encoded `/` inside the label) still passes.
    let arn = "/providers/bedrock/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x..y/invoke";
    let (status, text) = raw_http(
        &gw.base,
        format!(
            "POST {arn} HTTP/1.1\r\nHost: x\r\n{}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}",
            auth()
        )
        .as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn identical_duplicate_content_lengths_are_forwarded_as_one() {
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], b"{}".to_vec()));
    let gw = gateway(&up.url(), "");
    for lengths in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
    ] {
        let (status, text) = raw_http(
            &gw.base,
            format!(
                "POST /providers/openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n{}{lengths}Connection: close\r\n\r\nhello",
                auth()
            )
            .as_bytes(),
        );
        assert_eq!(status, 200, "{lengths}: {text}");
        let seen = up.last();
        let sent: Vec<_> = seen
            .headers
            .iter()
            .filter(|(k, _)| k == "content-length")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(sent, ["5"], "{lengths}");
        assert_eq!(seen.body, b"hello");
    }
    // Differing values stay a 400 and reach nobody.
    let before = up.recorded().len();
    for lengths in [
        "Content-Length: 5, 6\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ] {
        let (status, text) = raw_http(
            &gw.base,
            format!(
                "POST /providers/openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n{}{lengths}Connection: close\r\n\r\nhello!",
                auth()
            )
            .as_bytes(),
        );
        assert_eq!(status, 400, "{lengths}: {text}");
    }
    assert_eq!(up.recorded().len(), before);
}

/// Requests whose framing or hop-by-hop headers the gateway cannot honour: each is answered
/// with a 400 envelope, counted as a client error and never as the provider's.
#[tokio::test]
async fn unreadable_requests_are_the_clients_fault_not_the_providers() {
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], b"{}".to_vec()));
    let gw = gateway(&up.url(), "");
    let tokens: String = (0..12).map(|i| format!("x-t{i}, ")).collect();
    let cases = [
        (
            "Connection naming host",
            "Connection: host\r\nContent-Length: 2\r\n\r\n{}".to_owned(),
        ),
        (
            "quoted Connection",
            "Connection: \"close\"\r\nContent-Length: 2\r\n\r\n{}".to_owned(),
        ),
        (
            "12-token Connection",
            format!("Connection: {tokens}close\r\nContent-Length: 2\r\n\r\n{{}}"),
        ),
        (
            "bad chunk size",
            "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_owned(),
        ),
    ];
    for (what, rest) in &cases {
        let base = gw.base.clone();
        let req = format!(
            "POST /providers/openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n{}{rest}",
            auth()
        );
        let (status, text) = tokio::task::spawn_blocking(move || raw_http(&base, req.as_bytes()))
            .await
            .unwrap();
        assert_eq!(status, 400, "{what}: {text}");
        assert_eq!(
            body_of(&text)["error"]["type"],
            "invalid_request_error",
            "{what}"
        );
    }
    // The Connection headers are refused before a provider is chosen, the bad chunk while
    // the body is relayed.
    let metrics = metrics_containing(
        &gw.metrics_url,
        &[
            r#"ai_proxy_requests_total{model="none",provider="none",status="400"} 3"#,
            r#"ai_proxy_requests_total{model="none",provider="openai",status="400"} 1"#,
        ],
    )
    .await;
    assert!(
        !metrics.contains("ai_proxy_provider_errors_total{"),
        "counted as the provider's errors:\n{metrics}"
    );
}

/// Runs the real binary (`RUST_LOG=trace`, access log on) against `upstream_url`; returns its
/// port and a function that stops it and returns (stdout, stderr).
fn run_binary(upstream_url: &str) -> (u16, impl FnOnce() -> (String, String)) {
    use std::process::{Command, Stdio};
    let dir = std::env::temp_dir().join(format!(
        "switchyard-ptsec-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("gw.yaml");
    std::fs::write(
        &config,
        format!(
            r#"server: {{listen: "127.0.0.1:{port}", access_log: true, upgrade_sock: "{dir}/up.sock", pid_file: "{dir}/pid"}}
auth: {{keys: [{{user: alice, key: "{GATEWAY_KEY}"}}]}}
providers:
  openai: {{endpoint: "{upstream_url}", auth: {{method: api_key, config: {{api_key: "{UPSTREAM_KEY}"}}}}}}
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "-c"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "gateway did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = move || {
        std::thread::sleep(Duration::from_millis(300)); // the access-log thread writes
        let _ = child.kill();
        let _ = child.wait();
        let out = std::fs::read_to_string(&stdout).unwrap();
        let err = std::fs::read_to_string(&stderr).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (out, err)
    };
    (port, stop)
}

#[test]
fn a_key_in_the_query_string_goes_neither_upstream_nor_to_any_log() {
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], b"{}".to_vec()));
    let (port, stop) = run_binary(&up.url());
    let base = format!("http://127.0.0.1:{port}");
    let send = |base: &str, target: &str| {
        raw_http(
            base,
            format!(
                "GET {target} HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
                auth()
            )
            .as_bytes(),
        )
    };
    let (status, text) = send(
        &base,
        &format!("/providers/openai/v1/models?key={GATEWAY_KEY}&limit=2&API_KEY={GATEWAY_KEY}&x%2Dapi%2Dkey={GATEWAY_KEY}"),
    );
    assert_eq!(status, 200, "{text}");
    let seen = up.last();
    seen.assert_no_gateway_key();
    assert_eq!(seen.path, "/v1/models?limit=2", "other parameters are kept");
    let (out, err) = stop();

    // An upstream that fails makes Pingora write its own error line (with the request).
    let (port, stop) = run_binary(&format!("http://127.0.0.1:{}", free_port()));
    let (status, text) = send(
        &format!("http://127.0.0.1:{port}"),
        &format!("/providers/openai/v1/models?key={GATEWAY_KEY}"),
    );
    assert_eq!(status, 502, "{text}");
    let (out2, err2) = stop();
    assert!(
        err2.contains("Fail to proxy") && err2.contains("?<redacted>"),
        "Pingora's error line is expected, query redacted:\n{err2}"
    );
    for log in [out, err, out2, err2] {
        assert!(!log.contains(GATEWAY_KEY), "the key reached a log:\n{log}");
        assert!(
            !log.contains(UPSTREAM_KEY),
            "the credential reached a log:\n{log}"
        );
    }
}

#[test]
fn client_side_failures_are_logged_below_error() {
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], b"{}".to_vec()));
    let (port, stop) = run_binary(&up.url());
    let base = format!("http://127.0.0.1:{port}");
    for rest in [
        "Connection: host\r\nContent-Length: 2\r\n\r\n{}",
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    ] {
        let (status, text) = raw_http(
            &base,
            format!(
                "POST /providers/openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n{}{rest}",
                auth()
            )
            .as_bytes(),
        );
        assert_eq!(status, 400, "{rest}: {text}");
    }
    let (out, err) = stop();
    assert_eq!(out.matches("\"status\":400").count(), 2, "{out}");
    assert!(
        !err.lines().any(|l| l.contains(" ERROR ")),
        "a client's mistake was logged as an error:\n{err}"
    );
    assert!(
        err.contains("refused: the client sent what cannot be proxied"),
        "{err}"
    );
}
