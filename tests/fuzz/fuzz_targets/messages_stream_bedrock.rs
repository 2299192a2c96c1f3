//! Fuzz target `messages_stream_bedrock`: the Bedrock InvokeModel eventstream turned into Messages events (providers::messages_native::stream), see switchyard_filters::fuzzing::messages_stream.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::messages_stream(switchyard_filters::translate::Dialect::BedrockAnthropic, data));
