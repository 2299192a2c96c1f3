//! Criterion benches of every provider translator: request translation latency for a 1 KB
//! chat request and a ≈ 45 KB agent conversation, stream translation throughput (MB/s of
//! provider bytes, fed in network-like chunks) and, printed once per dialect before measuring,
//! heap allocations per provider chunk (counted by a wrapping global allocator).
//!
//! Run: `cargo bench --bench providers` (add a filter, e.g. `-- stream/anthropic`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard_filters::chat::{ChatRequest, ResponseCtx};
use switchyard_filters::eventstream::encode_event;
use switchyard_filters::front::FrontDoor;
use switchyard_filters::openai::{parse_request, Endpoint};
use switchyard_filters::translate::{chat_stream, prepare_chat, Dialect, Target};

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A realistic ~1 KB chat request with a tool.
fn chat_request() -> Vec<u8> {
    let system =
        "You are a helpful assistant that answers concisely and cites sources when asked. "
            .repeat(3);
    let user = "Summarise the following paragraph in two sentences: the quick brown fox jumps over the lazy dog. ".repeat(5);
    serde_json::to_vec(&serde_json::json!({
        "model": "bench",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": "Sure, here is a summary."},
            {"role": "user", "content": "Shorter, please."}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look a term up",
            "parameters": {"type": "object", "properties": {"term": {"type": "string"}}, "required": ["term"]}}}],
        "temperature": 0.2, "max_tokens": 256, "stream": true, "user": "bench"
    }))
    .unwrap()
}

/// A long agent conversation (≈ 45 KB: a system prompt and 20 exchanges of code and prose,
/// with quotes, newlines and tabs to escape), where the per-byte work of reading and writing
/// the text decides the cost.
fn long_chat_request() -> Vec<u8> {
    let code = "fn main() {\n\tlet s = \"quoted\";\n\tprintln!(\"{s}\");\n}\n".repeat(12);
    let prose =
        "The change moves the lock so the dump waits for it, rather than moving the schedule. "
            .repeat(8);
    let mut messages = vec![serde_json::json!({"role": "system", "content": prose.repeat(2)})];
    for i in 0..20 {
        messages.push(serde_json::json!({"role": "user", "content": format!("Step {i}: {prose}")}));
        messages
            .push(serde_json::json!({"role": "assistant", "content": format!("{code}{prose}")}));
    }
    messages.push(serde_json::json!({"role": "user", "content": "Go on."}));
    serde_json::to_vec(&serde_json::json!({
        "model": "bench", "messages": messages, "max_tokens": 1024, "stream": true,
    }))
    .unwrap()
}

fn target(dialect: Dialect) -> Target<'static> {
    let model = match dialect {
        Dialect::Anthropic => "claude-3-5-haiku-20241022",
        Dialect::BedrockConverse | Dialect::BedrockAnthropic => {
            "anthropic.claude-3-haiku-20240307-v1:0"
        }
        Dialect::VertexGemini => "gemini-2.0-flash-001",
        Dialect::VertexAnthropic => "claude-3-5-sonnet-v2@20241022",
        Dialect::Watsonx => "ibm/granite-3-8b-instruct",
        Dialect::OciGeneric => "meta.llama-3.3-70b-instruct",
        Dialect::OciCohere => "cohere.command-r-plus-08-2024",
        _ => "model",
    };
    Target {
        dialect,
        upstream_model: model,
        project: Some("bench-project"),
        location: Some("us-central1"),
        api_version: None,
    }
}

const DIALECTS: [Dialect; 8] = [
    Dialect::Anthropic,
    Dialect::BedrockConverse,
    Dialect::BedrockAnthropic,
    Dialect::VertexGemini,
    Dialect::VertexAnthropic,
    Dialect::Watsonx,
    Dialect::OciGeneric,
    Dialect::OciCohere,
];

