//! Verifying doubles for Vertex AI: a Google OAuth token endpoint that checks the
//! service-account JWT assertion with the account's public key (RS256, claims, lifetime) and
//! issues short-lived bearer tokens, and a Vertex upstream that serves Gemini and Claude
//! (rawPredict) only to a currently valid token it issued. Wire formats follow Google's docs:
//! Gemini `generateContent` / `streamGenerateContent?alt=sse` and Anthropic-on-Vertex.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{MockUpstream, Recorded, Reply};

pub const PROJECT: &str = "switchyard-test-1";
pub const LOCATION: &str = "us-central1";
pub const SA_EMAIL: &str = "gateway@switchyard-test-1.iam.gserviceaccount.com";
pub const SA_KEY_ID: &str = "0123456789abcdef0123456789abcdef01234567";
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// RSA keys generated once per test binary: the service account's, and an impostor's.
pub fn sa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap())
}

pub fn other_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap())
}

/// A fresh temporary directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a service-account key file as Google issues it (PKCS#8 PEM private key).
pub fn write_key_file(dir: &std::path::Path, key: &RsaPrivateKey, token_uri: &str) -> PathBuf {
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    let file = json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": SA_KEY_ID,
        "private_key": pem.as_str(),
        "client_email": SA_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com"
    });
    let path = dir.join("service-account.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    path
}

/// Bearer tokens a mock identity service issued, with when each stops being valid.
#[derive(Default)]
pub struct TokenBook {
    tokens: Mutex<HashMap<String, Instant>>,
    issued: AtomicUsize,
}

impl TokenBook {
    pub fn issue(&self, prefix: &str, lifetime: Duration) -> String {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let token = format!("{prefix}{n}.{:016x}", fastrand_u64());
        self.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), Instant::now() + lifetime);
        token
    }

    /// Whether `authorization` is `Bearer <a token issued here that has not expired>`.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return false;
        };
        self.tokens
            .lock()
            .unwrap()
            .get(token)
            .is_some_and(|exp| Instant::now() < *exp)
    }

    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

fn fastrand_u64() -> u64 {
    let mut b = [0u8; 8];
    rsa::rand_core::RngCore::fill_bytes(&mut rsa::rand_core::OsRng, &mut b);
    u64::from_le_bytes(b)
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body).replace('+', " ");
    text.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The Google OAuth 2.0 token endpoint (JWT bearer grant, RFC 7523) for one service account.
pub struct GoogleTokenEndpoint {
    pub mock: MockUpstream,
    pub book: Arc<TokenBook>,
    /// Delay added to every answer after the first (to show requests do not wait on refresh).
    pub later_delay: Arc<Mutex<Duration>>,
    pub rejected: Arc<AtomicUsize>,
}

impl GoogleTokenEndpoint {
    /// Accepts assertions signed by `public` for [`SA_EMAIL`]; tokens live `lifetime`.
    pub fn start(public: RsaPublicKey, lifetime: Duration) -> GoogleTokenEndpoint {
        let book = Arc::new(TokenBook::default());
        let later_delay = Arc::new(Mutex::new(Duration::ZERO));
        let rejected = Arc::new(AtomicUsize::new(0));
        let verifier = VerifyingKey::<Sha256>::new(public);
        let (b, d, r) = (book.clone(), later_delay.clone(), rejected.clone());
        let answered = Arc::new(AtomicUsize::new(0));
        let own_uri: Arc<OnceLock<String>> = Arc::default();
        let uri = own_uri.clone();
        let mock = MockUpstream::start(move |req| {
            let expected_aud = uri.get().map(String::as_str).unwrap_or_default();
            let reply = match verify_assertion(req, &verifier, expected_aud) {
                Ok(()) => {
                    let token = b.issue("ya29.mock-", lifetime);
                    let body = json!({"access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer"});
                    Reply::Full(200, vec![], serde_json::to_vec(&body).unwrap())
                }
                Err(why) => {
                    r.fetch_add(1, Ordering::SeqCst);
                    let body = json!({"error": "invalid_grant", "error_description": why});
                    Reply::Full(400, vec![], serde_json::to_vec(&body).unwrap())
                }
            };
            let delay = *d.lock().unwrap();
            if answered.fetch_add(1, Ordering::SeqCst) > 0 && !delay.is_zero() {
                Reply::Delay(delay, Box::new(reply))
            } else {
                reply
            }
        });
        own_uri.set(format!("{}/token", mock.url())).unwrap();
        GoogleTokenEndpoint {
            mock,
            book,
            later_delay,
            rejected,
        }
    }

    pub fn token_uri(&self) -> String {
        format!("{}/token", self.mock.url())
    }
}

