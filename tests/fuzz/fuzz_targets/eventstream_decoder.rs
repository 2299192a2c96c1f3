//! Fuzz target `eventstream_decoder`: AWS event stream decoding (filters/src/eventstream.rs), see switchyard_filters::fuzzing::eventstream_decoder.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_filters::fuzzing::eventstream_decoder(data));
