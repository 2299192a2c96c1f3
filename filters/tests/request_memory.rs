//! Peak heap memory of reading a large request on the OpenAI route: parsing it
//! (`parse_request`) and preparing the upstream body, as a multiple of the body's size.
//!
//! A counting global allocator (this test binary only) tracks the bytes live and their peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use switchyard_filters::mock;
use switchyard_filters::openai::parse_request_bytes;
use switchyard_filters::openai_upstream::prepare_request;
use switchyard_filters::Endpoint;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size > layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak bytes allocated while `f` runs, above what was live before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - base)
}

/// 250,000 short messages: the shape of request that cost about 15 times its size.
fn many_messages() -> Vec<u8> {
    let mut body = String::from(r#"{"model":"gpt-4o","stream":true,"messages":["#);
    for i in 0..250_000 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"role":"user","content":"hello world"}"#);
    }
    body.push_str("]}");
    body.into_bytes()
}

/// The OpenAI route: the body (already read) is parsed and its upstream body prepared.
/// Before the body was kept as bytes this cost 36 times the body (a `serde_json::Value` tree,
/// a clone of it for the upstream, its serialization); now about one body more (the upstream
/// copy).
#[test]
fn a_large_request_costs_a_small_multiple_of_its_size() {
    let raw = Bytes::from(many_messages());
    let size = raw.len();
    let (upstream, peak) = peak_during(|| {
        let parsed = parse_request_bytes(Endpoint::ChatCompletions, raw.clone()).unwrap();
        // As the OpenAI route does: the request stays parsed while its upstream body is built.
        prepare_request(&parsed, "gpt-4o-2024-08-06")
    });
    let multiple = peak as f64 / size as f64;
    println!("OpenAI route: body {size} bytes, peak {peak} bytes above it: {multiple:.2}x");
    assert!(upstream.len() >= size);
    assert!(
        multiple < 1.5,
        "peak {peak} bytes is {multiple:.2}x the body"
    );

    // The mock provider reads the same body one message at a time.
    let (reply, peak) = peak_during(|| {
        let parsed = parse_request_bytes(Endpoint::ChatCompletions, raw.clone()).unwrap();
        let reply = mock::respond(&parsed, "mock", 0);
        reply.body.into_bytes().len()
    });
    let multiple = peak as f64 / size as f64;
    println!("mock: body {size} bytes, peak {peak} bytes above it: {multiple:.2}x");
    assert!(reply < 256 * 1024);
    assert!(
        multiple < 0.1,
        "peak {peak} bytes is {multiple:.2}x the body"
    );
}