/// `n` text pieces of a provider stream in the provider's own framing, as documented.
fn native_stream(dialect: Dialect, n: usize) -> Vec<u8> {
    let mut s = Vec::new();
    let sse = |s: &mut Vec<u8>, event: Option<&str>, data: &serde_json::Value| {
        if let Some(e) = event {
            s.extend_from_slice(format!("event: {e}\n").as_bytes());
        }
        s.extend_from_slice(b"data: ");
        s.extend_from_slice(&serde_json::to_vec(data).unwrap());
        s.extend_from_slice(b"\n\n");
    };
    // Anthropic's events as the API sends them: `type` first (serde_json's `json!` would sort
    // the keys, which no provider does).
    let anthropic_events = |n: usize| {
        let mut v = vec![
            r#"{"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[],"model":"claude-3-5-haiku-20241022","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#.to_owned(),
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_owned(),
        ];
        for i in 0..n {
            v.push(format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":" token{i}"}}}}"#
            ));
        }
        v.push(r#"{"type":"content_block_stop","index":0}"#.to_owned());
        v.push(format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{n}}}}}"#
        ));
        v.push(r#"{"type":"message_stop"}"#.to_owned());
        v
    };
    match dialect {
        Dialect::Anthropic | Dialect::VertexAnthropic => {
            for e in anthropic_events(n) {
                let v: serde_json::Value = serde_json::from_str(&e).unwrap();
                s.extend_from_slice(
                    format!("event: {}\ndata: {e}\n\n", v["type"].as_str().unwrap()).as_bytes(),
                );
            }
        }
        Dialect::BedrockAnthropic => {
            for e in anthropic_events(n) {
                let b64 = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                s.extend(encode_event(
                    "chunk",
                    &serde_json::to_vec(&serde_json::json!({ "bytes": b64 })).unwrap(),
                ));
            }
        }
        Dialect::BedrockConverse => {
            let ev = |s: &mut Vec<u8>, t: &str, v: serde_json::Value| {
                s.extend(encode_event(t, &serde_json::to_vec(&v).unwrap()))
            };
            ev(
                &mut s,
                "messageStart",
                serde_json::json!({"role":"assistant","p":"abcdefgh"}),
            );
            for i in 0..n {
                ev(
                    &mut s,
                    "contentBlockDelta",
                    serde_json::json!({"contentBlockIndex":0,"delta":{"text":format!(" token{i}")},"p":"abcdefghijkl"}),
                );
            }
            ev(
                &mut s,
                "contentBlockStop",
                serde_json::json!({"contentBlockIndex":0}),
            );
            ev(
                &mut s,
                "messageStop",
                serde_json::json!({"stopReason":"end_turn"}),
            );
            ev(
                &mut s,
                "metadata",
                serde_json::json!({"usage":{"inputTokens":25,"outputTokens":n,"totalTokens":25 + n},"metrics":{"latencyMs":400}}),
            );
        }
        Dialect::VertexGemini => {
            for i in 0..n {
                let mut v = serde_json::json!({"candidates":[{"content":{"role":"model","parts":[{"text":format!(" token{i}")}]}}],"usageMetadata":{"trafficType":"ON_DEMAND"},"modelVersion":"gemini-2.0-flash-001","createTime":"2025-01-01T00:00:00.000000Z","responseId":"bench-response-id"});
                if i + 1 == n {
                    v["candidates"][0]["finishReason"] = "STOP".into();
                    v["usageMetadata"] = serde_json::json!({"promptTokenCount":25,"candidatesTokenCount":n,"totalTokenCount":25 + n,"trafficType":"ON_DEMAND"});
                }
                s.extend_from_slice(b"data: ");
                s.extend_from_slice(&serde_json::to_vec(&v).unwrap());
                s.extend_from_slice(b"\r\n\r\n");
            }
        }
        Dialect::Watsonx => {
            for i in 0..=n {
                let v = if i < n {
                    serde_json::json!({"id":"chatcmpl-bench","model_id":"ibm/granite-3-8b-instruct","model":"ibm/granite-3-8b-instruct","created":1700000000,"model_version":"1.1.0","created_at":"2025-01-01T00:00:00.000Z","choices":[{"index":0,"delta":{"content":format!(" token{i}")},"finish_reason":null}]})
                } else {
                    serde_json::json!({"id":"chatcmpl-bench","model_id":"ibm/granite-3-8b-instruct","model":"ibm/granite-3-8b-instruct","created":1700000000,"model_version":"1.1.0","created_at":"2025-01-01T00:00:00.000Z","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"completion_tokens":n,"prompt_tokens":25,"total_tokens":25 + n}})
                };
                s.extend_from_slice(format!("id: {}\nevent: message\n", i + 1).as_bytes());
                sse(&mut s, None, &v);
            }
        }
        Dialect::OciGeneric => {
            for i in 0..n {
                sse(
                    &mut s,
                    None,
                    &serde_json::json!({"index":0,"message":{"role":"ASSISTANT","content":[{"type":"TEXT","text":format!(" token{i}")}]}}),
                );
            }
            sse(
                &mut s,
                None,
                &serde_json::json!({"message":{"role":"ASSISTANT"},"finishReason":"stop"}),
            );
        }
        Dialect::OciCohere => {
            for i in 0..n {
                sse(
                    &mut s,
                    None,
                    &serde_json::json!({"apiFormat":"COHERE","text":format!(" token{i}")}),
                );
            }
            sse(
                &mut s,
                None,
                &serde_json::json!({"apiFormat":"COHERE","text":"","finishReason":"COMPLETE"}),
            );
        }
        _ => unreachable!("not a translated chat dialect"),
    }
    s
}

/// Splits `data` into network-like chunks of varying size.
fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let sizes = [1371, 97, 4096, 512, 2900, 33];
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < data.len() {
        let end = (at + sizes[i % sizes.len()]).min(data.len());
        out.push(&data[at..end]);
        at = end;
        i += 1;
    }
    out
}

