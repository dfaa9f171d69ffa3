//! Opening untrusted segment bytes with FFmpeg so that nothing beyond them is read: only the
//! configured container formats, and no protocol for a demuxer's nested opens (a playlist's URLs,
//! a concat script's files, an MP4's external references).

use std::ffi::{CStr, CString};
use std::io::Cursor;
use std::time::Instant;

use ffmpeg::format::context::StreamIo;
use ffmpeg_next as ffmpeg;

use super::media::{undecodable, DecodeError};

/// The protocol allow-list of every open: a name no protocol has, so FFmpeg refuses each nested
/// open ("Protocol 'file' not on whitelist 'none'") before it touches a file or a socket.
const NO_PROTOCOL: &str = "none";

/// Bytes probed to name a refused format: what FFmpeg itself probes before giving up.
const PROBE_BYTES: usize = 1 << 20;

/// Whether FFmpeg has a demuxer called `name` (a name of its comma-separated list counts, so
/// `mp4` names the `mov,mp4,m4a,3gp,3g2,mj2` demuxer).
pub fn demuxer_exists(name: &str) -> bool {
    super::media::init();
    let Ok(name) = CString::new(name) else { return false };
    // SAFETY: `name` is a valid C string; the returned format is static and only compared to null.
    !unsafe { ffmpeg::ffi::av_find_input_format(name.as_ptr()) }.is_null()
}

/// The demuxer FFmpeg's probe picks for `bytes`, if any: probing reads only the bytes given.
pub fn probed_format(bytes: &[u8]) -> Option<String> {
    super::media::init();
    use ffmpeg::ffi;
    let len = bytes.len().min(PROBE_BYTES);
    // FFmpeg's probes may read past the end into this zeroed padding.
    let mut buf = Vec::with_capacity(len + ffi::AVPROBE_PADDING_SIZE as usize);
    buf.extend_from_slice(&bytes[..len]);
    buf.resize(len + ffi::AVPROBE_PADDING_SIZE as usize, 0);
    let probe = ffi::AVProbeData {
        filename: c"".as_ptr(),
        buf: buf.as_mut_ptr(),
        buf_size: len as std::os::raw::c_int,
        mime_type: std::ptr::null(),
    };
    // SAFETY: `probe` points at `buf`, padded as FFmpeg requires, which outlives the call; the
    // returned format is static.
    unsafe {
        let format = ffi::av_probe_input_format(&probe, 1);
        (!format.is_null()).then(|| CStr::from_ptr((*format).name).to_string_lossy().into_owned())
    }
}

/// Whether a demuxer named `name` (a comma-separated list, as FFmpeg names them) is allowed.
pub fn format_allowed(name: &str, allowed: &[String]) -> bool {
    name.split(',').any(|n| allowed.iter().any(|a| a.split(',').any(|a| a == n)))
}

/// Opens `bytes` as media, refusing formats off the allow-list before their header is read.
pub(super) fn open_input(
    bytes: Vec<u8>,
    formats: &[String],
    deadline: Instant,
    timeout_ms: u64,
) -> Result<ffmpeg::format::context::Input, DecodeError> {
    // Kept to name a refused format: FFmpeg's whitelist refusal says only "invalid argument".
    let head = bytes[..bytes.len().min(PROBE_BYTES)].to_vec();
    let mut options = ffmpeg::Dictionary::new();
    options.set("format_whitelist", &formats.join(","));
    options.set("protocol_whitelist", NO_PROTOCOL);
    let io = StreamIo::from_read_seek(Cursor::new(bytes)).map_err(undecodable)?;
    let input =
        ffmpeg::format::input_from_stream_with_interrupt(io, None, Some(options), move || Instant::now() > deadline)
            .map_err(|e| match e {
                ffmpeg::Error::Exit => DecodeError::Timeout { timeout_ms },
                // Probing again only when the open failed: media on the list is probed once.
                e => match probed_format(&head).filter(|name| !format_allowed(name, formats)) {
                    Some(name) => DecodeError::FormatNotAllowed(name),
                    None => undecodable(e),
                },
            })?;
    let name = input.format().name().to_owned();
    if !format_allowed(&name, formats) {
        return Err(DecodeError::FormatNotAllowed(name));
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_any_name_of_a_demuxer() {
        let allowed: Vec<String> = crate::DEFAULT_FORMATS.iter().map(|s| s.to_string()).collect();
        assert!(format_allowed("mov,mp4,m4a,3gp,3g2,mj2", &allowed));
        assert!(format_allowed("matroska,webm", &allowed));
        assert!(format_allowed("mpegts", &allowed));
        for refused in ["concat", "hls", "dash", "sdp", "rtp", "image2", "mpegtsraw", "mp3"] {
            assert!(!format_allowed(refused, &allowed), "{refused}");
        }
    }

    #[test]
    fn playlists_and_scripts_are_named_by_the_probe() {
        assert_eq!(probed_format(b"ffconcat version 1.0\nfile 'a.mp4'\n").as_deref(), Some("concat"));
        assert_eq!(
            probed_format(b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.1/a.ts\n").as_deref(),
            Some("hls")
        );
        assert!(demuxer_exists("mp4") && demuxer_exists("mpegts") && demuxer_exists("matroska"));
        assert!(!demuxer_exists("no-such-demuxer"));
    }
}
