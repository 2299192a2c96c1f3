//! Fuzz target `sse_decoder`: SSE framing (filters/src/sse.rs), see switchyard_filters::fuzzing::sse_decoder.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::sse_decoder(data));
