//! Media bytes under the container allow-list, playlists and scripts as seeds, see
//! `novelstream_input::fuzz::demux_case`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novelstream_input::fuzz::demux_case(data));
