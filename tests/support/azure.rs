//! Mocks for Azure OpenAI that verify credentials the way Azure does.
//!
//! - [`MockEntra`]: a Microsoft Entra ID (Azure AD) client-credentials token endpoint,
//!   `POST {authority}/{tenant}/oauth2/v2.0/token`, served over TLS (azure_identity only talks
//!   https to an authority) with the test CA in `tests/fixtures/tls`. It checks the form the
//!   way Entra does (grant_type, client_id, client_secret, scope) and issues short-lived
//!   random tokens, answering errors in Entra's shape (`error`, `error_description` with an
//!   AADSTS code, `error_codes`).
//! - [`start_azure_openai`]: a data-plane mock (`/openai/deployments/{d}/...`) that requires
//!   `api-version` and either the `api-key` or a bearer that the mock Entra issued and that has
//!   not expired, answering 401 in Azure's shape otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use super::{MockUpstream, Recorded, Reply};

pub const AZURE_KEY: &str = "az-upstream-key-5b1e";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "0a1b2c3d-app-client";
pub const CLIENT_SECRET: &str = "entra-client-secret~9Q";
pub const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
pub const API_VERSION: &str = "2024-10-21";

/// The test CA that signed the mock's certificate (`ca_file` for the gateway).
pub fn test_ca_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem")
}

/// One token the mock Entra issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// When the token request arrived (before any configured delay).
    pub requested_at: Instant,
    pub issued_at: Instant,
    pub expires_at: Instant,
}

/// One token request the mock Entra refused, with the AADSTS reason.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: u16,
    pub error: String,
}

#[derive(Default)]
pub struct EntraLog {
    pub issued: Vec<Issued>,
    pub refused: Vec<Refused>,
    /// Form fields of every token request (the secret replaced by `<ok>` / `<wrong>`).
    pub forms: Vec<Vec<(String, String)>>,
}

/// A mock Microsoft identity platform token endpoint over TLS on loopback.
pub struct MockEntra {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<EntraLog>>,
}

struct EntraConfig {
    lifetime: Duration,
    delay: Duration,
    counter: AtomicU64,
}

impl MockEntra {
    /// Issues tokens valid for `lifetime`, answering each token request after `delay`.
    pub fn start(lifetime: Duration, delay: Duration) -> MockEntra {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<EntraLog>> = Arc::default();
        let tls = tls_server_config();
        let cfg = Arc::new(EntraConfig {
            lifetime,
            delay,
            counter: AtomicU64::new(0),
        });
        let l = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { return };
                let (tls, log, cfg) = (tls.clone(), l.clone(), cfg.clone());
                std::thread::spawn(move || {
                    let _ = serve_entra(tcp, tls, &log, &cfg);
                });
            }
        });
        MockEntra { addr, log }
    }

    /// The `authority_host` to configure (https, loopback).
    pub fn authority(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.log.lock().unwrap().issued.clone()
    }

    pub fn refused(&self) -> Vec<Refused> {
        self.log.lock().unwrap().refused.clone()
    }

    /// Whether `token` was issued here and is still valid now.
    pub fn check(log: &Mutex<EntraLog>, token: &str) -> Result<(), &'static str> {
        let log = log.lock().unwrap();
        let issued = log
            .issued
            .iter()
            .find(|i| i.token == token)
            .ok_or("unknown token")?;
        if Instant::now() >= issued.expires_at {
            return Err("expired token");
        }
        Ok(())
    }
}

