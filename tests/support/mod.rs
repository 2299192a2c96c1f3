//! Test support: a scriptable mock upstream speaking HTTP/1.1 on loopback, free ports, and
//! an in-process gateway built from a YAML config.
//!
//! The mock is raw tokio so tests control exactly how bytes leave it: split points, pauses,
//! and connections cut mid-body. Response bodies follow OpenAI's documented wire format.

#![allow(dead_code)]

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod faults;
pub mod oci;
pub mod vertex;
pub mod watsonx;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard::config::Config;
use switchyard::server::GatewayHandle;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const GATEWAY_KEY: &str = "sk-gw-alice-0123456789";
pub const UPSTREAM_KEY: &str = "sk-upstream-secret-42";

/// A free loopback port (bound and released).
/// A port free now and not handed out before in this test process (the kernel may give the
/// same ephemeral port to two binds in a row once the first listener is closed).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// One request as the mock upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    /// Every header value and the body, to search for leaked secrets.
    pub fn everything(&self) -> String {
        let mut s = format!("{} {}\n", self.method, self.path);
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push_str(&String::from_utf8_lossy(&self.body));
        s
    }
    /// Asserts that the caller's gateway key is nowhere in this request.
    pub fn assert_no_gateway_key(&self) {
        let all = self.everything();
        assert!(
            !all.contains(GATEWAY_KEY),
            "the gateway key reached the upstream:\n{all}"
        );
    }
    /// Asserts that the `Host` header names the upstream at `addr`.
    pub fn assert_host(&self, addr: SocketAddr) {
        assert_eq!(self.header("host"), Some(addr.to_string().as_str()));
    }
}

/// What the mock sends back for one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status, extra headers, body (sent with Content-Length).
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// A 200 `text/event-stream` body sent in these pieces (chunked), pausing between them.
    Stream(Vec<Vec<u8>>, Duration),
    /// Like Stream but the connection is cut after the pieces, without the final chunk.
    StreamCut(Vec<Vec<u8>>),
    /// Waits, then answers.
    Delay(Duration, Box<Reply>),
}

type Script = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A mock upstream on loopback that records requests and answers from a script.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

impl MockUpstream {
    pub fn start(script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> MockUpstream {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let script: Script = Arc::new(script);
        let recs = requests.clone();
        let addr = spawn_server("127.0.0.1", move |sock| {
            let (recs, script) = (recs.clone(), script.clone());
            async move {
                let _ = serve(sock, recs, script).await;
            }
        });
        MockUpstream { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.recorded()
            .pop()
            .expect("the upstream received no request")
    }
}

/// A server on `ip` (port chosen by the system) running on its own thread and runtime, so it
/// outlives (and never blocks) the test's runtime; each connection is handed to `serve` on a
/// task of its own.
pub fn spawn_server<F, Fut>(ip: &str, serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let std_listener = StdListener::bind((ip, 0)).unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock));
            }
        });
    });
    addr
}