fn ctx() -> ResponseCtx<'static> {
    ResponseCtx {
        client_model: "bench-model",
        created: 1_700_000_000,
        fallback_id: "req-bench",
        front: FrontDoor::Chat,
        include_usage: true,
        echo: "",
    }
}

fn request_translation(c: &mut Criterion) {
    for (group, body) in [
        ("request", chat_request()),
        ("request_long", long_chat_request()),
    ] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Bytes(body.len() as u64));
        for d in DIALECTS {
            let t = target(d);
            g.bench_function(
                BenchmarkId::new(d.as_str(), format!("{}B", body.len())),
                |b| {
                    b.iter(|| {
                        let parsed =
                            parse_request(Endpoint::ChatCompletions, black_box(&body)).unwrap();
                        let req = ChatRequest::from_parsed(&parsed).unwrap();
                        black_box(prepare_chat(&t, &req).unwrap())
                    })
                },
            );
        }
        g.finish();
    }
}

fn stream_translation(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream");
    for d in DIALECTS {
        let stream = native_stream(d, 500);
        let pieces = chunks(&stream);
        let t = target(d);
        // Allocations per provider chunk, measured once outside the timing loop.
        let mut out = Vec::with_capacity(64 * 1024);
        let mut tr = chat_stream(&t, &ctx());
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for p in &pieces {
            out.clear();
            tr.feed(p, &mut out);
        }
        let allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;
        println!(
            "allocations/{}: {:.1} per provider chunk ({} chunks, {} bytes)",
            d.as_str(),
            allocs as f64 / pieces.len() as f64,
            pieces.len(),
            stream.len()
        );
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(d.as_str(), |b| {
            let mut out = Vec::with_capacity(64 * 1024);
            b.iter(|| {
                let mut tr = chat_stream(&t, &ctx());
                let mut n = 0;
                for p in &pieces {
                    out.clear();
                    tr.feed(p, &mut out);
                    n += out.len();
                }
                out.clear();
                tr.finish(&mut out);
                black_box((n, tr.usage()))
            })
        });
    }
    g.finish();
}