/// Checks a token request the way Google does: form fields, RS256 signature over
/// `header.claims` with the account's public key, and the claims.
fn verify_assertion(
    req: &Recorded,
    verifier: &VerifyingKey<Sha256>,
    expected_aud: &str,
) -> Result<(), String> {
    if req.method != "POST" || req.path != "/token" {
        return Err(format!("unexpected {} {}", req.method, req.path));
    }
    if req.header("content-type") != Some("application/x-www-form-urlencoded") {
        return Err("the token request must be form-encoded".into());
    }
    let f = form(&req.body);
    if f.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return Err("grant_type must be the JWT bearer grant".into());
    }
    let jwt = f.get("assertion").ok_or("no assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err("the assertion is not a JWS compact serialization".into());
    };
    let decode = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| "bad base64url".to_string())
    };
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| "bad JWT header")?;
    let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|_| "bad JWT claims")?;
    if header["alg"] != "RS256" || header["typ"] != "JWT" {
        return Err(format!("unexpected JWT header {header}"));
    }
    if header.get("kid").is_some_and(|k| k != SA_KEY_ID) {
        return Err("unknown key id".into());
    }
    let sig = Signature::try_from(decode(s)?.as_slice()).map_err(|_| "bad signature encoding")?;
    verifier
        .verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "Invalid JWT Signature.".to_string())?;
    if claims["iss"] != SA_EMAIL {
        return Err("Invalid issuer".into());
    }
    if claims["aud"] != expected_aud {
        return Err(format!("Invalid audience {}", claims["aud"]));
    }
    if claims["scope"]
        .as_str()
        .is_none_or(|s| !s.split(' ').any(|x| x == SCOPE))
    {
        return Err("missing the cloud-platform scope".into());
    }
    let (iat, exp) = (
        claims["iat"].as_i64().ok_or("no iat")?,
        claims["exp"].as_i64().ok_or("no exp")?,
    );
    let now = unix_now();
    if (iat - now).abs() > 60 || exp <= now || exp - iat > 3600 {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.".into());
    }
    Ok(())
}

// ------------------------------------------------------------------------- Vertex upstream

pub const GEMINI: &str = "gemini-2.0-flash-001";
pub const CLAUDE: &str = "claude-3-5-sonnet-v2@20241022";

/// A `generateContent` answer (odd spacing on purpose: any re-serialisation would show).
pub fn gemini_response() -> Vec<u8> {
    format!(
        "{{\n  \"candidates\": [{{\"content\": {{\"role\": \"model\",\"parts\": [{{\"text\": \"Bonjour \u{1F44B}\"}}]}},\"finishReason\": \"STOP\",\"avgLogprobs\": -0.0125}}],\n  \"usageMetadata\": {{\"promptTokenCount\": 11, \"candidatesTokenCount\": 3, \"totalTokenCount\": 14, \"trafficType\": \"ON_DEMAND\"}},\n  \"modelVersion\": \"{GEMINI}\",  \"createTime\": \"2025-01-01T00:00:00.000000Z\", \"responseId\": \"r-1\"\n}}\n"
    )
    .into_bytes()
}

/// A `streamGenerateContent?alt=sse` stream (CRLF event ends, as Google sends them); usage
/// grows on the way and is final on the last event.
pub fn gemini_sse() -> Vec<u8> {
    let mut s = Vec::new();
    let events = [
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Un"}]}}], "usageMetadata": {"trafficType": "ON_DEMAND"}, "modelVersion": GEMINI, "createTime": "2025-01-01T00:00:00Z", "responseId": "r-2"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ", deux"}]}}], "usageMetadata": {"trafficType": "ON_DEMAND"}, "modelVersion": GEMINI, "createTime": "2025-01-01T00:00:00Z", "responseId": "r-2"}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ", trois ✓"}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 21, "candidatesTokenCount": 7, "totalTokenCount": 28, "trafficType": "ON_DEMAND"}, "modelVersion": GEMINI, "createTime": "2025-01-01T00:00:00Z", "responseId": "r-2"}),
    ];
    for e in events {
        s.extend_from_slice(b"data: ");
        s.extend_from_slice(e.to_string().as_bytes());
        s.extend_from_slice(b"\r\n\r\n");
    }
    s
}

