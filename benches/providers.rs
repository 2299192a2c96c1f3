//! Criterion benches of every provider translator: request translation latency for a 1 KB
//! chat request, stream translation throughput (MB/s of provider bytes, fed in network-like
//! chunks) and, printed once per dialect before measuring, heap allocations per provider
//! chunk (counted by a wrapping global allocator).
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
    }
}

fn request_translation(c: &mut Criterion) {
    let body = chat_request();
    let mut g = c.benchmark_group("request");
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

criterion_group!(benches, request_translation, stream_translation);
criterion_main!(benches);
