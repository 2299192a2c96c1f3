//! Image URLs on providers that take image bytes only (Bedrock, watsonx, OCI): the gateway
//! fetches them itself from a loopback image server, only when the test config allows
//! loopback and plain http, and the bytes arrive at the providers' mocks as base64. Refused by
//! default with the address class named; redirects to metadata addresses, too many redirects,
//! too large (by Content-Length and by chunks), too slow, not an image (magic bytes), and the
//! host lists refused; URLs kept for the Anthropic API, which fetches them itself; and
//! `ai_proxy_media_fetches_total`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::bedrock::{
    AwsKey, MockBedrock, ACCESS_KEY_ID, MODEL_ID, REGION, SECRET_ACCESS_KEY, SESSION_TOKEN,
};
use support::faults::{chunk, head_chunked, head_len, LAST_CHUNK};
use support::*;
use tokio::io::AsyncWriteExt;

/// A PNG signature and a few bytes (the mocks do not decode images).
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A loopback image server (raw HTTP/1.1, one request per connection), counting requests.
struct Images {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Images {
    fn start() -> Images {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let addr = spawn_server("127.0.0.1", move |mut sock| {
            let h = h.clone();
            async move {
                let mut buf = Vec::new();
                let Ok(Some(req)) = read_request(&mut sock, &mut buf).await else {
                    return;
                };
                h.fetch_add(1, Ordering::SeqCst);
                let mut out = Vec::new();
                match req.path.as_str() {
                    "/cat.png" => {
                        out.extend(head_len(200, "image/png", PNG.len()));
                        out.extend_from_slice(PNG);
                    }
                    "/untyped" => {
                        // No Content-Type: the magic bytes decide.
                        out.extend(
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", PNG.len())
                                .into_bytes(),
                        );
                        out.extend_from_slice(PNG);
                    }
                    "/to-cat" => out.extend(redirect("/cat.png")),
                    "/to-metadata" => {
                        out.extend(redirect("http://169.254.169.254/latest/meta-data/"))
                    }
                    "/loop" => out.extend(redirect("/loop")),
                    "/big.png" => {
                        out.extend(head_len(200, "image/png", 5000));
                        out.extend(vec![0u8; 5000]);
                    }
                    "/chunked-big.png" => {
                        // No Content-Length: the cap is found chunk by chunk.
                        out.extend(head_chunked("image/png"));
                        out.extend(chunk(PNG));
                        for _ in 0..10 {
                            out.extend(chunk(&[0u8; 500]));
                        }
                        out.extend_from_slice(LAST_CHUNK);
                    }
                    "/slow.png" => {
                        tokio::time::sleep(Duration::from_secs(4)).await;
                        out.extend(head_len(200, "image/png", PNG.len()));
                        out.extend_from_slice(PNG);
                    }
                    "/page.html" => {
                        out.extend(head_len(200, "text/html", 6));
                        out.extend_from_slice(b"<html>");
                    }
                    "/fake.png" => {
                        out.extend(head_len(200, "image/png", 15));
                        out.extend_from_slice(b"<html>not png!!");
                    }
                    _ => {
                        out.extend(head_len(404, "text/plain", 2));
                        out.extend_from_slice(b"no");
                    }
                }
                let _ = sock.write_all(&out).await;
                let _ = sock.shutdown().await;
            }
        });
        Images {
            port: addr.port(),
            hits,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn redirect(to: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// What the tests let the fetcher do: loopback over plain http, small and fast images.
const TEST_MEDIA: &str = "media:\n  allow_http: true\n  allow_private_addresses: true\n  max_image_bytes: 4096\n  fetch_timeout_seconds: 1\n";

fn bedrock_providers(url: &str) -> String {
    format!(
        "  bedrock:\n    region: {REGION}\n    endpoint: \"{url}\"\n    auth: {{method: static, config: {{access_key_id: {ACCESS_KEY_ID}, secret_access_key: \"{SECRET_ACCESS_KEY}\", session_token: \"{SESSION_TOKEN}\"}}}}\n"
    )
}

fn bedrock_gateway(mock: &MockBedrock, media: &str, api: &str) -> Gateway {
    gateway_with(
        "",
        &bedrock_providers(&mock.url()),
        &format!("model_mappings:\n  haiku: {{providers: {{bedrock: {{model: \"{MODEL_ID}\"{api}}}}}}}\n{media}"),
    )
}

fn with_images(urls: &[&str]) -> Value {
    let mut content = vec![json!({"type": "text", "text": "What is this?"})];
    for u in urls {
        content.push(json!({"type": "image_url", "image_url": {"url": u}}));
    }
    json!({"model": "haiku", "max_tokens": 20, "messages": [{"role": "user", "content": content}]})
}

async fn post(gw: &Gateway, body: &Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Asserts a 400 naming `param` whose message contains `needle`.
fn assert_refused(status: u16, v: &Value, param: &str, needle: &str) {
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["param"], param, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg}");
}

#[tokio::test]
async fn bedrock_gets_the_fetched_bytes_once_per_request() {
    let images = Images::start();
    let mock = MockBedrock::start(AwsKey::session());
    let gw = bedrock_gateway(&mock, TEST_MEDIA, "");
    let cat = images.url("/cat.png");
    // The same URL twice and one through a redirect: two fetches (plus the redirect hop).
    let (status, v) = post(&gw, &with_images(&[&cat, &cat, &images.url("/to-cat")])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(images.hits(), 3);
    let seen = mock.last();
    assert_eq!(seen.refused, None);
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    let content = &body["messages"][0]["content"];
    for k in 1..=3 {
        assert_eq!(content[k]["image"]["format"], "png", "{body}");
        assert_eq!(content[k]["image"]["source"]["bytes"], b64(PNG), "{body}");
    }
    // A body without a Content-Type is sniffed.
    let (status, v) = post(&gw, &with_images(&[&images.url("/untyped")])).await;
    assert_eq!(status, 200, "{v}");

    let text = metrics_containing(&gw.metrics_url, &["ai_proxy_media_fetches_total{"]).await;
    let ok = text
        .lines()
        .find(|l| l.starts_with("ai_proxy_media_fetches_total{") && l.contains("result=\"ok\""))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(ok.ends_with(" 3"), "{ok}");
}

#[tokio::test]
async fn bedrock_invoke_claude_gets_base64_too() {
    let images = Images::start();
    let mock = MockBedrock::start(AwsKey::session());
    let gw = bedrock_gateway(&mock, TEST_MEDIA, ", api: invoke");
    let (status, v) = post(&gw, &with_images(&[&images.url("/cat.png")])).await;
    assert_eq!(status, 200, "{v}");
    let body: Value = serde_json::from_slice(&mock.last().body).unwrap();
    let source = &body["messages"][0]["content"][1]["source"];
    assert_eq!(source["type"], "base64", "{body}");
    assert_eq!(source["media_type"], "image/png");
    assert_eq!(source["data"], b64(PNG));
}

#[tokio::test]
async fn loopback_is_refused_by_default_with_the_class_named() {
    let images = Images::start();
    let mock = MockBedrock::start(AwsKey::session());
    // Plain http allowed, addresses not: the class is what refuses.
    let gw = bedrock_gateway(&mock, "media:\n  allow_http: true\n", "");
    let (status, v) = post(&gw, &with_images(&[&images.url("/cat.png")])).await;
    assert_refused(
        status,
        &v,
        "messages[0].content[1].image_url",
        "resolves to a loopback address (127.0.0.1), which the gateway does not fetch",
    );
    // A name resolving to loopback is refused by the resolver, before any connection.
    let by_name = format!("http://localhost:{}/cat.png", images.port);
    let (status, v) = post(&gw, &with_images(&[&by_name])).await;
    assert_refused(
        status,
        &v,
        "messages[0].content[1].image_url",
        "a loopback address",
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(!msg.contains("127.0.0.1") && !msg.contains("::1"), "{msg}");
    assert_eq!(images.hits(), 0);
    assert!(mock.seen().is_empty());
    metrics_containing(
        &gw.metrics_url,
        &["reason=\"loopback\",result=\"refused\"} 2"],
    )
    .await;

    // The defaults: https only.
    let gw = bedrock_gateway(&mock, "", "");
    let (status, v) = post(&gw, &with_images(&[&images.url("/cat.png")])).await;
    assert_refused(
        status,
        &v,
        "messages[0].content[1].image_url",
        "only https://",
    );
    let tls = format!("https://127.0.0.1:{}/cat.png", images.port);
    let (status, v) = post(&gw, &with_images(&[&tls])).await;
    assert_refused(
        status,
        &v,
        "messages[0].content[1].image_url",
        "a loopback address (127.0.0.1)",
    );
    let (status, v) = post(
        &gw,
        &with_images(&["https://[::ffff:169.254.169.254]/x.png"]),
    )
    .await;
    assert_refused(
        status,
        &v,
        "messages[0].content[1].image_url",
        "a cloud metadata address",
    );
    assert_eq!(images.hits(), 0);

    // Fetching off: the provider's own refusal, as before.
    let gw = bedrock_gateway(
        &mock,
        "media: {fetch_image_urls: false, allow_http: true, allow_private_addresses: true}\n",
        "",
    );
    let (status, v) = post(&gw, &with_images(&[&images.url("/cat.png")])).await;
    assert_refused(
        status,
        &v,
        "messages[0].content[1].image_url",
        "accepts image bytes only",
    );
    assert_eq!(images.hits(), 0);
}

#[tokio::test]
async fn every_rule_refuses_with_its_reason() {
    let images = Images::start();
    let mock = MockBedrock::start(AwsKey::session());
    let gw = bedrock_gateway(&mock, TEST_MEDIA, "");
    let cases = [
        ("/to-metadata", "a cloud metadata address (169.254.169.254)"),
        ("/loop", "redirects more than 3 times"),
        ("/big.png", "larger than the gateway fetches (4096 bytes)"),
        (
            "/chunked-big.png",
            "larger than the gateway fetches (4096 bytes)",
        ),
        ("/slow.png", "in time (the gateway allows 1 s per image)"),
        (
            "/page.html",
            "did not return a PNG, JPEG, GIF or WebP image",
        ),
        ("/fake.png", "did not return a PNG, JPEG, GIF or WebP image"),
        ("/missing.png", "returned HTTP 404"),
    ];
    for (path, needle) in cases {
        let started = std::time::Instant::now();
        let (status, v) = post(
            &gw,
            &with_images(&["data:image/png;base64,iVBORw0KGgo=", &images.url(path)]),
        )
        .await;
        assert_refused(status, &v, "messages[0].content[2].image_url", needle);
        assert!(started.elapsed() < Duration::from_secs(3), "{path}");
    }
    // The loop: the first URL and three redirects, no more.
    assert!(mock.seen().is_empty());
    let text = metrics_containing(
        &gw.metrics_url,
        &[
            "reason=\"metadata\",result=\"refused\"} 1",
            "reason=\"redirects\",result=\"refused\"} 1",
            "reason=\"too_large\",result=\"refused\"} 2",
            "reason=\"timeout\",result=\"failed\"} 1",
            "reason=\"not_image\",result=\"refused\"} 2",
            "reason=\"status\",result=\"failed\"} 1",
        ],
    )
    .await;
    assert!(!text.contains("result=\"ok\""), "{text}");
}

#[tokio::test]
async fn host_lists_are_applied_to_every_hop() {
    let images = Images::start();
    let mock = MockBedrock::start(AwsKey::session());
    let media = format!("{TEST_MEDIA}  deny_hosts: [localhost]\n");
    let gw = bedrock_gateway(&mock, &media, "");
    let by_name = format!("http://LocalHost.:{}/cat.png", images.port);
    let (status, v) = post(&gw, &with_images(&[&by_name])).await;
    assert_refused(
        status,
        &v,
        "messages[0].content[1].image_url",
        "`localhost` (denied host)",
    );

    let media = format!("{TEST_MEDIA}  allow_hosts: [localhost]\n");
    let gw = bedrock_gateway(&mock, &media, "");
    let (status, v) = post(&gw, &with_images(&[&images.url("/cat.png")])).await;
    assert_refused(
        status,
        &v,
        "messages[0].content[1].image_url",
        "`127.0.0.1` (not an allowed host)",
    );
    let by_name = format!("http://localhost:{}/cat.png", images.port);
    let (status, v) = post(&gw, &with_images(&[&by_name])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(images.hits(), 1);
}

#[tokio::test]
async fn one_request_fetches_a_bounded_number_of_images() {
    let images = Images::start();
    let mock = MockBedrock::start(AwsKey::session());
    let gw = bedrock_gateway(
        &mock,
        &format!("{TEST_MEDIA}  max_images_per_request: 2\n"),
        "",
    );
    // Duplicates count once.
    let (a, b) = (images.url("/cat.png"), images.url("/untyped"));
    let (status, v) = post(&gw, &with_images(&[&a, &b, &a])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(images.hits(), 2);
    let (status, v) = post(&gw, &with_images(&[&a, &b, &images.url("/to-cat")])).await;
    assert_refused(
        status,
        &v,
        "messages[0].content[3].image_url",
        "more than 2 image URLs",
    );
    assert_eq!(
        images.hits(),
        2,
        "nothing fetched for a request over the limit"
    );
    metrics_containing(
        &gw.metrics_url,
        &["reason=\"too_many_images\",result=\"refused\"} 1"],
    )
    .await;
}

#[tokio::test]
async fn watsonx_gets_a_data_url() {
    use support::watsonx::*;
    let images = Images::start();
    let iam = IamEndpoint::start(IBM_API_KEY, Duration::from_secs(3600));
    let wx = watsonx_upstream(iam.book.clone());
    let providers = format!(
        "  watsonx:\n    endpoint: \"{}\"\n    project_id: {WX_PROJECT}\n    auth:\n      method: ibm_iam\n      config: {{api_key: \"{IBM_API_KEY}\", iam_endpoint: \"{}\"}}\n",
        wx.url(),
        iam.mock.url()
    );
    let gw = gateway_with(
        "",
        &providers,
        &format!("model_mappings:\n  haiku: {{providers: {{watsonx: {{model: {GRANITE}}}}}}}\n{TEST_MEDIA}"),
    );
    let (status, v) = post(&gw, &with_images(&[&images.url("/cat.png")])).await;
    assert_eq!(status, 200, "{v}");
    let body = wx.last().json();
    assert_eq!(
        body["messages"][0]["content"][1]["image_url"]["url"],
        format!("data:image/png;base64,{}", b64(PNG)),
        "{body}"
    );
}

#[tokio::test]
async fn oci_gets_a_data_url() {
    use support::oci::{api_key, chat_response, provider_yaml, start_mock};
    let images = Images::start();
    let key = api_key();
    let model = "meta.llama-3.2-90b-vision-instruct";
    let (up, failures) = start_mock(key.public.clone(), key.key_id(), move |_| {
        Reply::Full(200, vec![], chat_response(model, "a cat", 11, 2))
    });
    let gw = gateway_with(
        "",
        &provider_yaml("oci", &up.url(), key, ""),
        &format!(
            "model_mappings:\n  haiku: {{providers: {{oci: {{model: {model}}}}}}}\n{TEST_MEDIA}"
        ),
    );
    let (status, v) = post(&gw, &with_images(&[&images.url("/cat.png")])).await;
    assert_eq!(status, 200, "{v}");
    assert!(failures.lock().unwrap().is_empty());
    let body = up.last().json();
    assert_eq!(
        body["chatRequest"]["messages"][0]["content"][1]["imageUrl"]["url"],
        format!("data:image/png;base64,{}", b64(PNG)),
        "{body}"
    );
}

#[tokio::test]
async fn the_anthropic_api_keeps_the_url() {
    use support::anthropic::{message, ANTHROPIC_KEY};
    let images = Images::start();
    let up = MockUpstream::start(|_| Reply::Full(200, vec![], message("a cat", 5, 2)));
    let gw = gateway_with(
        "",
        &format!(
            "  anthropic:\n    endpoint: \"{}\"\n    auth: {{method: api_key, config: {{api_key: \"{ANTHROPIC_KEY}\"}}}}\n",
            up.url()
        ),
        &format!("model_mappings:\n  haiku: {{providers: {{anthropic: {{model: claude-3-5-haiku-20241022}}}}}}\n{TEST_MEDIA}"),
    );
    let cat = images.url("/cat.png");
    let (status, v) = post(&gw, &with_images(&[&cat])).await;
    assert_eq!(status, 200, "{v}");
    let body = up.last().json();
    assert_eq!(
        body["messages"][0]["content"][1]["source"],
        json!({"type": "url", "url": cat})
    );
    assert_eq!(images.hits(), 0);
}

#[test]
fn switchyard_check_names_bad_media_keys() {
    let yaml = "media:\n  max_images_per_request: 0\n  max_image_bytes: 0\n  fetch_timeout_seconds: 0\n  max_redirects: 11\n  max_concurrent_fetches: 0\n  allow_hosts: [\"https://x.test/\"]\n  deny_hosts: [\"\"]\n";
    let err = switchyard::config::Config::parse(yaml, &|_| None)
        .err()
        .expect("invalid")
        .to_string();
    for needle in [
        "media.max_image_bytes: must be between 1 and",
        "media.fetch_timeout_seconds: must be between 1 and 600",
        "media.max_redirects: must be between 0 and 10",
        "media.max_concurrent_fetches: must be between 1 and",
        "media.max_images_per_request: must be between 1 and 1000",
        "media.allow_hosts[0]: must be a host name",
        "media.deny_hosts[0]: must be a host name",
    ] {
        assert!(err.contains(needle), "{needle}\n{err}");
    }
    let ok = "media:\n  allow_hosts: [\"*.images.example\", \"192.0.2.1\", \"[2001:db8::1]\"]\n  deny_hosts: [evil.example]\n";
    switchyard::config::Config::parse(ok, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let unknown = switchyard::config::Config::parse("media: {fetch_images: true}\n", &|_| None)
        .err()
        .expect("unknown key")
        .to_string();
    assert!(unknown.contains("media"), "{unknown}");
}

/// Anthropic first (it takes URLs), Bedrock as fallback: the image is fetched only when the
/// fallback is tried, once however many attempts follow.
fn anthropic_then_bedrock(anthropic: &MockUpstream, bedrock: &MockBedrock) -> Gateway {
    use support::anthropic::ANTHROPIC_KEY;
    gateway_with(
        "",
        &format!(
            "  anthropic:\n    endpoint: \"{}\"\n    auth: {{method: api_key, config: {{api_key: \"{ANTHROPIC_KEY}\"}}}}\n{}",
            anthropic.url(),
            bedrock_providers(&bedrock.url())
        ),
        &format!(
            "model_mappings:\n  haiku:\n    default_provider: anthropic\n    providers:\n      anthropic: {{model: claude-3-5-haiku-20241022}}\n      bedrock: {{model: \"{MODEL_ID}\"}}\nrouting:\n  fallback: {{enabled: true, providers: []}}\n  retries: {{max_attempts: 2, backoff_initial_ms: 1, backoff_max_ms: 2}}\n{TEST_MEDIA}"
        ),
    )
}

#[tokio::test]
async fn the_fetch_waits_for_a_provider_that_needs_bytes() {
    use support::anthropic::{error_body, message};
    let images = Images::start();
    let bedrock = MockBedrock::start(AwsKey::session());
    let cat = images.url("/cat.png");

    // The primary answers: nothing fetched, the URL goes to Anthropic as it is.
    let ok = MockUpstream::start(|_| Reply::Full(200, vec![], message("a cat", 5, 2)));
    let gw = anthropic_then_bedrock(&ok, &bedrock);
    let (status, v) = post(&gw, &with_images(&[&cat])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        ok.last().json()["messages"][0]["content"][1]["source"]["url"],
        cat
    );
    assert_eq!(images.hits(), 0);

    // The primary is overloaded (twice): Bedrock gets the bytes, fetched once.
    let down = MockUpstream::start(|_| {
        Reply::Full(529, vec![], error_body("overloaded_error", "Overloaded"))
    });
    let gw = anthropic_then_bedrock(&down, &bedrock);
    let (status, v) = post(&gw, &with_images(&[&cat])).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(down.recorded().len(), 2);
    assert_eq!(images.hits(), 1);
    let body: Value = serde_json::from_slice(&bedrock.last().body).unwrap();
    assert_eq!(
        body["messages"][0]["content"][1]["image"]["source"]["bytes"],
        b64(PNG)
    );

    // The fallback's refusal does not hide the primary's failure.
    let (status, v) = post(&gw, &with_images(&[&images.url("/page.html")])).await;
    assert_eq!(status, 529, "{v}");
    assert_eq!(images.hits(), 2);
}
