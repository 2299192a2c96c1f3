//! OCI Generative AI native passthrough: every request signed by the gateway with the OCI API
//! key (verified by a mock that holds only the public key), bytes unchanged both ways,
//! streams included, usage metered, and the caller's key never reaching OCI.

mod support;

use std::time::Duration;

use support::oci::{self, api_key, other_key, provider_yaml, start_mock};
use support::*;

const MODEL: &str = "meta.llama-3.3-70b-instruct";

/// Changes a recorded request's headers and body before it is replayed.
type Tamper = dyn Fn(&mut Vec<(String, String)>, &mut Vec<u8>);
const CHAT: &str = "/20231130/actions/chat";

fn gateway_for(upstream_url: &str, key: &oci::ApiKey) -> Gateway {
    gateway_with("", &provider_yaml("oci", upstream_url, key, ""), "")
}

fn chat_body(stream: bool) -> String {
    // Odd spacing on purpose: a re-serializing proxy would change these bytes.
    format!(
        "{{\"compartmentId\":\"{}\", \"servingMode\":{{\"servingType\":\"ON_DEMAND\",\"modelId\":\"{MODEL}\"}},\n \"chatRequest\":{{\"apiFormat\":\"GENERIC\",\"isStream\":{stream},\"streamOptions\":{{\"isIncludeUsage\":true}},\"maxTokens\":64,\"messages\":[{{\"role\":\"USER\",\"content\":[{{\"type\":\"TEXT\",\"text\":\"héllo\"}}]}}]}}}}",
        oci::COMPARTMENT
    )
}

#[tokio::test]
async fn chat_is_signed_and_passes_byte_exact_with_the_key_swapped() {
    let key = api_key();
    let response = oci::chat_response(MODEL, "Hi there ✓", 11, 7);
    let r = response.clone();
    let (up, failures) = start_mock(key.public.clone(), key.key_id(), move |rec| {
        assert_eq!((rec.method.as_str(), rec.path.as_str()), ("POST", CHAT));
        Reply::Full(
            200,
            vec![("opc-request-id".into(), "opc-native-1".into())],
            r.clone(),
        )
    });
    let gw = gateway_for(&up.url(), key);
    let body = chat_body(false);
    let resp = client()
        .post(format!("{}/providers/oci{CHAT}", gw.base))
        .header("authorization", format!("Bearer {GATEWAY_KEY}"))
        .header("x-api-key", GATEWAY_KEY)
        .header("content-type", "application/json")
        .header("date", "Mon, 01 Jan 2001 00:00:00 GMT")
        .header("opc-retry-token", "retry-abc")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", failures.lock().unwrap());
    assert_eq!(resp.headers()["opc-request-id"], "opc-native-1");
    assert!(resp.headers().contains_key("x-switchyard-request-id"));
    assert_eq!(
        resp.bytes().await.unwrap().to_vec(),
        response,
        "response bytes changed"
    );

    let seen = up.last();
    assert_eq!(seen.body, body.as_bytes(), "request bytes changed");
    let auth = seen.header("authorization").unwrap();
    assert!(
        auth.starts_with("Signature version=\"1\",keyId=\""),
        "{auth}"
    );
    assert!(
        auth.contains(
            "headers=\"date (request-target) host content-length content-type x-content-sha256\""
        ),
        "{auth}"
    );
    assert_ne!(
        seen.header("date"),
        Some("Mon, 01 Jan 2001 00:00:00 GMT"),
        "the gateway dates the signature itself"
    );
    assert_eq!(
        seen.header("opc-retry-token"),
        Some("retry-abc"),
        "other headers pass"
    );
    seen.assert_host(up.addr);
    assert!(seen.header("x-api-key").is_none());
    seen.assert_no_gateway_key();
    assert!(failures.lock().unwrap().is_empty());

    assert_tokens_metered(&gw, "oci", MODEL, 11, 7).await;
}

