//! `server.cors`: browser preflights answered before authentication, CORS headers on every
//! response to an allowed origin (answers, errors, streams, passthrough), none for others,
//! and today's behaviour when the section is absent.

mod support;

use reqwest::{Method, Response};
use serde_json::{json, Value};
use support::*;

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.net";

fn cors_gateway(cors: &str) -> (Gateway, MockUpstream) {
    let up = MockUpstream::start(|_| {
        Reply::Full(
            200,
            vec![
                ("access-control-allow-origin".into(), "*".into()),
                ("vary".into(), "Accept-Encoding".into()),
            ],
            br#"{"object":"list","data":[]}"#.to_vec(),
        )
    });
    let gw = gateway(&up.url(), cors);
    (gw, up)
}

const ENABLED: &str =
    "  cors:\n    allowed_origins: [\"https://app.example.com\"]\n    max_age_seconds: 900\n";

async fn preflight(gw: &Gateway, origin: &str, method: &str, headers: &str) -> Response {
    client()
        .request(Method::OPTIONS, format!("{}/v1/chat/completions", gw.base))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .send()
        .await
        .unwrap()
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

fn varies_on_origin(resp: &Response) -> bool {
    resp.headers()
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
}

fn has_no_cors_headers(resp: &Response) {
    for (name, _) in resp.headers() {
        assert!(
            !name.as_str().starts_with("access-control-"),
            "unexpected {name} on {:?}",
            resp.headers()
        );
    }
}

#[tokio::test]
async fn preflight_is_answered_before_authentication() {
    let (gw, _up) = cors_gateway(ENABLED);
    let resp = preflight(
        &gw,
        APP,
        "POST",
        "authorization,content-type,x-stainless-os",
    )
    .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP));
    assert_eq!(
        header(&resp, "access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        header(&resp, "access-control-allow-headers"),
        Some("authorization,content-type,x-stainless-os")
    );
    assert_eq!(header(&resp, "access-control-max-age"), Some("900"));
    assert_eq!(header(&resp, "access-control-allow-credentials"), None);
    assert_eq!(header(&resp, "access-control-expose-headers"), None);
    assert!(varies_on_origin(&resp));
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn disallowed_origin_gets_no_cors_headers() {
    let (gw, _up) = cors_gateway(ENABLED);
    let resp = preflight(&gw, EVIL, "POST", "authorization").await;
    assert_eq!(resp.status(), 403);
    has_no_cors_headers(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "permission_denied");

    // A method outside allowed_methods is refused the same way, even from the allowed origin.
    let resp = preflight(&gw, APP, "DELETE", "authorization").await;
    assert_eq!(resp.status(), 403);
    has_no_cors_headers(&resp);

    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .header("origin", EVIL)
        .bearer_auth(GATEWAY_KEY)
        .json(&json!({"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    has_no_cors_headers(&resp);
    assert!(varies_on_origin(&resp), "caches must key on Origin");
}

#[tokio::test]
async fn without_server_cors_a_preflight_needs_a_key_as_before() {
    let (gw, _up) = cors_gateway("");
    let resp = preflight(&gw, APP, "POST", "authorization").await;
    assert_eq!(resp.status(), 401);
    has_no_cors_headers(&resp);
    let resp = client()
        .get(format!("{}/v1/models", gw.base))
        .header("origin", APP)
        .bearer_auth(GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    has_no_cors_headers(&resp);
    assert!(!varies_on_origin(&resp));
}

#[tokio::test]
async fn allowed_origin_sees_answers_errors_and_streams() {
    let (gw, _up) = cors_gateway(ENABLED);
    let post = |body: Value, key: Option<&'static str>| {
        let mut r = client()
            .post(format!("{}/v1/chat/completions", gw.base))
            .header("origin", APP)
            .json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let chat = json!({"model": "mock-fast", "messages": [{"role": "user", "content": "hi"}]});

    let resp = post(chat.clone(), Some(GATEWAY_KEY)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP));
    let expose = header(&resp, "access-control-expose-headers").unwrap();
    assert!(expose.contains("x-request-id"), "{expose}");
    assert!(
        expose.contains("x-ratelimit-remaining-requests"),
        "{expose}"
    );
    assert!(varies_on_origin(&resp));

    let mut stream = chat.clone();
    stream["stream"] = json!(true);
    let resp = post(stream, Some(GATEWAY_KEY)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP));
    let (body, _) = read_chunks(resp).await;
    assert!(String::from_utf8_lossy(&body).contains("[DONE]"));

    // Errors too, so the page's script can read the OpenAI error envelope.
    let resp = post(chat.clone(), None).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP));
    let mut unknown = chat;
    unknown["model"] = json!("no-such-model");
    let resp = post(unknown, Some(GATEWAY_KEY)).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP));
}

#[tokio::test]
async fn passthrough_answers_carry_the_gateways_policy_not_the_upstreams() {
    let (gw, _up) = cors_gateway(ENABLED);
    let get = |origin: &'static str| {
        client()
            .get(format!("{}/providers/openai/v1/models", gw.base))
            .header("origin", origin)
            .bearer_auth(GATEWAY_KEY)
            .send()
    };
    let resp = get(APP).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP));
    assert!(varies_on_origin(&resp));
    // The upstream's `*` does not leak to an origin the gateway does not allow.
    let resp = get(EVIL).await.unwrap();
    assert_eq!(resp.status(), 200);
    has_no_cors_headers(&resp);
}

#[tokio::test]
async fn credentials_echo_the_origin_and_star_answers_star() {
    let (gw, _up) = cors_gateway(
        "  cors:\n    allowed_origins: [\"https://app.example.com\"]\n    allow_credentials: true\n",
    );
    let resp = preflight(&gw, APP, "POST", "authorization").await;
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP));
    assert_eq!(
        header(&resp, "access-control-allow-credentials"),
        Some("true")
    );

    let (gw, _up) = cors_gateway("  cors:\n    allowed_origins: [\"*\"]\n");
    let resp = preflight(&gw, EVIL, "POST", "authorization").await;
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&resp, "access-control-allow-credentials"), None);
}
