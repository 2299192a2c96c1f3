//! Verifying doubles for IBM watsonx.ai: an IBM Cloud IAM token endpoint that checks the API
//! key and issues short-lived bearer tokens, and a watsonx.ai upstream that answers
//! `/ml/v1/text/chat` and `/ml/v1/text/chat_stream` (SSE: `id:` / `event: message` / `data:`)
//! only to a currently valid token it issued, as IBM documents.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::vertex::{form, TokenBook};
use super::{MockUpstream, Reply};

pub const IBM_API_KEY: &str = "ibm-apikey-0123456789abcdefXYZ";
pub const WX_PROJECT: &str = "5c3a0e6e-7a8e-4a84-9f4c-2b1d5a4c0f11";
pub const WX_VERSION: &str = "2024-05-31";
pub const GRANITE: &str = "ibm/granite-3-8b-instruct";
const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// IBM Cloud IAM `POST /identity/token` for one API key.
pub struct IamEndpoint {
    pub mock: MockUpstream,
    pub book: Arc<TokenBook>,
    /// Delay added to every answer after the first.
    pub later_delay: Arc<Mutex<Duration>>,
    pub rejected: Arc<AtomicUsize>,
}

impl IamEndpoint {
    pub fn start(api_key: &'static str, lifetime: Duration) -> IamEndpoint {
        let book = Arc::new(TokenBook::default());
        let later_delay = Arc::new(Mutex::new(Duration::ZERO));
        let rejected = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (b, d, r) = (book.clone(), later_delay.clone(), rejected.clone());
        let mock = MockUpstream::start(move |req| {
            let f = form(&req.body);
            let reply = if req.method != "POST" || req.path != "/identity/token" {
                Reply::Full(
                    404,
                    vec![],
                    br#"{"errorCode":"BXNIM0102E","errorMessage":"not found"}"#.to_vec(),
                )
            } else if req.header("content-type") != Some("application/x-www-form-urlencoded")
                || f.get("grant_type").map(String::as_str) != Some(APIKEY_GRANT)
            {
                r.fetch_add(1, Ordering::SeqCst);
                Reply::Full(400, vec![], br#"{"errorCode":"BXNIM0109E","errorMessage":"Property missing or empty. Property name(s): 'grant_type'"}"#.to_vec())
            } else if f.get("apikey").map(String::as_str) != Some(api_key) {
                r.fetch_add(1, Ordering::SeqCst);
                Reply::Full(400, vec![], br#"{"errorCode":"BXNIM0415E","errorMessage":"Provided API key could not be found.","context":{"requestId":"req-1"}}"#.to_vec())
            } else {
                let token = b.issue("eyJraWQiOiJtb2NrIn0.iam-", lifetime);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let body = json!({
                    "access_token": token, "refresh_token": "not_supported", "ims_user_id": 1,
                    "token_type": "Bearer", "expires_in": lifetime.as_secs(),
                    "expiration": now + lifetime.as_secs(), "scope": "ibm openid"
                });
                Reply::Full(200, vec![], serde_json::to_vec(&body).unwrap())
            };
            let delay = *d.lock().unwrap();
            if answered.fetch_add(1, Ordering::SeqCst) > 0 && !delay.is_zero() {
                Reply::Delay(delay, Box::new(reply))
            } else {
                reply
            }
        });
        IamEndpoint {
            mock,
            book,
            later_delay,
            rejected,
        }
    }
}

/// A `/ml/v1/text/chat` answer (odd spacing on purpose).
pub fn chat_response() -> Vec<u8> {
    format!("{{\"id\": \"chatcmpl-wx-1\", \"model_id\": \"{GRANITE}\", \"model\": \"{GRANITE}\", \"model_version\": \"1.1.0\",\n \"created\": 1735689600, \"created_at\": \"2025-01-01T00:00:00.000Z\",\n \"choices\": [{{\"index\": 0, \"message\": {{\"role\": \"assistant\", \"content\": \"Hallo aus watsonx – ✓\"}}, \"finish_reason\": \"stop\"}}],\n \"usage\": {{\"completion_tokens\": 8, \"prompt_tokens\": 30, \"total_tokens\": 38}}}}").into_bytes()
}

/// A `/ml/v1/text/chat_stream` SSE stream; the last event carries `finish_reason` and usage.
pub fn chat_sse() -> Vec<u8> {
    let chunk = |delta: Value, finish: Value, usage: Option<Value>| {
        let mut c = json!({"id": "chatcmpl-wx-2", "object": "chat.completion.chunk", "model_id": GRANITE, "model": GRANITE,
            "choices": [{"index": 0, "finish_reason": finish, "delta": delta}], "created": 1735689600,
            "model_version": "1.1.0", "created_at": "2025-01-01T00:00:00.000Z"});
        if let Some(u) = usage {
            c["usage"] = u;
        }
        c
    };
    let events = [
        chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            None,
        ),
        chunk(json!({"content": "Eins,"}), Value::Null, None),
        chunk(json!({"content": " zwei ✓"}), Value::Null, None),
        chunk(
            json!({}),
            json!("stop"),
            Some(json!({"completion_tokens": 5, "prompt_tokens": 26, "total_tokens": 31})),
        ),
    ];
    let mut s = Vec::new();
    for (i, e) in events.iter().enumerate() {
        s.extend_from_slice(format!("id: {}\nevent: message\ndata: {e}\n\n", i + 1).as_bytes());
    }
    s
}

fn wx_error(status: u16, code: &str, message: &str) -> Reply {
    let body = json!({"errors": [{"code": code, "message": message, "more_info": "https://cloud.ibm.com/apidocs/watsonx-ai"}],
        "trace": "0123456789abcdef", "status_code": status});
    Reply::Full(status, vec![], serde_json::to_vec(&body).unwrap())
}

/// The watsonx.ai REST surface: bearer tokens `book` issued and still valid only.
pub fn watsonx_upstream(book: Arc<TokenBook>) -> MockUpstream {
    MockUpstream::start(move |req| {
        if !book.accepts(req.header("authorization")) {
            return wx_error(
                401,
                "authentication_token_expired",
                "Failed to authenticate the request due to an expired token",
            );
        }
        let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
        if !query
            .split('&')
            .any(|kv| kv.starts_with("version=") && kv.len() > 8)
        {
            return wx_error(400, "missing_version", "Missing version query parameter");
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        if body["project_id"] != WX_PROJECT && body.get("space_id").is_none() {
            return wx_error(
                400,
                "invalid_request_entity",
                "project_id or space_id is required",
            );
        }
        if body["model_id"] != GRANITE {
            return wx_error(404, "model_not_supported", "Model not supported");
        }
        match (req.method.as_str(), path) {
            ("POST", "/ml/v1/text/chat") => Reply::Full(200, vec![], chat_response()),
            ("POST", "/ml/v1/text/chat_stream") => Reply::Stream(
                chat_sse().chunks(19).map(<[u8]>::to_vec).collect(),
                Duration::from_millis(1),
            ),
            _ => wx_error(404, "not_found", "unknown path"),
        }
    })
}
