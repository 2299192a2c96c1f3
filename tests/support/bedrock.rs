//! A mock AWS Bedrock runtime on loopback that verifies AWS Signature Version 4 the way AWS
//! does, with a verifier written here from the published algorithm (sha2 + hmac; it shares
//! no code with the gateway's `aws-sigv4` signer), and answers in Bedrock's wire formats:
//! InvokeModel / Converse JSON, and `application/vnd.amazon.eventstream` streams whose frames
//! (encoded here too, with their own CRC-32) are sent split across chunks.
//!
//! A request whose signature does not verify gets Bedrock's 403 (`x-amzn-ErrorType:
//! InvalidSignatureException`, body `{"message": ...}`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{read_request, spawn_server, Recorded};

pub const REGION: &str = "us-east-1";
pub const SERVICE: &str = "bedrock";
pub const ACCESS_KEY_ID: &str = "AKIASWITCHYARDTEST01";
pub const SECRET_ACCESS_KEY: &str = "tEsT/sEcReT+kEy/0123456789abcdefghijklmn";
pub const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEMockSessionToken//+==";
/// A model id with `:` (sent percent-encoded by the AWS SDKs).
pub const MODEL_ID: &str = "anthropic.claude-3-haiku-20240307-v1:0";
pub const MODEL_PATH: &str = "anthropic.claude-3-haiku-20240307-v1%3A0";

/// The AWS credentials the mock accepts.
#[derive(Debug, Clone)]
pub struct AwsKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Required (and must match) when set.
    pub session_token: Option<String>,
}

impl AwsKey {
    pub fn long_term() -> AwsKey {
        AwsKey {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: SECRET_ACCESS_KEY.into(),
            session_token: None,
        }
    }
    pub fn session() -> AwsKey {
        AwsKey {
            session_token: Some(SESSION_TOKEN.into()),
            ..AwsKey::long_term()
        }
    }
}

