//! Fuzz target `usage`: the passthrough usage meter's scan against its serde_json reading, see switchyard_filters::fuzzing::usage.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::usage(data));