/// An OpenAI chat stream as api.openai.com sends it: role chunk, `n` content chunks, finish,
/// usage chunk, `[DONE]`.
fn openai_stream(n: usize) -> Vec<u8> {
    let head = r#"data: {"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":[{"index":0,"delta":"#;
    let mut s = Vec::new();
    s.extend_from_slice(head.as_bytes());
    s.extend_from_slice(br#"{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#);
    s.extend_from_slice(b"\n\n");
    for i in 0..n {
        s.extend_from_slice(head.as_bytes());
        s.extend_from_slice(
            format!(r#"{{"content":" token{i}"}},"logprobs":null,"finish_reason":null}}]}}"#)
                .as_bytes(),
        );
        s.extend_from_slice(b"\n\n");
    }
    s.extend_from_slice(head.as_bytes());
    s.extend_from_slice(br#"{},"logprobs":null,"finish_reason":"stop"}]}"#);
    s.extend_from_slice(b"\n\n");
    s.extend_from_slice(format!(r#"data: {{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","choices":[],"usage":{{"prompt_tokens":25,"completion_tokens":{n},"total_tokens":{}}}}}"#, n + 25).as_bytes());
    s.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    s
}

/// A ~2 KB Messages request like a coding agent's turn: system blocks with cache_control, a
/// tool, a tool round trip.
fn messages_request() -> Vec<u8> {
    let system =
        "You are a coding agent. Read files before editing them; keep diffs small. ".repeat(8);
    serde_json::to_vec(&serde_json::json!({
        "model": "bench", "max_tokens": 1024, "stream": true,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "read_file", "description": "Read a file from the workspace",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}],
        "messages": [
            {"role": "user", "content": "The build fails in src/main.rs; fix it. ".repeat(10)},
            {"role": "assistant", "content": [{"type": "text", "text": "Reading the file."},
                {"type": "tool_use", "id": "toolu_01A", "name": "read_file", "input": {"path": "src/main.rs"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A",
                "content": "fn main() { println!(\"hi\") }\n".repeat(8)}]}
        ],
        "metadata": {"user_id": "bench-user"}
    }))
    .unwrap()
}

fn messages_ctx() -> ResponseCtx<'static> {
    ResponseCtx {
        front: FrontDoor::Messages,
        ..ctx()
    }
}

/// Makes a fresh stream translator for one run.
type MakeTranslator = Box<dyn Fn() -> Box<dyn switchyard_filters::translate::StreamTranslator>>;

/// Runs `make()`'s translator over `pieces` (the stream benches' loop).
fn run_stream(
    make: &dyn Fn() -> Box<dyn switchyard_filters::translate::StreamTranslator>,
    pieces: &[&[u8]],
    out: &mut Vec<u8>,
) -> usize {
    let mut tr = make();
    let mut n = 0;
    for p in pieces {
        out.clear();
        tr.feed(p, out);
        n += out.len();
    }
    out.clear();
    tr.finish(out);
    n + out.len()
}

/// The two front doors over one seam: a stream in one dialect written for a client of the
/// other, the same-dialect Messages relay, and Messages request preparation.
fn front_doors(c: &mut Criterion) {
    use switchyard_filters::providers::messages_native;
    let mut g = c.benchmark_group("front_doors");
    let anthropic = native_stream(Dialect::Anthropic, 2000);
    let bedrock = native_stream(Dialect::BedrockAnthropic, 2000);
    let openai = openai_stream(2000);
    let cases: [(&str, &Vec<u8>, MakeTranslator); 4] = [
        (
            "anthropic_stream_to_openai_client",
            &anthropic,
            Box::new(|| chat_stream(&target(Dialect::Anthropic), &ctx())),
        ),
        (
            "openai_stream_to_messages_client",
            &openai,
            Box::new(|| chat_stream(&target(Dialect::OpenAi), &messages_ctx())),
        ),
        (
            "messages_same_dialect_relay",
            &anthropic,
            Box::new(|| messages_native::stream(&target(Dialect::Anthropic), "bench-model")),
        ),
        (
            "bedrock_eventstream_to_messages_client",
            &bedrock,
            Box::new(|| messages_native::stream(&target(Dialect::BedrockAnthropic), "bench-model")),
        ),
    ];
    for (name, stream, make) in &cases {
        let pieces = chunks(stream);
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(*name, |b| {
            let mut out = Vec::with_capacity(64 * 1024);
            b.iter(|| black_box(run_stream(make.as_ref(), &pieces, &mut out)))
        });
    }
    g.throughput(Throughput::Elements(1));
    let body = messages_request();
    let size = format!("{}B", body.len());
    g.bench_function(BenchmarkId::new("messages_request_to_openai", &size), |b| {
        let t = target(Dialect::OpenAi);
        b.iter(|| {
            let parsed = parse_request(Endpoint::Messages, black_box(&body)).unwrap();
            let req = ChatRequest::from_parsed(&parsed).unwrap();
            black_box(prepare_chat(&t, &req).unwrap())
        })
    });
    for d in [
        Dialect::Anthropic,
        Dialect::BedrockAnthropic,
        Dialect::VertexAnthropic,
    ] {
        let t = target(d);
        g.bench_function(
            BenchmarkId::new(format!("messages_native_prepare_{}", d.as_str()), &size),
            |b| {
                b.iter(|| {
                    let parsed = parse_request(Endpoint::Messages, black_box(&body)).unwrap();
                    black_box(messages_native::prepare(&t, parsed.raw(), true, None).unwrap())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    request_translation,
    stream_translation,
    front_doors
);
criterion_main!(benches);
