//! Upstream faults never take the gateway down or leak: every fault (refused, reset before
//! headers / mid-body / mid-stream, truncated body, invalid JSON, silent stream, endless
//! keep-alive comments, enormous chunk, slow trickle, corrupt event-stream frames) is driven
//! through the unified API on an OpenAI-dialect provider and on translated providers
//! (Anthropic SSE, Bedrock ConverseStream) and through the passthrough. Per case: the status,
//! the error envelope (or the SSE error event, and no `[DONE]`), a generous time bound derived
//! from the configured 1 s / 3 s timeouts, no connection left open (upstream sockets counted
//! by the mock, the process's sockets counted in /proc/self/fd), and the request counted in
//! `ai_proxy_requests_total`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::anthropic::message_stream;
use support::bedrock::{converse_stream_body, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use support::faults::{
    chunk, head_chunked, head_chunked_keep_alive, head_len, FaultUpstream, Step, LAST_CHUNK,
};
use support::*;

const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";
const EVENTSTREAM: &str = "application/vnd.amazon.eventstream";
const MS100: Duration = Duration::from_millis(100);

/// The configured timeouts: upstream read (first byte and stream idle) 1 s, the whole answer
/// of a non-stream request 3 s. Every case must end well within this bound.
const BOUND: Duration = Duration::from_secs(8);

/// Where a case sends its request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    /// `/v1/chat/completions` on the OpenAI-dialect provider, non-stream / stream.
    OaiJson,
    OaiStream,
    /// `/v1/chat/completions` translated to Anthropic Messages.
    AnthJson,
    AnthStream,
    /// `/v1/chat/completions` translated to Bedrock ConverseStream.
    BedrockStream,
    /// `/providers/openai/v1/chat/completions` (Pingora's proxy loop), non-stream / stream.
    PassJson,
    PassStream,
    /// `/providers/bedrock/model/.../converse-stream` (the gateway's own relay: signed body).
    PassBedrockStream,
    /// The unified API on a provider whose port refuses connections.
    DeadJson,
    DeadStream,
    DeadPass,
}

/// What the client must get.
#[derive(Debug, Clone)]
enum Expect {
    /// An error envelope with this status and `error.code`.
    Error(u16, &'static str),
    /// A 200 SSE stream ending with a `data: {"error":...}` event with this code, no `[DONE]`,
    /// and a clean end of the chunked body.
    SseError(&'static str),
    /// Passthrough after the headers went out: this status, the bytes relayed so far exactly
    /// `prefix`, then the connection cut (the client sees an incomplete body).
    Cut(u16, Vec<u8>),
    /// Passthrough: status and the body relayed byte for byte.
    Exact(u16, Vec<u8>),
}

struct Case {
    name: &'static str,
    route: Route,
    steps: Vec<Step>,
    expect: Expect,
}

/// What the client saw.
struct Seen {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    /// The body ended with an error (connection cut, incomplete chunked or sized body).
    body_error: bool,
    elapsed: Duration,
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

async fn send(gw: &Gateway, route: Route) -> Seen {
    use Route::*;
    let (path, body) = match route {
        OaiJson => ("/v1/chat/completions".to_owned(), chat_body("gpt-4", false)),
        OaiStream => ("/v1/chat/completions".to_owned(), chat_body("gpt-4", true)),
        AnthJson => (
            "/v1/chat/completions".to_owned(),
            chat_body("claude", false),
        ),
        AnthStream => ("/v1/chat/completions".to_owned(), chat_body("claude", true)),
        BedrockStream => ("/v1/chat/completions".to_owned(), chat_body("haiku", true)),
        PassJson => (
            "/providers/openai/v1/chat/completions".to_owned(),
            chat_body("gpt-4", false),
        ),
        PassStream => (
            "/providers/openai/v1/chat/completions".to_owned(),
            chat_body("gpt-4", true),
        ),
        PassBedrockStream => (
            "/providers/bedrock/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream"
                .to_owned(),
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
        ),
        DeadJson => ("/v1/chat/completions".to_owned(), chat_body("dead", false)),
        DeadStream => ("/v1/chat/completions".to_owned(), chat_body("dead", true)),
        DeadPass => (
            "/providers/dead/v1/chat/completions".to_owned(),
            chat_body("gpt-4", false),
        ),
    };
    // A client of its own per case, dropped at the end, so its sockets do not count later.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut resp = match client
        .post(format!("{}{path}", gw.base))
        .bearer_auth(GATEWAY_KEY)
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Seen {
                status: 0,
                content_type: format!("no response head: {e:?}"),
                body: Vec::new(),
                body_error: true,
                elapsed: started.elapsed(),
            }
        }
    };
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let (mut body, mut body_error) = (Vec::new(), false);
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => break,
            Err(_) => {
                body_error = true;
                break;
            }
        }
    }
    Seen {
        status,
        content_type,
        body,
        body_error,
        elapsed: started.elapsed(),
    }
}