fn tls_server_config() -> Arc<rustls::ServerConfig> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let cert_pem = std::fs::read(dir.join("localhost.pem")).unwrap();
    let key_pem = std::fs::read(dir.join("localhost.key")).unwrap();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&key_pem).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn serve_entra(
    tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    log: &Mutex<EntraLog>,
    cfg: &EntraConfig,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(tls).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let requested_at = Instant::now();
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        first.next().unwrap_or_default().to_owned(),
        first.next().unwrap_or_default().to_owned(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let form: Vec<(String, String)> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let redacted: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| {
            if k == "client_secret" {
                let verdict = if v == CLIENT_SECRET {
                    "<ok>"
                } else {
                    "<wrong>"
                };
                (k.clone(), verdict.to_string())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect();
    log.lock().unwrap().forms.push(redacted);

    // Entra's checks, in its order, with its error codes.
    let refusal: Option<(u16, &str, &str, u32)> = if method != "POST"
        || path != format!("/{TENANT}/oauth2/v2.0/token")
    {
        Some((
            404,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
            90002,
        ))
    } else if !header("content-type")
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
    {
        Some((
            400,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
            900144,
        ))
    } else if field("grant_type") != Some("client_credentials") {
        Some((
            400,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
            70003,
        ))
    } else if field("client_id") != Some(CLIENT_ID) {
        Some((
            400,
            "unauthorized_client",
            "AADSTS700016: Application was not found in the directory.",
            700016,
        ))
    } else if field("client_secret") != Some(CLIENT_SECRET) {
        Some((401, "invalid_client", "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.", 7000215))
    } else if field("scope") != Some(SCOPE) {
        Some((
            400,
            "invalid_scope",
            "AADSTS70011: The provided request must include a 'scope' input parameter.",
            70011,
        ))
    } else {
        None
    };
    std::thread::sleep(cfg.delay);
    let (status, body) = match refusal {
        Some((status, error, description, code)) => {
            log.lock().unwrap().refused.push(Refused {
                status,
                error: description.to_owned(),
            });
            let body = json!({"error": error, "error_description": description,
                "error_codes": [code], "timestamp": "2024-11-24 17:00:00Z",
                "trace_id": "00000000-0000-0000-0000-000000000000",
                "correlation_id": "00000000-0000-0000-0000-000000000000"});
            (status, body)
        }
        None => {
            let n = cfg.counter.fetch_add(1, Ordering::SeqCst);
            let token = format!(
                "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.mock-{n}-{:016x}",
                fastrand::u64(..)
            );
            let issued_at = Instant::now();
            log.lock().unwrap().issued.push(Issued {
                token: token.clone(),
                requested_at,
                issued_at,
                expires_at: issued_at + cfg.lifetime,
            });
            let secs = cfg.lifetime.as_secs();
            let body = json!({"token_type": "Bearer", "expires_in": secs,
                "ext_expires_in": secs, "access_token": token});
            (200, body)
        }
    };
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store, no-cache\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(resp.as_bytes())?;
    s.conn.send_close_notify();
    s.flush()
}

/// How the Azure OpenAI mock authenticates callers.
#[derive(Clone)]
pub enum AzureAuth {
    ApiKey(&'static str),
    /// Bearer tokens issued by this mock Entra.
    Entra(Arc<Mutex<EntraLog>>),
}

/// The Azure OpenAI mock's decision about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted { token: Option<String> },
    Rejected(String),
}

fn azure_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::Full(
        status,
        vec![("apim-request-id".into(), "00000000-mock".into())],
        serde_json::to_vec(&json!({"error": {"code": code, "message": message}})).unwrap(),
    )
}

/// Checks a data-plane request like Azure OpenAI: path, `api-version`, then the credential.
pub fn verify(rec: &Recorded, auth: &AzureAuth) -> Result<Option<String>, (Reply, String)> {
    let (path, query) = rec.path.split_once('?').unwrap_or((&rec.path, ""));
    if !path.starts_with("/openai/") {
        return Err((azure_error(404, "404", "Resource not found"), "path".into()));
    }
    let versions: Vec<&str> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("api-version="))
        .collect();
    if versions.len() != 1 {
        return Err((
            azure_error(
                404,
                "404",
                "Resource not found (api-version missing or repeated)",
            ),
            "api-version".into(),
        ));
    }
    match auth {
        AzureAuth::ApiKey(key) => {
            if rec.header("api-key") == Some(key) && rec.header("authorization").is_none() {
                Ok(None)
            } else {
                Err((azure_error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."), "api-key".into()))
            }
        }
        AzureAuth::Entra(log) => {
            let token = rec
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "));
            let checked = match token {
                None => Err("no bearer"),
                Some(_) if rec.header("api-key").is_some() => Err("api-key alongside bearer"),
                Some(t) => MockEntra::check(log, t),
            };
            match checked {
                Ok(()) => Ok(token.map(str::to_owned)),
                Err(why) => Err((azure_error(401, "401", "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired."), why.into())),
            }
        }
    }
}

/// The Azure OpenAI mock and its verdicts (one per request, in arrival order).
pub struct MockAzure {
    pub upstream: MockUpstream,
    pub verdicts: Arc<Mutex<Vec<(Instant, Verdict)>>>,
}

impl MockAzure {
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.verdicts
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Starts the Azure OpenAI mock; `reply` answers requests that pass [`verify`].
pub fn start_azure_openai(
    auth: AzureAuth,
    reply: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) -> MockAzure {
    let verdicts: Arc<Mutex<Vec<(Instant, Verdict)>>> = Arc::default();
    let v = verdicts.clone();
    let upstream = MockUpstream::start(move |rec| match verify(rec, &auth) {
        Ok(token) => {
            v.lock()
                .unwrap()
                .push((Instant::now(), Verdict::Accepted { token }));
            reply(rec)
        }
        Err((r, why)) => {
            v.lock()
                .unwrap()
                .push((Instant::now(), Verdict::Rejected(why)));
            r
        }
    });
    MockAzure { upstream, verdicts }
}

/// An Azure OpenAI chat completion (OpenAI's shape plus Azure's content-filter fields).
pub fn chat_completion(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Vec<u8> {
    let filters = json!({"hate": {"filtered": false, "severity": "safe"},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": false, "severity": "safe"}});
    serde_json::to_vec(&json!({
        "choices": [{"content_filter_results": filters, "finish_reason": "stop", "index": 0,
            "logprobs": null, "message": {"content": content, "refusal": null, "role": "assistant"}}],
        "created": 1732467600, "id": "chatcmpl-AzureMock1", "model": "gpt-4o-2024-08-06",
        "object": "chat.completion",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filters}],
        "system_fingerprint": "fp_azure_mock",
        "usage": {"completion_tokens": completion_tokens, "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
    }))
    .unwrap()
}

/// An Azure OpenAI chat stream: the prompt-filter event first (empty choices), then OpenAI
/// chunks, the usage chunk, `data: [DONE]`.
pub fn chat_stream(pieces: &[&str], prompt_tokens: u64) -> Vec<u8> {
    let mut out = b"data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n".to_vec();
    out.extend(super::chat_stream(
        "gpt-4o-2024-08-06",
        pieces,
        prompt_tokens,
    ));
    out
}
