//! Fuzz target `cache_key`: the response cache's canonical request form and answer identity, see switchyard_filters::fuzzing::cache_key.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::cache_key(data));