/// Like assert!, but returns the failure (the table reports every failing case at the end).
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

macro_rules! ensure_eq {
    ($a:expr, $b:expr, $($fmt:tt)+) => {
        if $a != $b {
            return Err(format!("{:?} != {:?}: {}", $a, $b, format!($($fmt)+)));
        }
    };
}

fn check(case: &Case, seen: &Seen) -> Result<(), String> {
    let ctx = format!(
        "case `{}` on {:?}: status {} ({}), {} bytes{}: {}",
        case.name,
        case.route,
        seen.status,
        seen.content_type,
        seen.body.len(),
        if seen.body_error { ", cut" } else { "" },
        String::from_utf8_lossy(&seen.body[..seen.body.len().min(600)])
    );
    match &case.expect {
        Expect::Error(status, code) => {
            ensure_eq!(seen.status, *status, "{ctx}");
            ensure!(seen.content_type.starts_with(JSON), "{ctx}");
            ensure!(!seen.body_error, "{ctx}");
            let v: Value =
                serde_json::from_slice(&seen.body).map_err(|_| format!("not JSON: {ctx}"))?;
            let e = &v["error"];
            ensure!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{ctx}"
            );
            ensure!(e["type"].is_string() && e.get("param").is_some(), "{ctx}");
            ensure_eq!(e["code"], *code, "{ctx}");
        }
        Expect::SseError(code) => {
            ensure_eq!(seen.status, 200, "{ctx}");
            ensure!(seen.content_type.starts_with(SSE), "{ctx}");
            ensure!(!seen.body_error, "the stream was not ended cleanly: {ctx}");
            let text = String::from_utf8_lossy(&seen.body);
            ensure!(!text.contains("[DONE]"), "{ctx}");
            ensure!(text.ends_with("\n\n"), "{ctx}");
            let last = text
                .trim_end()
                .rsplit("\n\n")
                .next()
                .unwrap()
                .strip_prefix("data: ")
                .ok_or_else(|| format!("the last event is not data: {ctx}"))?;
            let v: Value = serde_json::from_str(last).map_err(|_| format!("not JSON: {ctx}"))?;
            ensure_eq!(v["error"]["code"], *code, "{ctx}");
            ensure!(v["error"]["message"].is_string(), "{ctx}");
            ensure_eq!(
                text.matches("data: {\"error\"").count(),
                1,
                "one error event: {ctx}"
            );
        }
        Expect::Cut(status, prefix) => {
            ensure_eq!(seen.status, *status, "{ctx}");
            ensure!(
                seen.body_error,
                "the client was not told the body is incomplete: {ctx}"
            );
            ensure!(
                &seen.body == prefix,
                "not byte-exact ({} bytes expected): {ctx}",
                prefix.len()
            );
        }
        Expect::Exact(status, body) => {
            ensure_eq!(seen.status, *status, "{ctx}");
            ensure!(!seen.body_error, "{ctx}");
            ensure!(
                &seen.body == body,
                "not byte-exact ({} bytes expected): {ctx}",
                body.len()
            );
        }
    }
    ensure!(
        seen.elapsed < BOUND,
        "took {:?} (bound {BOUND:?}): {ctx}",
        seen.elapsed
    );
    Ok(())
}