#[tokio::test]
async fn streams_pass_chunk_by_chunk_unchanged_and_are_metered() {
    let key = api_key();
    let stream = oci::chat_stream(&["One", " two", " thr✓e"], 9);
    let pieces: Vec<Vec<u8>> = stream.chunks(23).map(<[u8]>::to_vec).collect();
    let (up, failures) = start_mock(key.public.clone(), key.key_id(), move |rec| {
        assert!(String::from_utf8_lossy(&rec.body).contains("\"isStream\":true"));
        Reply::Stream(pieces.clone(), Duration::from_millis(5))
    });
    let gw = gateway_for(&up.url(), key);
    let resp = client()
        .post(format!("{}/transparent/oci{CHAT}", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .header("accept", "text/event-stream")
        .body(chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", failures.lock().unwrap());
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (got, chunks) = read_chunks(resp).await;
    assert_eq!(got, stream, "stream bytes changed");
    assert!(chunks > 1, "the stream was buffered into one piece");
    // The caller sent no content-type: the gateway signs the SDKs' default.
    assert_eq!(up.last().header("content-type"), Some("application/json"));
    up.last().assert_no_gateway_key();
    metrics_containing(
        &gw.metrics_url,
        &[
            r#"provider="oci",type="input"} 9"#,
            r#"provider="oci",type="output"} 3"#,
        ],
    )
    .await;
}

#[tokio::test]
async fn requests_without_a_body_sign_the_generic_headers() {
    let key = api_key();
    let (up, failures) = start_mock(key.public.clone(), key.key_id(), |_| {
        Reply::Full(200, vec![], br#"{"items":[]}"#.to_vec())
    });
    let gw = gateway_for(&up.url(), key);
    let path = "/20231130/models?compartmentId=ocid1.compartment.oc1..x&displayName=a%20b";
    let resp = client()
        .get(format!("{}/providers/oci{path}", gw.base))
        .header("x-api-key", GATEWAY_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", failures.lock().unwrap());
    let seen = up.last();
    assert_eq!(
        seen.path, path,
        "the query is signed and sent as the caller wrote it"
    );
    let auth = seen.header("authorization").unwrap();
    assert!(
        auth.contains("headers=\"date (request-target) host\""),
        "{auth}"
    );
    assert!(seen.header("x-content-sha256").is_none());
}

#[tokio::test]
async fn the_mock_rejects_tampered_signatures_like_oci() {
    let key = api_key();
    let (up, failures) = start_mock(key.public.clone(), key.key_id(), |_| {
        Reply::Full(200, vec![], br#"{"ok":true}"#.to_vec())
    });
    let gw = gateway_for(&up.url(), key);
    let resp = client()
        .post(format!("{}/providers/oci{CHAT}", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .header("content-type", "application/json")
        .body(chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let good = up.last();

    // Replays the gateway's signed request straight to the mock, tampered each way.
    let replay = |tamper: &Tamper| {
        let mut headers = good.headers.clone();
        let mut body = good.body.clone();
        tamper(&mut headers, &mut body);
        let url = format!("{}{}", up.url(), good.path);
        async move {
            let mut req = client().post(url).body(body);
            for (k, v) in headers {
                if k != "host" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, _) = replay(&|_, _| {}).await;
    assert_eq!(status, 200, "an untouched replay verifies");
    let flip_body: &Tamper = &|_, b| {
        let i = b.iter().position(|&c| c == b'6').unwrap();
        b[i] = b'9'; // maxTokens 64 -> 94, same length
    };
    let set = |name: &'static str, f: fn(&str) -> String| {
        move |h: &mut Vec<(String, String)>, _: &mut Vec<u8>| {
            for (k, v) in h.iter_mut() {
                if k == name {
                    *v = f(v);
                }
            }
        }
    };
    let forged_sig = set("authorization", |v| {
        let i = v.find("signature=\"").unwrap() + 11;
        let mut s = v.to_owned();
        let c = if &s[i..i + 1] == "A" { "B" } else { "A" };
        s.replace_range(i..i + 1, c);
        s
    });
    let other_date = set("date", |_| "Sun, 06 Nov 1994 08:49:37 GMT".into());
    let other_type = set("content-type", |_| "text/plain".into());
    let other_key_id = set("authorization", |v| {
        v.replace("keyId=\"ocid1.tenancy", "keyId=\"ocid1.tenancyX")
    });
    for (what, tamper) in [
        ("body", flip_body),
        ("signature", &forged_sig as &Tamper),
        ("date", &other_date),
        ("content-type", &other_type),
        ("keyId", &other_key_id),
    ] {
        let (status, text) = replay(tamper).await;
        assert_eq!(status, 401, "tampered {what} was accepted");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["code"], "NotAuthenticated", "{what}: {text}");
    }
    assert_eq!(
        failures.lock().unwrap().len(),
        5,
        "{:?}",
        failures.lock().unwrap()
    );
}

#[tokio::test]
async fn a_key_oci_does_not_know_gets_ocis_401_unchanged() {
    let (up, failures) = start_mock(api_key().public.clone(), api_key().key_id(), |_| {
        Reply::Full(200, vec![], b"{}".to_vec())
    });
    // The gateway signs with another (valid, self-consistent) key.
    let gw = gateway_for(&up.url(), other_key());
    let resp = client()
        .post(format!("{}/providers/oci{CHAT}", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .body(chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["opc-request-id"], "mock-401");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "NotAuthenticated");
    assert_eq!(failures.lock().unwrap().len(), 1);
}

#[test]
fn switchyard_check_names_each_bad_oci_field() {
    let key = api_key();
    let yaml = |providers: &str| {
        format!("auth: {{keys: [{{user: a, key: {GATEWAY_KEY}}}]}}\nproviders:\n{providers}")
    };
    let ok = yaml(&provider_yaml(
        "oci",
        "https://inference.generativeai.us-chicago-1.oci.oraclecloud.com",
        key,
        "",
    ));
    assert!(switchyard::config::Config::parse(&ok, &|_| None).is_ok());
    let bad = ok
        .replace(oci::TENANCY, "not-an-ocid")
        .replace("endpoint: \"https://", "endpoint: \"ftp://");
    let err = config_errors(&bad);
    assert!(err.contains("providers.oci.endpoint"), "{err}");
    assert!(err.contains("providers.oci.auth.config.tenancy"), "{err}");
    let wrong_fp = ok.replace(&key.fingerprint, &other_key().fingerprint);
    let err = config_errors(&wrong_fp);
    assert!(
        err.contains("providers.oci.auth.config.fingerprint"),
        "{err}"
    );
    assert!(
        err.contains(&key.fingerprint),
        "names the key's real fingerprint: {err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

fn config_errors(yaml: &str) -> String {
    match switchyard::config::Config::parse(yaml, &|_| None) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}
