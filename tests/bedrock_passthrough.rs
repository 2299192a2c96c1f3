//! Bedrock native passthrough: the gateway signs every request with SigV4 (checked by a mock
//! that recomputes the signature independently), bytes pass unchanged both ways (binary
//! event streams too), the caller's key never reaches AWS, and usage from JSON bodies, token
//! headers and event streams is metered.

mod support;

use std::sync::Once;
use std::time::Duration;

use support::bedrock::*;
use support::*;
use switchyard_filters::eventstream::Decoder;

/// Credentials for `auth: default_chain` tests come from the environment, set once for this
/// whole test process before any gateway starts (and instance metadata is never queried).
fn init_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY);
        std::env::set_var("AWS_SESSION_TOKEN", SESSION_TOKEN);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/switchyard-test/config");
        std::env::set_var(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/switchyard-test/credentials",
        );
    });
}

fn static_auth(secret: &str) -> String {
    format!(
        "{{method: static, config: {{access_key_id: {ACCESS_KEY_ID}, secret_access_key: \"{secret}\"}}}}"
    )
}

/// A gateway with one `bedrock` provider at `url` with `auth`.
fn bedrock_gateway(url: &str, auth: &str) -> Gateway {
    init_env();
    let providers =
        format!("  bedrock:\n    region: {REGION}\n    endpoint: \"{url}\"\n    auth: {auth}\n");
    gateway_with("", &providers, "")
}

fn invoke_request() -> Vec<u8> {
    // Odd formatting on purpose: a re-serializing proxy would change these bytes (and the
    // signature over them).
    br#"{"anthropic_version": "bedrock-2023-05-31","max_tokens":64,  "messages":[{"role":"user","content":"Bonjour \u00e9 !"}] }"#.to_vec()
}

async fn post(gw: &Gateway, path: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(format!("{}/providers/bedrock{path}", gw.base))
        // The way boto3 sends a Bedrock API key (AWS_BEARER_TOKEN_BEDROCK), plus the other
        // headers a caller might try.
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .header("x-api-key", GATEWAY_KEY)
        .header("x-amz-security-token", "caller-token")
        .header("x-amz-date", "20000101T000000Z")
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("x-amzn-bedrock-trace", "ENABLED")
        .body(body)
        .send()
        .await
        .unwrap()
}