async fn serve(
    mut sock: TcpStream,
    recs: Arc<Mutex<Vec<Recorded>>>,
    script: Script,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(rec) = read_request(&mut sock, &mut buf).await? {
        let reply = script(&rec);
        recs.lock().unwrap().push(rec);
        if !write_reply(&mut sock, reply).await? {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads one HTTP/1.1 request: its head, then a Content-Length or chunked body. `buf` holds
/// bytes read but not used yet (the next request on a kept-alive connection): pass the same
/// one for every request of a connection. None when the connection ends first (a chunked body
/// cut short is returned as far as it came).
pub async fn read_request<S: AsyncRead + Unpin>(
    sock: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Recorded>> {
    // Read one request head.
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if !read_more(sock, buf).await? {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    buf.drain(..head_end + 4);
    let body = if chunked {
        read_chunked(sock, buf).await?
    } else {
        while buf.len() < len {
            if !read_more(sock, buf).await? {
                return Ok(None);
            }
        }
        buf.drain(..len).collect()
    };
    Ok(Some(Recorded {
        method,
        path,
        headers,
        body,
    }))
}

async fn read_chunked<S: AsyncRead + Unpin>(
    sock: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if !read_more(sock, buf).await? {
                return Ok(body);
            }
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&buf[..line_end]).trim(), 16)
            .unwrap_or(0);
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            if !read_more(sock, buf).await? {
                return Ok(body);
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
        if size == 0 {
            return Ok(body);
        }
    }
}

/// Reads what the peer sent next into `buf`; false when the connection has ended.
async fn read_more<S: AsyncRead + Unpin>(sock: &mut S, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut tmp = [0u8; 65536];
    let n = sock.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n > 0)
}

/// Writes the reply; returns whether the connection may be reused.
pub fn write_reply<S: AsyncWrite + Unpin + Send>(
    sock: &mut S,
    reply: Reply,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<bool>> + Send + '_>> {
    Box::pin(async move {
        match reply {
            Reply::Delay(d, inner) => {
                tokio::time::sleep(d).await;
                write_reply(sock, *inner).await
            }
            Reply::Full(status, headers, body) => {
                let mut head = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n",
                    reason(status),
                    body.len()
                );
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    head.push_str("content-type: application/json\r\n");
                }
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                sock.write_all(head.as_bytes()).await?;
                sock.write_all(&body).await?;
                sock.flush().await?;
                Ok(true)
            }
            Reply::Stream(pieces, pause) => {
                stream_head(sock).await?;
                for p in pieces {
                    write_chunk(sock, &p).await?;
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                sock.write_all(b"0\r\n\r\n").await?;
                Ok(true)
            }
            Reply::StreamCut(pieces) => {
                stream_head(sock).await?;
                for p in pieces {
                    write_chunk(sock, &p).await?;
                }
                sock.flush().await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(false)
            }
        }
    })
}

async fn stream_head<S: AsyncWrite + Unpin>(sock: &mut S) -> std::io::Result<()> {
    sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\nx-request-id: req_upstream_1\r\n\r\n")
        .await
}

async fn write_chunk<S: AsyncWrite + Unpin>(sock: &mut S, p: &[u8]) -> std::io::Result<()> {
    if p.is_empty() {
        return Ok(());
    }
    sock.write_all(format!("{:x}\r\n", p.len()).as_bytes())
        .await?;
    sock.write_all(p).await?;
    sock.write_all(b"\r\n").await?;
    sock.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An OpenAI `chat.completion` body.
pub fn chat_completion(
    model: &str,
    content: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": "chatcmpl-upstream1", "object": "chat.completion", "created": 1717000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
        "system_fingerprint": "fp_test"
    }))
    .unwrap()
}

