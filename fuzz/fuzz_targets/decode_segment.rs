//! Media bytes decoded as a segment, see `novelstream_input::fuzz::decode_case`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novelstream_input::fuzz::decode_case(data));
