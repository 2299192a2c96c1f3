//! Fuzz target `stream_openai_chat`: the OpenAI/Azure stream translator (translate::chat_stream for Dialect::OpenAi), see switchyard_filters::fuzzing::stream.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::stream(switchyard_filters::translate::Dialect::OpenAi, data));