// ------------------------------------------------------------------ SigV4, from the spec

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// RFC 3986 percent-encoding of every byte but the unreserved ones (and `/` if `keep_slash`).
fn uri_encode(s: &[u8], keep_slash: bool) -> String {
    let mut out = String::new();
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if let (b'%', Some(Ok(v))) = (b[i], hex.map(|h| u8::from_str_radix(h, 16))) {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The canonical URI of a non-S3 service: the path as received (still percent-encoded),
/// dot segments and empty segments removed, then URI-encoded once more (so `%3A` → `%253A`).
pub fn canonical_uri(raw_path: &str) -> String {
    let segments: Vec<&str> = raw_path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .fold(Vec::new(), |mut acc, s| {
            if s == ".." {
                acc.pop();
            } else {
                acc.push(s);
            }
            acc
        });
    let mut path = format!("/{}", segments.join("/"));
    if raw_path.ends_with('/') && path.len() > 1 {
        path.push('/');
    }
    uri_encode(path.as_bytes(), true)
}

/// The canonical query: each name and value decoded then RFC 3986-encoded, sorted.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Why AWS would refuse a request's signature: (`x-amzn-ErrorType`, message).
pub type Refusal = (&'static str, String);

/// Verifies a request's SigV4 `Authorization` like AWS: the credential scope, the clock, the
/// signed headers (host and x-amz-date required, the session token when the key has one) and
/// the signature over the canonical request recomputed from the bytes received.
pub fn verify_sigv4(
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    key: &AwsKey,
) -> Result<(), Refusal> {
    let get_all = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let one = |name: &str| get_all(name).first().copied();
    let Some(auth) = one("authorization") else {
        return Err((
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".into(),
        ));
    };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err((
            "IncompleteSignatureException",
            format!("Authorization header requires 'Credential' parameter. Authorization={auth}"),
        ));
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').unwrap_or(("", ""));
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err((
            "IncompleteSignatureException",
            "Authorization header requires Credential, SignedHeaders and Signature".into(),
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != key.access_key_id {
        return Err((
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".into(),
        ));
    }
    if scope[2] != REGION || scope[3] != SERVICE || scope[4] != "aws4_request" {
        return Err((
            "InvalidSignatureException",
            format!("Credential should be scoped to a valid region and service ({credential})"),
        ));
    }
    let Some(amz_date) = one("x-amz-date") else {
        return Err((
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                .into(),
        ));
    };
    if amz_date.len() != 16 || &amz_date[..8] != scope[1] {
        return Err((
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP".into(),
        ));
    }
    let skew = (parse_amz_date(amz_date).unwrap_or(0) - unix_now()).abs();
    if skew > 300 {
        return Err((
            "InvalidSignatureException",
            "Signature expired: the request time is more than 5 minutes from now".into(),
        ));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    if sorted != names || !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return Err((
            "InvalidSignatureException",
            "SignedHeaders must be sorted and include host and x-amz-date".into(),
        ));
    }
    match (&key.session_token, one("x-amz-security-token")) {
        (Some(want), Some(got)) if want == got => {
            if !names.contains(&"x-amz-security-token") {
                return Err((
                    "InvalidSignatureException",
                    "x-amz-security-token must be signed".into(),
                ));
            }
        }
        (None, None) => {}
        _ => {
            return Err((
                "UnrecognizedClientException",
                "The security token included in the request is invalid.".into(),
            ))
        }
    }
    let payload_hash = sha256_hex(body);
    if let Some(declared) = one("x-amz-content-sha256") {
        if declared != payload_hash {
            return Err((
                "InvalidSignatureException",
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ));
        }
    }
    let (canonical, expected) = signature_for(&SigInput {
        method,
        target,
        headers,
        signed_headers,
        payload_hash: &payload_hash,
        amz_date,
        region: REGION,
        service: SERVICE,
        secret: &key.secret_access_key,
    })
    .map_err(|missing| {
        (
            "InvalidSignatureException",
            format!("signed header {missing} is missing"),
        )
    })?;
    if expected != signature {
        return Err((
            "InvalidSignatureException",
            format!(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. Consult the service \
                 documentation for details.\n\nThe Canonical String for this request should have \
                 been\n'{canonical}'\n"
            ),
        ));
    }
    Ok(())
}

/// What a SigV4 signature covers.
pub struct SigInput<'a> {
    pub method: &'a str,
    /// Path and query as on the request line.
    pub target: &'a str,
    pub headers: &'a [(String, String)],
    /// `a;b;c`, sorted, lower-case.
    pub signed_headers: &'a str,
    pub payload_hash: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub secret: &'a str,
}

/// The canonical request and the signature AWS expects (Err: a signed header is missing).
pub fn signature_for(i: &SigInput<'_>) -> Result<(String, String), String> {
    let (path, query) = i.target.split_once('?').unwrap_or((i.target, ""));
    let mut canonical = format!(
        "{}\n{}\n{}\n",
        i.method,
        canonical_uri(path),
        canonical_query(query)
    );
    for name in i.signed_headers.split(';') {
        let values: Vec<String> = i
            .headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() {
            return Err(name.to_owned());
        }
        canonical.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    canonical.push_str(&format!("\n{}\n{}", i.signed_headers, i.payload_hash));
    let date = &i.amz_date[..8];
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{date}/{}/{}/aws4_request\n{}",
        i.amz_date,
        i.region,
        i.service,
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac(format!("AWS4{}", i.secret).as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, i.region.as_bytes());
    let k_service = hmac(&k_region, i.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));
    Ok((canonical, signature))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `YYYYMMDDTHHMMSSZ` to Unix seconds.
fn parse_amz_date(s: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (h, mi, se) = (n(9..11)?, n(11..13)?, n(13..15)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

// ------------------------------------------------------------------ event stream encoding

/// CRC-32 (IEEE), bit by bit: deliberately not the gateway's table-driven implementation.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One event stream message with string headers.
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = (16 + h.len() + payload.len()) as u32;
    let mut m = Vec::new();
    m.extend_from_slice(&total.to_be_bytes());
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let c = crc32(&m);
    m.extend_from_slice(&c.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let c = crc32(&m);
    m.extend_from_slice(&c.to_be_bytes());
    m
}

pub fn event(event_type: &str, payload: &serde_json::Value) -> Vec<u8> {
    frame(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// InvokeModelWithResponseStream for an Anthropic model: `chunk` events whose `bytes` are the
/// Anthropic stream events; the last carries `amazon-bedrock-invocationMetrics`.
pub fn invoke_stream_body(input_tokens: u64, words: &[&str]) -> Vec<u8> {
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_bdrk_1", "type": "message", "role": "assistant",
            "model": "claude-3-haiku-20240307", "content": [], "stop_reason": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ];
    for w in words {
        events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}));
    }
    let out = words.len() as u64;
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": out}}),
    );
    events.push(json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": input_tokens, "outputTokenCount": out, "invocationLatency": 321, "firstByteLatency": 45}}));
    let mut body = Vec::new();
    for e in events {
        body.extend(event(
            "chunk",
            &json!({"bytes": b64(e.to_string().as_bytes()), "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"}),
        ));
    }
    body
}

/// ConverseStream events, usage in the final `metadata` event.
pub fn converse_stream_body(input_tokens: u64, words: &[&str]) -> Vec<u8> {
    let mut body = event("messageStart", &json!({"role": "assistant", "p": "abc"}));
    for w in words {
        body.extend(event(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": w}, "p": "abcdef"}),
        ));
    }
    body.extend(event("contentBlockStop", &json!({"contentBlockIndex": 0})));
    body.extend(event("messageStop", &json!({"stopReason": "end_turn"})));
    let out = words.len() as u64;
    body.extend(event(
        "metadata",
        &json!({"usage": {"inputTokens": input_tokens, "outputTokens": out, "totalTokens": input_tokens + out},
                "metrics": {"latencyMs": 77}}),
    ));
    body
}

/// An InvokeModel response body (Anthropic Messages on Bedrock).
pub fn invoke_body(input_tokens: u64, output_tokens: u64) -> Vec<u8> {
    // Odd spacing on purpose: a re-serializing proxy would change these bytes.
    format!(
        "{{\"id\":\"msg_bdrk_2\", \"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-haiku-20240307\",\n \
         \"content\":[{{\"type\":\"text\",\"text\":\"Bonjour \\u00e9\"}}],\"stop_reason\":\"end_turn\",\
         \"stop_sequence\":null,\"usage\":{{\"input_tokens\":{input_tokens},\"output_tokens\":{output_tokens}}}}}"
    )
    .into_bytes()
}

/// A Converse response body.
pub fn converse_body(input_tokens: u64, output_tokens: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "Hello from Converse"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": input_tokens + output_tokens},
        "metrics": {"latencyMs": 42}
    }))
    .unwrap()
}

// ------------------------------------------------------------------ the mock server

/// One request as the mock received it, and what it decided.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target exactly as on the request line.
    pub target: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// None when the signature verified.
    pub refused: Option<Refusal>,
    /// The response body bytes the mock sent.
    pub sent: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// Every header and the body, to search for leaked secrets.
    pub fn everything(&self) -> String {
        let mut s = format!("{} {}\n", self.method, self.target);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push_str(&String::from_utf8_lossy(&self.body));
        s
    }
}

/// How a response is written.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Chunked, in pieces of these sizes (cycled), with a pause between them; else
    /// Content-Length in one write.
    pub pieces: Option<(Vec<usize>, Duration)>,
}

