//! Fuzz target `stream_openai`: the OpenAI/Azure stream filter (filters/src/openai_upstream.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::openai_stream(data));
