//! Segment messages: headers and payload from fuzz bytes, see `novelstream_input::fuzz::parse_case`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novelstream_input::fuzz::parse_case(data));