fn assert_signed_and_clean(seen: &Seen) {
    assert!(
        seen.refused.is_none(),
        "the mock refused the signature: {:?}",
        seen.refused
    );
    assert!(
        !seen.everything().contains(GATEWAY_KEY),
        "the gateway key reached AWS:\n{}",
        seen.everything()
    );
    assert!(!seen.everything().contains("caller-token"));
    let auth = seen.header("authorization").unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential="), "{auth}");
    assert!(
        auth.contains("SignedHeaders=content-type;host;x-amz-date;"),
        "{auth}"
    );
    assert!(
        auth.contains("x-amzn-bedrock-trace"),
        "x-amz* headers are signed: {auth}"
    );
    assert_eq!(seen.header("x-amzn-bedrock-trace"), Some("ENABLED"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert!(
        seen.header("x-amz-content-sha256").is_none(),
        "botocore sends none for bedrock"
    );
}

#[tokio::test]
async fn invoke_and_converse_are_signed_and_byte_exact() {
    let aws = MockBedrock::start(AwsKey::long_term());
    let gw = bedrock_gateway(&aws.url(), &static_auth(SECRET_ACCESS_KEY));

    // InvokeModel, model id with `:` sent percent-encoded as the AWS SDKs do.
    let request = invoke_request();
    let resp = post(&gw, &format!("/model/{MODEL_PATH}/invoke"), request.clone()).await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap().to_vec();
    let seen = aws.last();
    assert_signed_and_clean(&seen);
    assert!(seen.header("x-amz-security-token").is_none());
    assert_eq!(seen.target, format!("/model/{MODEL_PATH}/invoke"));
    assert_eq!(seen.body, request, "request bytes changed");
    assert_eq!(body, seen.sent, "response bytes changed");
    assert_eq!(headers["x-amzn-requestid"], "7d6a1f0e-mock");
    assert_eq!(headers["x-amzn-bedrock-input-token-count"], "11");
    assert_eq!(headers["content-type"], "application/json");

    // Converse, with the model id's `:` sent raw (its canonical form is then `%3A`).
    let request = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"inferenceConfig":{"maxTokens":32}}"#.to_vec();
    let resp = post(&gw, &format!("/model/{MODEL_ID}/converse"), request.clone()).await;
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap().to_vec();
    let seen = aws.last();
    assert_signed_and_clean(&seen);
    assert_eq!(seen.target, format!("/model/{MODEL_ID}/converse"));
    assert_eq!(seen.body, request);
    assert_eq!(body, seen.sent);

    // An empty body and a query string are signed too.
    let resp = client()
        .post(format!(
            "{}/providers/bedrock/model/{MODEL_PATH}/invoke?b=2&a=x%20y",
            gw.base
        ))
        .header("x-api-key", GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = aws.last();
    assert!(seen.refused.is_none(), "{:?}", seen.refused);
    assert_eq!(
        seen.target,
        format!("/model/{MODEL_PATH}/invoke?b=2&a=x%20y")
    );

    // Usage from the token headers (invoke, twice: 22/8) and the Converse body (13/6), under
    // the model id from the path (priced in conf/prices.yaml).
    let text = metrics_containing(
        &gw.metrics_url,
        &[
            &tokens_total("bedrock", MODEL_ID, "input", 35),
            &tokens_total("bedrock", MODEL_ID, "output", 14),
            "bedrock_proxy_requests_total 3",
            "bedrock_proxy_request_duration_seconds_count 3",
        ],
    )
    .await;
    assert!(
        text.contains(&format!(
            r#"ai_proxy_cost_usd_total{{model="{MODEL_ID}",provider="bedrock"}}"#
        )),
        "{text}"
    );
}

/// Checks a relayed event stream: same bytes as sent, and every frame decodes (CRCs verified).
fn assert_stream(received: &[u8], sent: &[u8], frames: usize) {
    assert_eq!(received, sent, "event stream bytes changed");
    let mut n = 0;
    let mut d = Decoder::new();
    d.feed(received, |m| {
        assert_eq!(m.message_type(), Some("event"));
        n += 1;
    })
    .unwrap();
    d.finish().unwrap();
    assert_eq!(n, frames);
}

#[tokio::test]
async fn streams_are_relayed_byte_exact_and_metered() {
    let aws = MockBedrock::start(AwsKey::long_term());
    let gw = bedrock_gateway(&aws.url(), &static_auth(SECRET_ACCESS_KEY));

    let resp = post(
        &gw,
        &format!("/model/{MODEL_PATH}/invoke-with-response-stream"),
        invoke_request(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    assert_eq!(
        resp.headers()["x-amzn-bedrock-content-type"],
        "application/json"
    );
    // Read chunk by chunk, as an SDK iterating events does.
    let (received, _) = read_chunks(resp).await;
    let seen = aws.last();
    assert_signed_and_clean(&seen);
    assert_stream(&received, &seen.sent, 9);

    let resp = post(
        &gw,
        &format!("/model/{MODEL_PATH}/converse-stream"),
        br#"{"messages":[{"role":"user","content":[{"text":"count"}]}]}"#.to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let received = resp.bytes().await.unwrap().to_vec();
    let seen = aws.last();
    assert_signed_and_clean(&seen);
    assert_stream(&received, &seen.sent, 7);

    // invoke stream 17/4 (Anthropic usage and invocationMetrics inside base64 `bytes`),
    // converse stream 19/3 (`metadata` event).
    metrics_containing(
        &gw.metrics_url,
        &[
            &tokens_total("bedrock", MODEL_ID, "input", 36),
            &tokens_total("bedrock", MODEL_ID, "output", 7),
            "bedrock_proxy_requests_total 2",
        ],
    )
    .await;
}

#[tokio::test]
async fn default_chain_session_credentials_are_sent_and_signed() {
    let aws = MockBedrock::start(AwsKey::session());
    let gw = bedrock_gateway(&aws.url(), "{method: default_chain}");
    let resp = post(
        &gw,
        &format!("/model/{MODEL_PATH}/converse"),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 200, "{:?}", aws.last().refused);
    let seen = aws.last();
    assert_signed_and_clean(&seen);
    assert_eq!(seen.header("x-amz-security-token"), Some(SESSION_TOKEN));
    assert!(seen
        .header("authorization")
        .unwrap()
        .contains("x-amz-security-token"));
    let ready: serde_json::Value = client()
        .get(format!("{}/ready", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["providers"]["bedrock"]["usable"], true, "{ready}");
}

#[tokio::test]
async fn a_wrong_secret_or_key_is_refused_by_aws() {
    let aws = MockBedrock::start(AwsKey::long_term());
    let gw = bedrock_gateway(&aws.url(), &static_auth("not-the-secret"));
    let resp = post(
        &gw,
        &format!("/model/{MODEL_PATH}/invoke"),
        invoke_request(),
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers()["x-amzn-errortype"]
        .to_str()
        .unwrap()
        .starts_with("InvalidSignatureException:"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("The request signature we calculated does not match"));
    assert_eq!(aws.last().refused.unwrap().0, "InvalidSignatureException");

    // The session token is required when the key has one.
    let aws = MockBedrock::start(AwsKey::session());
    let gw = bedrock_gateway(&aws.url(), &static_auth(SECRET_ACCESS_KEY));
    let resp = post(
        &gw,
        &format!("/model/{MODEL_PATH}/invoke"),
        invoke_request(),
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(aws.last().refused.unwrap().0, "UnrecognizedClientException");
}

#[tokio::test]
async fn any_tampering_after_signing_is_detected_by_the_verifier() {
    let aws = MockBedrock::start(AwsKey::long_term());
    let gw = bedrock_gateway(&aws.url(), &static_auth(SECRET_ACCESS_KEY));
    let resp = post(
        &gw,
        &format!("/model/{MODEL_PATH}/invoke"),
        invoke_request(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let seen = aws.last();
    let key = AwsKey::long_term();
    let verify = |method: &str, target: &str, headers: &[(String, String)], body: &[u8]| {
        verify_sigv4(method, target, headers, body, &key)
    };
    assert!(verify(&seen.method, &seen.target, &seen.headers, &seen.body).is_ok());

    let mut body = seen.body.clone();
    body[5] ^= 1;
    assert!(verify(&seen.method, &seen.target, &seen.headers, &body).is_err());
    assert!(verify("PUT", &seen.target, &seen.headers, &seen.body).is_err());
    let other = seen.target.replace("%3A0", "%3A1");
    assert!(verify(&seen.method, &other, &seen.headers, &seen.body).is_err());
    // `:` and `%3A` are different paths to AWS (double encoding).
    let raw = seen.target.replace("%3A", ":");
    assert!(verify(&seen.method, &raw, &seen.headers, &seen.body).is_err());
    for (i, (name, _)) in seen.headers.iter().enumerate() {
        let mut headers = seen.headers.clone();
        if name == "authorization" {
            let v = &mut headers[i].1;
            let last = v.pop().unwrap();
            v.push(if last == '0' { '1' } else { '0' });
        } else if ["host", "x-amz-date", "content-type", "x-amzn-bedrock-trace"]
            .contains(&name.as_str())
        {
            headers[i].1.push('x');
        } else {
            continue;
        }
        assert!(
            verify(&seen.method, &seen.target, &headers, &seen.body).is_err(),
            "tampered {name} accepted"
        );
    }
}

#[tokio::test]
async fn the_verifier_agrees_with_published_vectors() {
    // AWS SigV4 test suite, `get-vanilla`.
    let headers = vec![
        ("host".to_string(), "example.amazonaws.com".to_string()),
        ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
    ];
    let (_, sig) = signature_for(&SigInput {
        method: "GET",
        target: "/",
        headers: &headers,
        signed_headers: "host;x-amz-date",
        payload_hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        amz_date: "20150830T123600Z",
        region: "us-east-1",
        service: "service",
        secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    })
    .unwrap();
    assert_eq!(
        sig,
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
    // botocore 1.44 `SigV4Auth(creds, "bedrock", "us-east-1")` for an InvokeModel request
    // whose model id has `%3A` (double-encoded to `%253A` in the canonical URI).
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        (
            "host".to_string(),
            "bedrock-runtime.us-east-1.amazonaws.com".to_string(),
        ),
        ("x-amz-date".to_string(), "20240501T120000Z".to_string()),
        ("x-amzn-bedrock-trace".to_string(), "ENABLED".to_string()),
    ];
    let (canonical, sig) = signature_for(&SigInput {
        method: "POST",
        target: "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
        headers: &headers,
        signed_headers: "content-type;host;x-amz-date;x-amzn-bedrock-trace",
        payload_hash: "5041bf1f713df204784353e82f6a4a535931cb64f1f4b4a5aeaffcb720918b22",
        amz_date: "20240501T120000Z",
        region: "us-east-1",
        service: "bedrock",
        secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    })
    .unwrap();
    assert!(
        canonical.starts_with("POST\n/model/anthropic.claude-3-haiku-20240307-v1%253A0/invoke\n\n")
    );
    assert_eq!(
        sig,
        "040b6b60febeafb2e85308752ae6712aa5386b60271131571f519ec13daa4e26"
    );
    // The test encoder's bitwise CRC-32.
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[tokio::test]
async fn missing_credentials_make_the_provider_unready_with_a_reason() {
    // A separate process with an empty environment: the default chain finds nothing (no
    // env vars, no profile files, instance metadata disabled).
    let (port, mport) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("switchyard-bedrock-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "server: {{listen: \"127.0.0.1:{port}\", metrics_listen: \"127.0.0.1:{mport}\", access_log: false}}\n\
             auth: {{keys: [{{user: alice, key: \"{GATEWAY_KEY}\"}}]}}\n\
             providers:\n  bedrock: {{region: {REGION}, endpoint: \"http://127.0.0.1:9\", auth: {{method: default_chain}}}}\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "-c"])
        .arg(&cfg)
        .env_clear()
        .env("HOME", &dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Ok(r) = client().get(format!("{base}/ready")).send().await {
            let body: serde_json::Value = r.json().await.unwrap();
            if body["providers"]["bedrock"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no AWS credentials:"))
            {
                break body;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reported the missing credentials"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready["providers"]["bedrock"]["usable"], false, "{ready}");
    let resp = client()
        .post(format!(
            "{base}/providers/bedrock/model/{MODEL_PATH}/invoke"
        ))
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("no AWS credentials"), "{body}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn model_arns_keep_their_encoded_slash() {
    let aws = MockBedrock::start(AwsKey::long_term());
    let gw = bedrock_gateway(&aws.url(), &static_auth(SECRET_ACCESS_KEY));
    // As the AWS SDKs send an inference-profile ARN: `:` as %3A and `/` as %2F in one label.
    let arn = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-haiku-20240307-v1%3A0";
    let resp = post(&gw, &format!("/model/{arn}/converse"), b"{}".to_vec()).await;
    assert_eq!(resp.status(), 200);
    let seen = aws.last();
    assert_signed_and_clean(&seen);
    assert_eq!(seen.target, format!("/model/{arn}/converse"));
    // An encoded `/` may not hide a dot segment (an upstream decoding before normalising
    // would leave the base path).
    let before = aws.seen().len();
    let resp = post(&gw, "/model/a%2F..%2Fb/converse", b"{}".to_vec()).await;
    assert_eq!(resp.status(), 400, "dot segment behind %2F");
    assert_eq!(aws.seen().len(), before);
}
