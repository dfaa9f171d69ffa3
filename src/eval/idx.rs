//! IDX files (the MNIST / Fashion-MNIST layout), plain or gzip-compressed.

use std::io::Read;
use std::path::Path;

use super::EvalError;

/// An IDX file of unsigned bytes: its dimensions and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads `path`, or `path.gz` when only the compressed file exists.
pub fn read_idx(path: &Path) -> Result<Idx, EvalError> {
    let gz = path.with_extension(match path.extension() {
        Some(ext) => format!("{}.gz", ext.to_string_lossy()),
        None => "gz".into(),
    });
    let (actual, compressed) = if path.exists() {
        (path.to_owned(), path.extension().is_some_and(|e| e == "gz"))
    } else if gz.exists() {
        (gz, true)
    } else {
        return Err(EvalError::Dataset(format!("{} not found (nor {})", path.display(), gz.display())));
    };
    let raw = std::fs::read(&actual).map_err(|e| EvalError::Dataset(format!("{}: {e}", actual.display())))?;
    let bytes = if compressed {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| EvalError::Dataset(format!("{}: {e}", actual.display())))?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|why| EvalError::Dataset(format!("{}: {why}", actual.display())))
}

/// Parses IDX bytes: magic `0 0 0x08 n`, `n` big-endian u32 dimensions, then the data.
pub fn parse_idx(bytes: &[u8]) -> Result<Idx, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (bad magic)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x} is not unsigned bytes", bytes[2]));
    }
    let n = bytes[3] as usize;
    let header = 4 + 4 * n;
    if n == 0 || bytes.len() < header {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> =
        (0..n).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize).collect();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("IDX dimensions overflow")?;
    if bytes.len() - header != count {
        return Err(format!("IDX data holds {} bytes, dimensions {:?} need {count}", bytes.len() - header, dims));
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_and_rejects() {
        let parsed = parse_idx(&idx(&[2, 2, 3], &[1; 12])).unwrap();
        assert_eq!(parsed.dims, vec![2, 2, 3]);
        assert_eq!(parsed.data.len(), 12);
        assert!(parse_idx(&idx(&[2, 2, 3], &[1; 11])).unwrap_err().contains("need 12"));
        assert!(parse_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x01x").unwrap_err().contains("element type"));
        assert!(parse_idx(b"PK\x03\x04").unwrap_err().contains("magic"));
    }

    #[test]
    fn reads_gzip_beside_a_missing_plain_file() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&idx(&[3], &[7, 8, 9])).unwrap();
        std::fs::write(dir.path().join("labels-idx1-ubyte.gz"), gz.finish().unwrap()).unwrap();
        let read = read_idx(&dir.path().join("labels-idx1-ubyte")).unwrap();
        assert_eq!(read.data, vec![7, 8, 9]);
    }
}