/// Sockets this process holds (the gateway is in-process, and so are the mocks and clients).
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Waits (up to 5 s) for the socket count to come down to `baseline`; the count then.
async fn settled_sockets(baseline: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let n = open_sockets();
        if n <= baseline || Instant::now() > until {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The sum of every `ai_proxy_requests_total` sample.
async fn requests_total(gw: &Gateway) -> u64 {
    let text = reqwest::get(&gw.metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("ai_proxy_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits (up to 5 s) until `ai_proxy_requests_total` reaches `want`; the total then.
async fn counted(gw: &Gateway, want: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let n = requests_total(gw).await;
        if n >= want || Instant::now() > until {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ upstream answers

fn openai_json() -> Vec<u8> {
    chat_completion("gpt-4-0125-preview", "Hello there", 5, 2)
}

fn openai_sse() -> Vec<u8> {
    chat_stream("gpt-4-0125-preview", &["Hel", "lo", " there"], 5)
}

fn anthropic_json() -> Vec<u8> {
    support::anthropic::message("Hello there", 5, 2)
}

/// The first `n` events of an SSE body.
fn first_events(sse: &[u8], n: usize) -> Vec<u8> {
    let mut end = 0;
    for _ in 0..n {
        end += sse[end..].windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    }
    sse[..end].to_vec()
}

/// A complete sized response.
fn sized(content_type: &str, body: &[u8]) -> Vec<Step> {
    let mut b = head_len(200, content_type, body.len());
    b.extend_from_slice(body);
    vec![Step::Write(b), Step::Hold]
}

/// Headers announcing `body`, then only its first `sent` bytes, then `end`.
fn sized_cut(content_type: &str, body: &[u8], sent: usize, end: Step) -> Vec<Step> {
    let mut b = head_len(200, content_type, body.len());
    b.extend_from_slice(&body[..sent]);
    vec![Step::Write(b), Step::Sleep(MS100), end]
}

/// A chunked stream of `body` in one chunk, then `end` (no last chunk).
fn stream_cut(content_type: &str, body: &[u8], end: Step) -> Vec<Step> {
    let mut b = head_chunked(content_type);
    b.extend(chunk(body));
    vec![Step::Write(b), Step::Sleep(MS100), end]
}

/// A complete chunked stream whose single chunk is `body`.
fn stream_whole(content_type: &str, body: &[u8]) -> Vec<Step> {
    let mut b = head_chunked(content_type);
    b.extend(chunk(body));
    b.extend_from_slice(LAST_CHUNK);
    vec![Step::Write(b), Step::Hold]
}

/// ConverseStream frames: the first `keep` complete ones, then `tail`.
fn frames_then(keep: usize, tail: &[u8]) -> Vec<u8> {
    let body = converse_stream_body(7, &["One", " two", " three"]);
    let mut end = 0;
    for _ in 0..keep {
        end += u32::from_be_bytes(body[end..end + 4].try_into().unwrap()) as usize;
    }
    let mut out = body[..end].to_vec();
    out.extend_from_slice(tail);
    out
}

/// The first complete frame of a ConverseStream body.
fn second_frame() -> Vec<u8> {
    let body = converse_stream_body(7, &["One", " two", " three"]);
    let first = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
    let len = u32::from_be_bytes(body[first..first + 4].try_into().unwrap()) as usize;
    body[first..first + len].to_vec()
}

fn cases() -> Vec<Case> {
    use Expect::*;
    use Route::*;
    let mut cases = Vec::new();
    let mut add = |name, route, steps: Vec<Step>, expect| {
        cases.push(Case {
            name,
            route,
            steps,
            expect,
        })
    };
    // Connection refused.
    for route in [DeadJson, DeadStream, DeadPass] {
        add("refused", route, vec![], Error(502, "upstream_unreachable"));
    }
    // Reset before any header.
    for route in [
        OaiJson,
        OaiStream,
        AnthJson,
        AnthStream,
        BedrockStream,
        PassJson,
        PassStream,
        PassBedrockStream,
    ] {
        add(
            "reset before headers",
            route,
            vec![Step::Reset],
            Error(502, "upstream_unreachable"),
        );
    }
    // Reset and FIN in the middle of a sized body.
    let oai = openai_json();
    let anth = anthropic_json();
    for (name, end) in [
        ("reset mid-body", Step::Reset),
        (
            "truncated body (Content-Length larger than sent)",
            Step::Close,
        ),
    ] {
        add(
            name,
            OaiJson,
            sized_cut(JSON, &oai, 40, end.clone()),
            Error(502, "upstream_unreachable"),
        );
        add(
            name,
            AnthJson,
            sized_cut(JSON, &anth, 40, end.clone()),
            Error(502, "upstream_unreachable"),
        );
        add(
            name,
            PassJson,
            sized_cut(JSON, &oai, 40, end),
            Cut(200, oai[..40].to_vec()),
        );
    }
    // Reset mid-stream, after two events.
    let sse = openai_sse();
    let anth_sse = message_stream(&["Hel", "lo"], 5, 2);
    add(
        "reset mid-stream",
        OaiStream,
        stream_cut(SSE, &first_events(&sse, 2), Step::Reset),
        SseError("upstream_unreachable"),
    );
    add(
        "reset mid-stream",
        AnthStream,
        stream_cut(SSE, &first_events(&anth_sse, 3), Step::Reset),
        SseError("upstream_unreachable"),
    );
    add(
        "reset mid-stream",
        BedrockStream,
        stream_cut(EVENTSTREAM, &frames_then(2, b""), Step::Reset),
        SseError("upstream_unreachable"),
    );
    add(
        "reset mid-stream",
        PassStream,
        stream_cut(SSE, &first_events(&sse, 2), Step::Reset),
        Cut(200, first_events(&sse, 2)),
    );
    add(
        "reset mid-stream",
        PassBedrockStream,
        stream_cut(EVENTSTREAM, &frames_then(2, b""), Step::Reset),
        Cut(200, frames_then(2, b"")),
    );
    // A stream that ends (last chunk sent) before it is complete.
    add(
        "stream ends early",
        OaiStream,
        stream_whole(SSE, &first_events(&sse, 2)),
        SseError("upstream_unreachable"),
    );
    add(
        "stream ends early",
        AnthStream,
        stream_whole(SSE, &first_events(&anth_sse, 3)),
        SseError("stream_truncated"),
    );
    // Invalid JSON.
    let garbage = b"{\"id\": \"chatcmpl-1\", \"choices\": [ this is not json".to_vec();
    add(
        "invalid JSON answer",
        OaiJson,
        sized(JSON, &garbage),
        Error(502, "upstream_unreachable"),
    );
    add(
        "invalid JSON answer",
        AnthJson,
        sized(JSON, &garbage),
        Error(502, "upstream_unreachable"),
    );
    add(
        "invalid JSON answer",
        PassJson,
        sized(JSON, &garbage),
        Exact(200, garbage.clone()),
    );
    let mut bad_event = first_events(&anth_sse, 1);
    bad_event.extend_from_slice(
        b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", nope\n\n",
    );
    add(
        "invalid JSON event",
        AnthStream,
        stream_whole(SSE, &bad_event),
        SseError("stream_truncated"),
    );
    // The translator gives up on an unreadable event while the provider keeps the stream
    // open: one error event, at once, and the upstream connection closed (not a second error
    // at the idle timeout).
    add(
        "invalid JSON event, stream kept open",
        AnthStream,
        stream_cut(SSE, &bad_event, Step::Hold),
        SseError("stream_truncated"),
    );
    // Corrupt event-stream frames.
    let mut bad_crc = second_frame();
    let n = bad_crc.len();
    bad_crc[n - 6] ^= 0x20; // a payload byte: the message CRC no longer matches
    let bad_crc = frames_then(1, &bad_crc);
    let truncated = {
        let f = second_frame();
        frames_then(1, &f[..f.len() / 2])
    };
    let garbage_prelude = frames_then(
        1,
        &[0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
    );
    for (name, body) in [
        ("bad CRC frame", bad_crc.clone()),
        ("truncated frame", truncated.clone()),
        ("garbage prelude", garbage_prelude.clone()),
    ] {
        add(
            name,
            BedrockStream,
            stream_whole(EVENTSTREAM, &body),
            SseError("stream_truncated"),
        );
        add(
            name,
            PassBedrockStream,
            stream_whole(EVENTSTREAM, &body),
            Exact(200, body),
        );
    }
    // Headers, then silence: the stream idle timeout (1 s) ends it.
    let silent = |ct: &str| vec![Step::Write(head_chunked(ct)), Step::Hold];
    add(
        "silent stream",
        OaiStream,
        silent(SSE),
        SseError("upstream_timeout"),
    );
    add(
        "silent stream",
        AnthStream,
        silent(SSE),
        SseError("upstream_timeout"),
    );
    add(
        "silent stream",
        BedrockStream,
        silent(EVENTSTREAM),
        SseError("upstream_timeout"),
    );
    add(
        "silent body",
        OaiJson,
        vec![Step::Write(head_len(200, JSON, 500)), Step::Hold],
        Error(504, "upstream_timeout"),
    );
    add("silent stream", PassStream, silent(SSE), Cut(200, vec![]));
    // Headers, then SSE comments forever: keep-alives are not progress, so the stream idle
    // timeout still ends the stream.
    let comments = |ct: &str| {
        vec![
            Step::Write(head_chunked(ct)),
            Step::Forever(chunk(b": keep-alive\n\n"), MS100),
        ]
    };
    add(
        "endless keep-alive comments",
        OaiStream,
        comments(SSE),
        SseError("upstream_timeout"),
    );
    add(
        "endless keep-alive comments",
        AnthStream,
        comments(SSE),
        SseError("upstream_timeout"),
    );
    // Enormous: a 50 MB single event; a body over max_upstream_response_bytes (1 MiB here).
    let huge_event = {
        let mut e = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"".to_vec();
        e.resize(e.len() + 50 * 1024 * 1024, b'x');
        e.extend_from_slice(b"\"}}]}\n\n");
        e
    };
    add(
        "enormous event (50 MB)",
        OaiStream,
        stream_cut(SSE, &huge_event, Step::Hold),
        SseError("upstream_unreachable"),
    );
    let huge_anthropic = {
        let mut e = first_events(&anth_sse, 2);
        e.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"");
        e.resize(e.len() + 50 * 1024 * 1024, b'x');
        e.extend_from_slice(b"\"}}\n\n");
        e
    };
    add(
        "enormous event (50 MB)",
        AnthStream,
        stream_cut(SSE, &huge_anthropic, Step::Hold),
        SseError("upstream_unreachable"),
    );
    let big = vec![b' '; 2 * 1024 * 1024];
    add(
        "body over max_upstream_response_bytes",
        OaiJson,
        sized(JSON, &big),
        Error(502, "upstream_unreachable"),
    );
    add(
        "body over max_upstream_response_bytes",
        AnthJson,
        sized(JSON, &big),
        Error(502, "upstream_unreachable"),
    );
    // Slow trickle, 1 byte / 100 ms: a non-stream answer ends at routing.timeout_seconds
    // (3 s); a stream at the stream idle timeout (1 s without a complete event).
    let trickle =
        |head: Vec<u8>, body: &[u8]| vec![Step::Write(head), Step::Trickle(body.to_vec(), MS100)];
    add(
        "slow trickle",
        OaiJson,
        trickle(head_len(200, JSON, oai.len()), &oai),
        Error(504, "upstream_timeout"),
    );
    add(
        "slow trickle",
        AnthJson,
        trickle(head_len(200, JSON, anth.len()), &anth),
        Error(504, "upstream_timeout"),
    );
    let trickled_stream = {
        let mut b = Vec::new();
        for byte in &sse {
            b.extend(chunk(&[*byte]));
        }
        b
    };
    add(
        "slow trickle",
        OaiStream,
        trickle(head_chunked(SSE), &trickled_stream),
        SseError("upstream_timeout"),
    );
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_ends_cleanly_in_time_and_releases_its_connections() {
    let current: Arc<Mutex<Vec<Step>>> = Arc::default();
    let script = current.clone();
    let mock = FaultUpstream::start(move |_| script.lock().unwrap().clone());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let url = mock.url();
    let gw = gateway_with(
        "  upstream_read_timeout_seconds: 1\n  upstream_connect_timeout_seconds: 1\n  max_upstream_response_bytes: 1048576",
        &format!(
            "  openai:\n    endpoint: \"{url}\"\n    auth: {{method: api_key, config: {{api_key: \"{UPSTREAM_KEY}\"}}}}\n\
             \x20 dead:\n    type: openai\n    endpoint: \"{dead}\"\n    auth: {{method: api_key, config: {{api_key: \"{UPSTREAM_KEY}\"}}}}\n\
             \x20 anthropic:\n    endpoint: \"{url}\"\n    auth: {{method: api_key, config: {{api_key: k}}}}\n\
             \x20 bedrock:\n    region: {REGION}\n    endpoint: \"{url}\"\n    auth: {{method: static, config: {{access_key_id: {ACCESS_KEY_ID}, secret_access_key: \"{SECRET_ACCESS_KEY}\"}}}}\n"
        ),
        "model_mappings:\n\
         \x20 gpt-4: {providers: {openai: {model: gpt-4-0125-preview}}}\n\
         \x20 dead: {providers: {dead: {model: gpt-4}}}\n\
         \x20 claude: {providers: {anthropic: {model: claude-3-5-haiku-20241022}}}\n\
         \x20 haiku: {providers: {bedrock: {model: anthropic.claude-3-haiku-20240307-v1:0}}}\n\
         routing:\n  timeout_seconds: 3\n  health: {failure_threshold: 1000000}\n",
    );
    // Warm up (the gateway's lazily created pieces), then take the baselines.
    *current.lock().unwrap() = sized(JSON, &openai_json());
    assert_eq!(send(&gw, Route::OaiJson).await.status, 200);
    assert_eq!(mock.settle(Duration::from_secs(5)).await, 0);
    let mut total = counted(&gw, 1).await;
    let baseline = settled_sockets(0).await;

    let mut failures = Vec::new();
    for case in cases() {
        *current.lock().unwrap() = case.steps.clone();
        let seen = send(&gw, case.route).await;
        let verdict = check(&case, &seen);
        let left = mock.settle(Duration::from_secs(5)).await;
        let sockets = settled_sockets(baseline).await;
        total += 1;
        let n = counted(&gw, total).await;
        let mut problems = Vec::new();
        if let Err(e) = verdict {
            problems.push(e);
        }
        if left != 0 {
            problems.push(format!("{left} upstream connection(s) still open"));
        }
        if sockets > baseline {
            problems.push(format!("{} socket(s) more than before", sockets - baseline));
        }
        if n != total {
            problems.push(format!("ai_proxy_requests_total is {n}, expected {total}"));
            total = n;
        }
        eprintln!(
            "{:<50} {:<18} {:>4} {:>6} ms {}",
            case.name,
            format!("{:?}", case.route),
            seen.status,
            seen.elapsed.as_millis(),
            if problems.is_empty() { "ok" } else { "FAILED" }
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{} on {:?}: {}",
                case.name,
                case.route,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A client that leaves an endless stream: the gateway lets go of the upstream connection
/// (at once when it writes next, within the stream idle timeout when the upstream only
/// sends keep-alives that produce nothing for the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_an_endless_stream_releases_the_upstream() {
    let current: Arc<Mutex<Vec<Step>>> = Arc::default();
    let script = current.clone();
    let mock = FaultUpstream::start(move |_| script.lock().unwrap().clone());
    let url = mock.url();
    let gw = gateway_with(
        "  upstream_read_timeout_seconds: 1",
        &format!(
            "  openai:\n    endpoint: \"{url}\"\n    auth: {{method: api_key, config: {{api_key: \"{UPSTREAM_KEY}\"}}}}\n\
             \x20 anthropic:\n    endpoint: \"{url}\"\n    auth: {{method: api_key, config: {{api_key: k}}}}\n"
        ),
        "model_mappings:\n\
         \x20 gpt-4: {providers: {openai: {model: gpt-4-0125-preview}}}\n\
         \x20 claude: {providers: {anthropic: {model: claude-3-5-haiku-20241022}}}\n",
    );
    let sse = openai_sse();
    // Real events forever (relayed), and keep-alive comments forever.
    let events = first_events(&sse, 2)[first_events(&sse, 1).len()..].to_vec();
    for (path, model, steps) in [
        (
            "/v1/chat/completions",
            "gpt-4",
            vec![
                Step::Write(head_chunked(SSE)),
                Step::Forever(chunk(&events), MS100),
            ],
        ),
        (
            "/providers/openai/v1/chat/completions",
            "gpt-4",
            vec![
                Step::Write(head_chunked(SSE)),
                Step::Forever(chunk(b": keep-alive\n\n"), MS100),
            ],
        ),
        (
            "/v1/chat/completions",
            "claude",
            vec![
                Step::Write(head_chunked(SSE)),
                Step::Forever(chunk(b": keep-alive\n\n"), MS100),
            ],
        ),
    ] {
        *current.lock().unwrap() = steps;
        let client = reqwest::Client::new();
        let resp = client
            .post(format!("{}{path}", gw.base))
            .bearer_auth(GATEWAY_KEY)
            .json(&chat_body(model, true))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path} {model}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(mock.open(), 1, "{path} {model}");
        drop(resp);
        drop(client);
        let left = mock.settle(Duration::from_secs(4)).await;
        assert_eq!(
            left, 0,
            "{path} {model}: the upstream connection outlived the client"
        );
    }
}

/// Complete translated streams leave their upstream connection reusable: the relay reads the
/// provider's body to its end even when the translator has seen the answer finish first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_translated_streams_keep_the_upstream_connection() {
    let mut body = head_chunked_keep_alive(SSE);
    body.extend(chunk(&message_stream(&["Hel", "lo"], 5, 2)));
    body.extend_from_slice(LAST_CHUNK);
    let mock = FaultUpstream::start(move |_| vec![Step::Write(body.clone())]);
    let url = mock.url();
    let gw = gateway_with(
        "",
        &format!("  anthropic:\n    endpoint: \"{url}\"\n    auth: {{method: api_key, config: {{api_key: k}}}}\n"),
        "model_mappings:\n  claude: {providers: {anthropic: {model: claude-3-5-haiku-20241022}}}\n",
    );
    for _ in 0..3 {
        let seen = send(&gw, Route::AnthStream).await;
        assert_eq!(seen.status, 200);
        assert!(!seen.body_error);
        assert!(String::from_utf8_lossy(&seen.body).ends_with("data: [DONE]\n\n"));
        // The connection goes back to the pool just after the client's answer ends; give a
        // busy machine a moment so the next request can find it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Without the last-chunk read every request opens a new connection (3).
    assert!(
        mock.accepted() < 3,
        "the upstream connection was never reused ({} connections)",
        mock.accepted()
    );
}
