//! Fuzz target `stream_bedrock_anthropic`: the BedrockAnthropic stream translator (translate::chat_stream), see switchyard_filters::fuzzing::stream.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::stream(switchyard_filters::translate::Dialect::BedrockAnthropic, data));
