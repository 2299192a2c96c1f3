//! Fuzz target `messages_stream_vertex`: the same-dialect Messages relay of a Claude-on-Vertex stream (providers::messages_native::stream), see switchyard_filters::fuzzing::messages_stream.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::messages_stream(switchyard_filters::translate::Dialect::VertexAnthropic, data));
