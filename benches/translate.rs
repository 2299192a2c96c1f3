//! Criterion benches of the pure translation layer: request preparation latency for a 1 KB
//! chat request, a non-stream answer's way back (OpenAI's with the model renamed, Anthropic's
//! translated), and SSE stream filtering throughput (MB/s of upstream bytes).
//!
//! Run: `cargo bench --bench translate`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard_filters::chat::response::render;
use switchyard_filters::chat::ResponseCtx;
use switchyard_filters::front::FrontDoor;
use switchyard_filters::openai::{parse_request, Endpoint};
use switchyard_filters::openai_upstream::{prepare_request, translate_response, StreamFilter};
use switchyard_filters::sse::SseFramer;
use switchyard_filters::translate::{parse_chat, Answer, Dialect, Target};

/// A realistic ~1 KB chat request.
fn chat_request() -> Vec<u8> {
    let system =
        "You are a helpful assistant that answers concisely and cites sources when asked. "
            .repeat(3);
    let user = "Summarise the following paragraph in two sentences: the quick brown fox jumps over the lazy dog. ".repeat(6);
    serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": "Sure, here is a summary."},
            {"role": "user", "content": "Shorter, please."}
        ],
        "temperature": 0.2, "max_tokens": 256, "stream": true, "user": "bench"
    }))
    .unwrap()
}

/// A recorded-style OpenAI stream: `n` content chunks, then finish, usage and [DONE].
fn openai_stream(n: usize) -> Vec<u8> {
    let mut s = Vec::new();
    let head = r#"{"id":"chatcmpl-9abcdefghijklmnopqrstuvwxyz","object":"chat.completion.chunk","created":1717000000,"model":"gpt-4-0125-preview","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":""#;
    for i in 0..n {
        s.extend_from_slice(b"data: ");
        s.extend_from_slice(head.as_bytes());
        s.extend_from_slice(format!(" token{i}").as_bytes());
        s.extend_from_slice(br#""},"logprobs":null,"finish_reason":null}],"usage":null}"#);
        s.extend_from_slice(b"\n\n");
    }
    s.extend_from_slice(br#"data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1717000000,"model":"gpt-4-0125-preview","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":500,"total_tokens":510}}"#);
    s.extend_from_slice(b"\n\ndata: [DONE]\n\n");
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

fn request_translation(c: &mut Criterion) {
    let body = chat_request();
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function(
        BenchmarkId::new("openai_chat_prepare", format!("{}B", body.len())),
        |b| {
            b.iter(|| {
                let parsed = parse_request(Endpoint::ChatCompletions, black_box(&body)).unwrap();
                black_box(prepare_request(&parsed, "gpt-4-0125-preview"))
            })
        },
    );
    g.finish();
}

fn stream_translation(c: &mut Criterion) {
    let stream = openai_stream(500);
    let pieces = chunks(&stream);
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("sse_framer", |b| {
        b.iter(|| {
            let mut f = SseFramer::new();
            let mut n = 0usize;
            for p in &pieces {
                f.feed(p, |e| n += e.len());
            }
            black_box(n)
        })
    });
    for (name, upstream, client, usage) in [
        (
            "openai_rewrite_model_strip_usage",
            "gpt-4-0125-preview",
            "gpt-4",
            false,
        ),
        (
            "openai_identity_metering_only",
            "gpt-4-0125-preview",
            "gpt-4-0125-preview",
            true,
        ),
    ] {
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(8192);
            b.iter(|| {
                let mut f = StreamFilter::new(upstream, client, usage);
                let mut n = 0;
                for p in &pieces {
                    out.clear();
                    n += if f.feed(p, &mut out) {
                        p.len()
                    } else {
                        out.len()
                    };
                }
                black_box((n, f.usage()))
            })
        });
    }
    g.finish();
}

/// The answers of benches/instructions.sh's origin: OpenAI's, and Anthropic's message.
const OPENAI_ANSWER: &[u8] = br#"{"id": "chatcmpl-bench", "object": "chat.completion", "created": 1716000000, "model": "gpt-4-0125-preview", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Make the dump wait for the lock rather than moving the schedule.", "refusal": null}, "logprobs": null, "finish_reason": "stop"}], "usage": {"prompt_tokens": 212, "completion_tokens": 71, "total_tokens": 283}}"#;
const ANTHROPIC_ANSWER: &[u8] = br#"{"id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514", "content": [{"type": "text", "text": "Make the dump wait for the lock rather than moving the schedule."}], "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 212, "output_tokens": 71}}"#;

fn answer_translation(c: &mut Criterion) {
    let mut g = c.benchmark_group("answer");
    g.bench_function("openai_rename_model", |b| {
        b.iter(|| black_box(translate_response(black_box(OPENAI_ANSWER), "gpt-4")))
    });
    let t = Target {
        dialect: Dialect::Anthropic,
        upstream_model: "claude-sonnet-4-20250514",
        project: None,
        location: None,
        api_version: None,
    };
    let ctx = ResponseCtx {
        client_model: "claude-bench",
        created: 1_700_000_000,
        fallback_id: "req-bench",
        front: FrontDoor::Chat,
        include_usage: false,
        echo: "",
    };
    g.bench_function("anthropic_to_chat", |b| {
        b.iter(|| {
            let answer = Answer {
                body: black_box(ANTHROPIC_ANSWER),
                input_tokens_header: None,
            };
            black_box(render(&parse_chat(&t, &answer).unwrap(), &ctx))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    request_translation,
    answer_translation,
    stream_translation
);
criterion_main!(benches);
