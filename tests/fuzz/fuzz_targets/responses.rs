//! Fuzz target `responses`: the Responses front door's request side (validate, decode, input items, history, echo), see switchyard_filters::fuzzing::responses.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::responses(data));
