//! Fuzz target `answers`: non-stream answers, embeddings and errors of every dialect (dialect from the first byte), see switchyard_filters::fuzzing::answers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::answers(data));
