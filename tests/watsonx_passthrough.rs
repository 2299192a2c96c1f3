//! watsonx.ai native passthrough: the gateway exchanges its IBM Cloud API key at a mock IAM
//! (which verifies the key) for short-lived bearer tokens, and a mock watsonx.ai accepts only
//! valid tokens IAM issued. Bytes pass unchanged (SSE too), usage is metered, the caller's key
//! never reaches IBM, and tokens are refreshed before expiry without requests waiting.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use support::watsonx::*;
use support::*;

fn watsonx_gateway(upstream: &MockUpstream, iam: &IamEndpoint, api_key: &str) -> Gateway {
    let providers = format!(
        r#"  watsonx:
    endpoint: "{}"
    project_id: {WX_PROJECT}
    auth:
      method: ibm_iam
      config: {{api_key: "{api_key}", iam_endpoint: "{}"}}
"#,
        upstream.url(),
        iam.mock.url()
    );
    gateway_with("", &providers, "")
}

struct Setup {
    iam: IamEndpoint,
    wx: MockUpstream,
    gw: Gateway,
}

fn setup(lifetime: Duration) -> Setup {
    let iam = IamEndpoint::start(IBM_API_KEY, lifetime);
    let wx = watsonx_upstream(iam.book.clone());
    let gw = watsonx_gateway(&wx, &iam, IBM_API_KEY);
    Setup { iam, wx, gw }
}

fn chat_body() -> String {
    format!(
        "{{\"model_id\": \"{GRANITE}\", \"project_id\": \"{WX_PROJECT}\",\n \"messages\": [{{\"role\": \"user\", \"content\": \"Zähl bis zwei\"}}], \"max_tokens\": 50}}"
    )
}

fn assert_clean(seen: &Recorded, upstream: &MockUpstream) {
    let auth = seen.header("authorization").unwrap_or_default();
    assert!(
        auth.starts_with("Bearer eyJraWQiOiJtb2NrIn0.iam-"),
        "{auth}"
    );
    seen.assert_no_gateway_key();
    assert!(
        !seen.everything().contains(IBM_API_KEY),
        "the IBM API key itself reached watsonx"
    );
    seen.assert_host(upstream.addr);
}

#[tokio::test]
async fn chat_passes_byte_exact_with_an_iam_token() {
    let s = setup(Duration::from_secs(3600));
    let body = chat_body();
    let resp = client()
        .post(format!(
            "{}/providers/watsonx/ml/v1/text/chat?version={WX_VERSION}",
            s.gw.base
        ))
        .bearer_auth(GATEWAY_KEY)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), chat_response());
    let seen = s.wx.last();
    assert_eq!(seen.path, format!("/ml/v1/text/chat?version={WX_VERSION}"));
    assert_eq!(seen.body, body.as_bytes());
    assert_clean(&seen, &s.wx);

    // The IAM exchange was form-encoded with the configured key, and only IAM saw the key.
    let exchange = s.iam.mock.last();
    assert_eq!(
        exchange.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        String::from_utf8_lossy(&exchange.body),
        format!("grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={IBM_API_KEY}")
    );
    exchange.assert_no_gateway_key();

    assert_tokens_metered(&s.gw, "watsonx", GRANITE, 30, 8).await;
}

#[tokio::test]
async fn chat_stream_is_relayed_unchanged_and_metered() {
    let s = setup(Duration::from_secs(3600));
    let resp = client()
        .post(format!(
            "{}/transparent/watsonx/ml/v1/text/chat_stream?version={WX_VERSION}",
            s.gw.base
        ))
        .header("x-api-key", GATEWAY_KEY)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (got, _) = read_chunks(resp).await;
    assert_eq!(got, chat_sse(), "stream bytes changed");
    assert_clean(&s.wx.last(), &s.wx);
    assert_tokens_metered(&s.gw, "watsonx", GRANITE, 26, 5).await;

    // watsonx errors keep their status and body.
    let resp = client()
        .post(format!("{}/providers/watsonx/ml/v1/text/chat", s.gw.base))
        .bearer_auth(GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "missing_version");
}

#[tokio::test]
async fn the_mocks_reject_forged_credentials() {
    let iam = IamEndpoint::start(IBM_API_KEY, Duration::from_secs(60));
    let wx = watsonx_upstream(iam.book.clone());
    let chat = format!("{}/ml/v1/text/chat?version={WX_VERSION}", wx.url());
    let chat_with = |token: &str| {
        client()
            .post(&chat)
            .bearer_auth(token)
            .body(chat_body())
            .send()
    };
    let token_url = format!("{}/identity/token", iam.mock.url());
    let exchange = |apikey: &str| {
        client()
            .post(&token_url)
            .form(&[
                ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                ("apikey", apikey),
            ])
            .send()
    };
    let r = chat_with("eyJraWQiOiJtb2NrIn0.iam-0.forged").await.unwrap();
    assert_eq!(r.status(), 401);
    let r = exchange("ibm-apikey-tampered").await.unwrap();
    assert_eq!(r.status(), 400);
    let r = exchange(IBM_API_KEY).await.unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = chat_with(&token).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_wrong_api_key_is_a_503_and_not_ready() {
    let iam = IamEndpoint::start(IBM_API_KEY, Duration::from_secs(3600));
    let wx = watsonx_upstream(iam.book.clone());
    let gw = watsonx_gateway(&wx, &iam, "ibm-apikey-revoked-000");
    let resp = client()
        .post(format!(
            "{}/providers/watsonx/ml/v1/text/chat?version={WX_VERSION}",
            gw.base
        ))
        .bearer_auth(GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(chat_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "provider_unavailable");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("BXNIM0415E"), "{msg}");
    assert!(
        !msg.contains("ibm-apikey-revoked-000"),
        "the key leaked: {msg}"
    );
    assert!(iam.rejected.load(Ordering::SeqCst) >= 1);
    assert!(
        wx.recorded().is_empty(),
        "no token, so nothing may reach watsonx"
    );
    let v: Value = client()
        .get(format!("{}/ready", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["providers"]["watsonx"]["usable"], false, "{v}");
    assert!(!v.to_string().contains("ibm-apikey-revoked-000"));
}

#[tokio::test]
async fn tokens_are_refreshed_before_expiry_and_requests_never_wait() {
    // 16 s tokens: refreshed at half-life (8 s), never used within 5 s of expiry; every
    // exchange after the first takes 2 s.
    let s = setup(Duration::from_secs(16));
    *s.iam.later_delay.lock().unwrap() = Duration::from_secs(2);
    let request = client()
        .post(format!(
            "{}/providers/watsonx/ml/v1/text/chat?version={WX_VERSION}",
            s.gw.base
        ))
        .bearer_auth(GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(chat_body());
    assert_tokens_rotate_without_waiting(request, &s.wx).await;
    assert!(s.iam.book.issued() >= 2);
}
