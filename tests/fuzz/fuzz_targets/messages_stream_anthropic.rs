//! Fuzz target `messages_stream_anthropic`: the same-dialect Messages relay of an Anthropic SSE stream (providers::messages_native::stream), see switchyard_filters::fuzzing::messages_stream.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::messages_stream(switchyard_filters::translate::Dialect::Anthropic, data));