pub struct MockBedrock {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockBedrock {
    /// Starts the mock accepting `key`.
    pub fn start(key: AwsKey) -> MockBedrock {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let addr = spawn_server("127.0.0.1", move |sock| {
            let (log, key) = (log.clone(), key.clone());
            async move {
                let _ = serve(sock, log, key).await;
            }
        });
        MockBedrock { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the mock received no request")
    }
}

/// Bedrock's answer to a verified request, by operation.
pub fn answer(method: &str, target: &str) -> Answer {
    let path = target.split('?').next().unwrap_or(target);
    let json = |status, body: Vec<u8>, extra: Vec<(String, String)>| {
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-amzn-requestid".to_string(), "7d6a1f0e-mock".to_string()),
        ];
        headers.extend(extra);
        Answer {
            status,
            headers,
            body,
            pieces: None,
        }
    };
    let stream = |body: Vec<u8>| Answer {
        status: 200,
        headers: vec![
            (
                "content-type".into(),
                "application/vnd.amazon.eventstream".into(),
            ),
            ("x-amzn-requestid".into(), "7d6a1f0e-mock-stream".into()),
            (
                "x-amzn-bedrock-content-type".into(),
                "application/json".into(),
            ),
        ],
        body,
        // Odd sizes so frames (and their preludes and CRCs) straddle chunk boundaries.
        pieces: Some((vec![1, 7, 13, 100, 5, 64, 3], Duration::from_millis(2))),
    };
    let op = path
        .strip_prefix("/model/")
        .and_then(|r| r.split_once('/'))
        .map(|(_, op)| op);
    match (method, op) {
        ("POST", Some("invoke")) => json(
            200,
            invoke_body(11, 4),
            vec![
                ("x-amzn-bedrock-input-token-count".into(), "11".into()),
                ("x-amzn-bedrock-output-token-count".into(), "4".into()),
                ("x-amzn-bedrock-invocation-latency".into(), "123".into()),
            ],
        ),
        ("POST", Some("converse")) => json(200, converse_body(13, 6), vec![]),
        ("POST", Some("invoke-with-response-stream")) => {
            stream(invoke_stream_body(17, &["Hello", " from", " a", " stream"]))
        }
        ("POST", Some("converse-stream")) => {
            stream(converse_stream_body(19, &["One", " two", " three"]))
        }
        _ => json(
            404,
            br#"{"message":"Unknown operation"}"#.to_vec(),
            vec![(
                "x-amzn-errortype".into(),
                "UnknownOperationException:http://internal.amazon.com/coral/com.amazon.coral.service/".into(),
            )],
        ),
    }
}

async fn serve(
    mut sock: TcpStream,
    log: Arc<Mutex<Vec<Seen>>>,
    key: AwsKey,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(Recorded {
        method,
        path: target,
        headers,
        body,
    }) = read_request(&mut sock, &mut buf).await?
    {
        let refused = verify_sigv4(&method, &target, &headers, &body, &key).err();
        let answer = match &refused {
            None => answer(&method, &target),
            Some((kind, message)) => Answer {
                status: 403,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    (
                        "x-amzn-errortype".into(),
                        format!(
                            "{kind}:http://internal.amazon.com/coral/com.amazon.coral.service/"
                        ),
                    ),
                ],
                body: serde_json::to_vec(&json!({"message": message})).unwrap(),
                pieces: None,
            },
        };
        log.lock().unwrap().push(Seen {
            method,
            target,
            headers,
            body,
            refused,
            sent: answer.body.clone(),
        });
        write_answer(&mut sock, answer).await?;
    }
    Ok(())
}

async fn write_answer(sock: &mut TcpStream, a: Answer) -> std::io::Result<()> {
    let reason = match a.status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", a.status);
    for (k, v) in &a.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match a.pieces {
        None => {
            head.push_str(&format!("content-length: {}\r\n\r\n", a.body.len()));
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(&a.body).await?;
        }
        Some((sizes, pause)) => {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
            sock.write_all(head.as_bytes()).await?;
            let mut rest = &a.body[..];
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at((*size).min(rest.len()));
                rest = tail;
                sock.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                sock.write_all(piece).await?;
                sock.write_all(b"\r\n").await?;
                sock.flush().await?;
                tokio::time::sleep(pause).await;
            }
            sock.write_all(b"0\r\n\r\n").await?;
        }
    }
    sock.flush().await
}
