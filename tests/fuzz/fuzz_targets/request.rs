//! Fuzz target `request`: request parsing, validation and prepare_chat/prepare_embeddings for every dialect.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::request(data));
