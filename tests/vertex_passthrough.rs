//! Vertex AI native passthrough: the gateway signs a service-account JWT, exchanges it at the
//! key file's token_uri (a mock that verifies the RS256 signature with the account's public
//! key), and sends the resulting bearer to a mock Vertex that accepts only valid tokens it
//! issued. Bytes pass unchanged both ways (SSE streams too), usage is metered, the caller's
//! gateway key never reaches Google, and tokens are refreshed before they expire without
//! requests waiting.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::vertex::*;
use support::*;

fn vertex_gateway(upstream: &MockUpstream, key_file: &Path) -> Gateway {
    let providers = format!(
        r#"  vertex:
    project_id: {PROJECT}
    location: {LOCATION}
    endpoint: "{}"
    auth: {{method: gcp_service_account, config: {{credentials_file: "{}"}}}}
"#,
        upstream.url(),
        key_file.display()
    );
    gateway_with("", &providers, "")
}

struct Setup {
    tokens: GoogleTokenEndpoint,
    vertex: MockUpstream,
    gw: Gateway,
}

fn setup(lifetime: Duration) -> Setup {
    let tokens = GoogleTokenEndpoint::start(sa_key().to_public_key(), lifetime);
    let vertex = vertex_upstream(tokens.book.clone());
    let dir = temp_dir("vertex");
    let gw = vertex_gateway(
        &vertex,
        &write_key_file(&dir, sa_key(), &tokens.token_uri()),
    );
    // The key is read when the config is loaded: the file is not needed afterwards.
    std::fs::remove_dir_all(dir).unwrap();
    Setup { tokens, vertex, gw }
}

fn model_url(gw: &Gateway, publisher: &str, model: &str, method: &str) -> String {
    format!(
        "{}/providers/vertex/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/{publisher}/models/{model}:{method}",
        gw.base
    )
}

/// The request reached Vertex with a token the mock issued and nothing of the caller's key.
fn assert_clean(seen: &Recorded, upstream: &MockUpstream) {
    let auth = seen.header("authorization").unwrap_or_default();
    assert!(auth.starts_with("Bearer ya29.mock-"), "{auth}");
    assert!(seen.header("x-goog-api-key").is_none());
    seen.assert_no_gateway_key();
    seen.assert_host(upstream.addr);
}