/// An OpenAI chat stream (with the usage chunk, as when include_usage is set) as one byte string.
pub fn chat_stream(model: &str, pieces: &[&str], prompt_tokens: u64) -> Vec<u8> {
    let mut s = Vec::new();
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        serde_json::json!({"id": "chatcmpl-upstream2", "object": "chat.completion.chunk", "created": 1717000000,
            "model": model, "system_fingerprint": "fp_test",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
    };
    let mut events = vec![chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        serde_json::Value::Null,
    )];
    for p in pieces {
        events.push(chunk(
            serde_json::json!({"content": p}),
            serde_json::Value::Null,
        ));
    }
    events.push(chunk(serde_json::json!({}), serde_json::json!("stop")));
    events.push(serde_json::json!({"id": "chatcmpl-upstream2", "object": "chat.completion.chunk", "created": 1717000000,
        "model": model, "system_fingerprint": "fp_test", "choices": [],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": pieces.len(), "total_tokens": prompt_tokens + pieces.len() as u64}}));
    for e in events {
        s.extend_from_slice(b"data: ");
        s.extend_from_slice(e.to_string().as_bytes());
        s.extend_from_slice(b"\n\n");
    }
    s.extend_from_slice(b"data: [DONE]\n\n");
    s
}

/// A running in-process gateway and its addresses.
pub struct Gateway {
    pub base: String,
    pub metrics_url: String,
    pub handle: GatewayHandle,
}

/// Starts a gateway whose `openai` provider points at `upstream_url`; `server_extra` is
/// appended under `server:` (indented two spaces).
pub fn gateway(upstream_url: &str, server_extra: &str) -> Gateway {
    let providers = format!(
        r#"  openai:
    endpoint: "{upstream_url}"
    auth: {{method: api_key, config: {{api_key: "{UPSTREAM_KEY}", organization: org-test}}}}
"#
    );
    let routes = r#"model_mappings:
  gpt-4: {default_provider: openai, providers: {openai: {model: gpt-4-0125-preview}}}
  gpt-4o-mini: {default_provider: mock, providers: {mock: {}}}
routing:
  patterns:
    - {pattern: "^gpt-", default_provider: openai}
    - {pattern: "^text-embedding-", default_provider: openai}
    - {pattern: "^mock-", default_provider: mock}
"#;
    gateway_with(server_extra, &providers, routes)
}

/// Starts a gateway from parts: `server_extra` lines under `server:`, `providers` lines under
/// `providers:` (a `mock` provider is always added), and top-level `routes` YAML
/// (`model_mappings:` / `routing:`). Key: [`GATEWAY_KEY`] for user alice.
pub fn gateway_with(server_extra: &str, providers: &str, routes: &str) -> Gateway {
    let (port, mport) = (free_port(), free_port());
    let yaml = format!(
        r#"
server:
  listen: "127.0.0.1:{port}"
  metrics_listen: "127.0.0.1:{mport}"
  threads: 2
  access_log: false
{server_extra}
auth:
  keys:
    - {{user: alice, key: "{GATEWAY_KEY}"}}
providers:
  mock: {{}}
{providers}
{routes}
"#
    );
    let config = Config::parse(&yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let handle = GatewayHandle::start(Arc::new(config));
    Gateway {
        base: format!("http://127.0.0.1:{port}"),
        metrics_url: format!("http://127.0.0.1:{mport}/metrics"),
        handle,
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Metrics are recorded in the logging phase, just after the client has its response (and
/// `ai_proxy_provider_up` every second): poll until `needles` all appear (or fail after five
/// seconds), returning the exposition text.
pub async fn metrics_containing(url: &str, needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        // A scrape that fails outright (the machine is busy) is retried until the deadline.
        let text = match client().get(url).send().await {
            Ok(r) => r
                .text()
                .await
                .unwrap_or_else(|e| format!("(scrape failed: {e})")),
            Err(e) => format!("(scrape failed: {e})"),
        };
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<_> = needles.iter().filter(|n| !text.contains(**n)).collect();
            panic!("metrics never showed {missing:?}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `ai_proxy_tokens_total` sample for `model` at `provider`; `kind` is input or output.
pub fn tokens_total(provider: &str, model: &str, kind: &str, n: u64) -> String {
    format!(r#"ai_proxy_tokens_total{{model="{model}",provider="{provider}",type="{kind}"}} {n}"#)
}

/// Waits until the gateway's metrics show `input` and `output` tokens for `model` at
/// `provider` (see [`metrics_containing`]).
pub async fn assert_tokens_metered(
    gw: &Gateway,
    provider: &str,
    model: &str,
    input: u64,
    output: u64,
) {
    metrics_containing(
        &gw.metrics_url,
        &[
            &tokens_total(provider, model, "input", input),
            &tokens_total(provider, model, "output", output),
        ],
    )
    .await;
}

/// Reads a response body chunk by chunk, as a client iterating a stream does: the bytes and
/// how many chunks they came in.
pub async fn read_chunks(mut resp: reqwest::Response) -> (Vec<u8>, usize) {
    let (mut body, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
        chunks += 1;
    }
    (body, chunks)
}

/// For a gateway whose token source issues 16 s tokens (refreshed at half-life, never used
/// within 5 s of expiry, every refresh after the first slow): sends `request` over 11 s and
/// asserts that every one succeeds, that `upstream` saw the token replaced, and that no request
/// waited for a refresh. The first request may wait for the very first token.
pub async fn assert_tokens_rotate_without_waiting(
    request: reqwest::RequestBuilder,
    upstream: &MockUpstream,
) {
    let send = || request.try_clone().expect("a cloneable request").send();
    assert_eq!(send().await.unwrap().status(), 200);
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(11) {
        let t = std::time::Instant::now();
        let r = send().await.unwrap();
        // The mocks answer 401 to any expired or unknown token.
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let used: std::collections::BTreeSet<String> = upstream
        .recorded()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert!(used.len() >= 2, "the token was never replaced: {used:?}");
    assert!(
        slowest < Duration::from_millis(1500),
        "a request waited for the token refresh ({slowest:?})"
    );
}

/// Writes `request` on a fresh connection and reads until the server closes it (10 s at
/// most). Returns the status (0 when there is none) and the response text.
pub fn raw_http(base: &str, request: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = std::io::Write::write_all(&mut s, request);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no answer and no close within 10 s: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
