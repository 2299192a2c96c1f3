//! Criterion benches of the pure translation layer: request preparation latency for a 1 KB
//! chat request, and SSE stream filtering throughput (MB/s of upstream bytes).
//!
//! Run: `cargo bench --bench translate`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard_filters::openai::{parse_request, Endpoint};
use switchyard_filters::openai_upstream::{prepare_request, StreamFilter};
use switchyard_filters::sse::SseFramer;

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

criterion_group!(benches, request_translation, stream_translation);
criterion_main!(benches);