#[tokio::test]
async fn gemini_generate_content_passes_byte_exact_with_a_verified_token() {
    let s = setup(Duration::from_secs(3600));
    let request = "{\"contents\": [{\"role\": \"user\", \"parts\": [{\"text\": \"Salut, ça va?\"}]}],\n \"generationConfig\": {\"maxOutputTokens\": 64, \"temperature\": 0.20}}"
        .as_bytes()
        .to_vec();
    let resp = client()
        .post(model_url(&s.gw, "google", GEMINI, "generateContent"))
        .header("x-goog-api-key", GATEWAY_KEY) // how google-genai sends its key
        .header("x-goog-api-client", "google-genai-sdk/1.0.0 gl-python/3.12")
        .header("content-type", "application/json")
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-goog-request-id"], "g-1");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), gemini_response());

    let seen = s.vertex.last();
    assert_eq!(seen.body, request, "request bytes changed");
    assert_eq!(
        seen.header("x-goog-api-client"),
        Some("google-genai-sdk/1.0.0 gl-python/3.12")
    );
    assert_clean(&seen, &s.vertex);
    assert_eq!(
        s.tokens.rejected.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    assert_tokens_metered(&s.gw, "vertex", GEMINI, 11, 3).await;
}

#[tokio::test]
async fn gemini_sse_stream_is_relayed_unchanged_and_metered() {
    let s = setup(Duration::from_secs(3600));
    let resp = client()
        .post(format!(
            "{}?alt=sse",
            model_url(&s.gw, "google", GEMINI, "streamGenerateContent")
        ))
        .bearer_auth(GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(r#"{"contents":[{"role":"user","parts":[{"text":"count to three"}]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // Read it as a stream, chunk by chunk, as a client would.
    let (got, _) = read_chunks(resp).await;
    assert_eq!(got, gemini_sse(), "stream bytes changed");
    let seen = s.vertex.last();
    assert!(
        seen.path.ends_with(":streamGenerateContent?alt=sse"),
        "{}",
        seen.path
    );
    assert_clean(&seen, &s.vertex);
    assert_tokens_metered(&s.gw, "vertex", GEMINI, 21, 7).await;
}

#[tokio::test]
async fn claude_raw_predict_and_stream_raw_predict_pass_through() {
    let s = setup(Duration::from_secs(3600));
    let body = r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = client()
        .post(model_url(&s.gw, "anthropic", CLAUDE, "rawPredict"))
        .header("x-api-key", GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), claude_response());
    assert_clean(&s.vertex.last(), &s.vertex);

    let stream_body = r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = client()
        .post(model_url(&s.gw, "anthropic", CLAUDE, "streamRawPredict"))
        .bearer_auth(GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(stream_body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), claude_sse());
    let seen = s.vertex.last();
    assert_eq!(seen.body, stream_body.as_bytes());
    assert_clean(&seen, &s.vertex);

    // The model the response names: 17 + 23 input, 6 + 9 output.
    assert_tokens_metered(&s.gw, "vertex", "claude-3-5-sonnet-v2-20241022", 40, 15).await;

    // Errors from Vertex keep their status and body.
    let resp = client()
        .post(model_url(
            &s.gw,
            "google",
            "no-such-model",
            "generateContent",
        ))
        .bearer_auth(GATEWAY_KEY)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "NOT_FOUND");
}

#[tokio::test]
async fn json_array_streams_and_embeddings_are_metered() {
    let s = setup(Duration::from_secs(3600));
    let resp = client()
        .post(model_url(&s.gw, "google", GEMINI, "streamGenerateContent"))
        .header("x-goog-api-key", GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(r#"{"contents":[{"role":"user","parts":[{"text":"ab"}]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.bytes().await.unwrap().to_vec(),
        gemini_json_array_stream()
    );
    assert_clean(&s.vertex.last(), &s.vertex);

    let resp = client()
        .post(model_url(&s.gw, "google", EMBEDDING, "predict"))
        .header("x-goog-api-key", GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(r#"{"instances":[{"content":"first text"},{"content":"second"}],"parameters":{"outputDimensionality":2}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), embeddings_response());
    assert_clean(&s.vertex.last(), &s.vertex);

    metrics_containing(
        &s.gw.metrics_url,
        &[
            &tokens_total("vertex", GEMINI, "input", 4),
            &tokens_total("vertex", GEMINI, "output", 2),
            // 6 + 3 embedding tokens (`:predict` answers name no model).
            r#"provider="vertex",type="input"} 9"#,
        ],
    )
    .await;
}

#[tokio::test]
async fn the_mocks_reject_forged_credentials() {
    let tokens = GoogleTokenEndpoint::start(sa_key().to_public_key(), Duration::from_secs(60));
    let vertex = vertex_upstream(tokens.book.clone());
    let url = format!(
        "{}/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{GEMINI}:generateContent",
        vertex.url()
    );
    // A made-up bearer is refused by the upstream.
    let r = client()
        .post(&url)
        .bearer_auth("ya29.mock-0.forged")
        .header("content-type", "application/json")
        .body(r#"{"contents":[{"parts":[{"text":"x"}]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // An assertion signed with another key is refused by the token endpoint, as is one whose
    // signature was tampered with after signing.
    let header = base64_url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = base64_url(
        serde_json::json!({"iss": SA_EMAIL, "scope": SCOPE, "aud": tokens.token_uri(), "iat": now, "exp": now + 3600})
            .to_string()
            .as_bytes(),
    );
    let signing_input = format!("{header}.{claims}");
    // The claims signed with `key`, the signature tampered with after signing if asked.
    let jwt = |key: &rsa::RsaPrivateKey, tamper: bool| {
        use rsa::signature::{SignatureEncoding, Signer};
        let sk = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
        let mut sig = sk.sign(signing_input.as_bytes()).to_vec();
        if tamper {
            sig[10] ^= 1;
        }
        format!("{signing_input}.{}", base64_url(&sig))
    };
    let exchange = |jwt: String| {
        client()
            .post(tokens.token_uri())
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", jwt.as_str()),
            ])
            .send()
    };
    for (key, tamper) in [(other_key(), false), (sa_key(), true)] {
        let r = exchange(jwt(key, tamper)).await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error_description"], "Invalid JWT Signature.");
    }
    // ... while the same claims signed with the account's key are accepted.
    let r = exchange(jwt(sa_key(), false)).await.unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = client()
        .post(&url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"contents":[{"parts":[{"text":"x"}]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[tokio::test]
async fn a_key_the_token_endpoint_rejects_is_a_503_and_not_ready() {
    // The key file holds a different private key than the one Google knows for the account.
    let tokens = GoogleTokenEndpoint::start(sa_key().to_public_key(), Duration::from_secs(3600));
    let vertex = vertex_upstream(tokens.book.clone());
    let dir = temp_dir("vertex-bad");
    let gw = vertex_gateway(
        &vertex,
        &write_key_file(&dir, other_key(), &tokens.token_uri()),
    );
    std::fs::remove_dir_all(dir).unwrap();
    let resp = client()
        .post(model_url(&gw, "google", GEMINI, "generateContent"))
        .header("x-goog-api-key", GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(r#"{"contents":[{"parts":[{"text":"x"}]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "provider_unavailable");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("invalid_grant"), "{msg}");
    assert!(msg.contains("Invalid JWT Signature"), "{msg}");
    assert!(!msg.contains("PRIVATE KEY"), "{msg}");
    assert!(tokens.rejected.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(
        vertex.recorded().is_empty(),
        "no token, so nothing may reach Vertex"
    );

    let ready = client()
        .get(format!("{}/ready", gw.base))
        .send()
        .await
        .unwrap();
    let v: Value = ready.json().await.unwrap();
    assert_eq!(v["providers"]["vertex"]["usable"], false, "{v}");
    assert!(v["providers"]["vertex"]["reason"]
        .as_str()
        .unwrap()
        .contains("invalid_grant"));
}

#[tokio::test]
async fn tokens_are_refreshed_before_expiry_and_requests_never_wait() {
    // 16 s tokens: the gateway refreshes at half-life (8 s) and stops using a token 5 s
    // before it expires; every refresh after the first takes 2 s at the token endpoint.
    let s = setup(Duration::from_secs(16));
    *s.tokens.later_delay.lock().unwrap() = Duration::from_secs(2);
    let request = client()
        .post(model_url(&s.gw, "google", GEMINI, "generateContent"))
        .bearer_auth(GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(r#"{"contents":[{"parts":[{"text":"tick"}]}]}"#);
    assert_tokens_rotate_without_waiting(request, &s.vertex).await;
    assert!(s.tokens.book.issued() >= 2);
}