/// `streamGenerateContent` without `alt=sse`: one JSON array, usage on the last element.
pub fn gemini_json_array_stream() -> Vec<u8> {
    format!(
        "[{{\"candidates\": [{{\"content\": {{\"role\": \"model\",\"parts\": [{{\"text\": \"A\"}}]}}}}],\"modelVersion\": \"{GEMINI}\"}}\r\n,\r\n{{\"candidates\": [{{\"content\": {{\"role\": \"model\",\"parts\": [{{\"text\": \"B\"}}]}},\"finishReason\": \"STOP\"}}],\"usageMetadata\": {{\"promptTokenCount\": 4,\"candidatesTokenCount\": 2,\"totalTokenCount\": 6}},\"modelVersion\": \"{GEMINI}\"}}\r\n]"
    )
    .into_bytes()
}

pub const EMBEDDING: &str = "text-embedding-005";

/// A `:predict` answer for text embeddings (token counts per instance in `statistics`).
pub fn embeddings_response() -> Vec<u8> {
    br#"{"predictions":[{"embeddings":{"statistics":{"truncated":false,"token_count":6},"values":[0.0123,-0.045]}},{"embeddings":{"statistics":{"truncated":false,"token_count":3},"values":[0.5,0.25]}}],"metadata":{"billableCharacterCount":37}}"#.to_vec()
}

/// A Claude message from `rawPredict` (Anthropic's format).
pub fn claude_response() -> Vec<u8> {
    br#"{"id":"msg_vrtx_01","type":"message","role":"assistant","model":"claude-3-5-sonnet-v2-20241022","content":[{"type":"text","text":"Hello from Claude on Vertex"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":17,"output_tokens":6}}"#.to_vec()
}

/// A Claude `streamRawPredict` SSE stream (Anthropic's named events).
pub fn claude_sse() -> Vec<u8> {
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_vrtx_02", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet-v2-20241022", "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 23, "output_tokens": 1}}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Streaming "}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Claude ✓"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let mut s = Vec::new();
    for (name, data) in events {
        s.extend_from_slice(format!("event: {name}\ndata: {data}\n\n").as_bytes());
    }
    s
}

fn google_error(code: u16, status: &str, message: &str) -> Reply {
    let body = json!({"error": {"code": code, "message": message, "status": status}});
    Reply::Full(code, vec![], serde_json::to_vec(&body).unwrap())
}

fn pieces(bytes: Vec<u8>, size: usize) -> Vec<Vec<u8>> {
    bytes.chunks(size).map(<[u8]>::to_vec).collect()
}

/// The Vertex AI REST surface for [`PROJECT`] / [`LOCATION`]: accepts only bearer tokens
/// `book` issued that are still valid (401 `UNAUTHENTICATED` otherwise, as Google answers).
pub fn vertex_upstream(book: Arc<TokenBook>) -> MockUpstream {
    MockUpstream::start(move |req| {
        if !book.accepts(req.header("authorization")) {
            return google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            );
        }
        let prefix = format!("/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/");
        let Some(rest) = req.path.strip_prefix(&prefix) else {
            return google_error(404, "NOT_FOUND", "unknown path");
        };
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        if req.method != "POST" || req.header("content-type") != Some("application/json") {
            return google_error(400, "INVALID_ARGUMENT", "expected a JSON POST");
        }
        match rest {
            r if r == format!("google/models/{GEMINI}:generateContent") => {
                if body["contents"].as_array().is_none_or(Vec::is_empty) {
                    return google_error(400, "INVALID_ARGUMENT", "contents is required");
                }
                Reply::Full(
                    200,
                    vec![("x-goog-request-id".into(), "g-1".into())],
                    gemini_response(),
                )
            }
            r if r == format!("google/models/{GEMINI}:streamGenerateContent?alt=sse") => {
                Reply::Stream(pieces(gemini_sse(), 23), Duration::from_millis(1))
            }
            r if r == format!("google/models/{GEMINI}:streamGenerateContent") => {
                Reply::Full(200, vec![], gemini_json_array_stream())
            }
            r if r == format!("google/models/{EMBEDDING}:predict") => {
                Reply::Full(200, vec![], embeddings_response())
            }
            r if r == format!("anthropic/models/{CLAUDE}:rawPredict")
                || r == format!("anthropic/models/{CLAUDE}:streamRawPredict") =>
            {
                if body["anthropic_version"] != "vertex-2023-10-16" || body.get("model").is_some() {
                    return Reply::Full(400, vec![], br#"{"type":"error","error":{"type":"invalid_request_error","message":"anthropic_version: vertex-2023-10-16 is required and model must be in the URL"}}"#.to_vec());
                }
                if r.ends_with(":streamRawPredict") {
                    Reply::Stream(pieces(claude_sse(), 31), Duration::from_millis(1))
                } else {
                    Reply::Full(200, vec![], claude_response())
                }
            }
            _ => google_error(404, "NOT_FOUND", "unknown model or method"),
        }
    })
}
