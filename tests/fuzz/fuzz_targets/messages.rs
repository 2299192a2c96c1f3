//! Fuzz target `messages`: Messages bodies prepared for Claude hosts, answers rewritten, count_tokens (providers::messages_native), see switchyard_filters::fuzzing::messages.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::messages(data));
