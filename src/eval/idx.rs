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

/// Why bytes are not an IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IdxError {
    /// The first two bytes are not zero: another format altogether.
    #[error("not an IDX file (bad magic)")]
    BadMagic,
    /// Only unsigned bytes (0x08) are read; images and labels of MNIST-like sets are.
    #[error("IDX element type 0x{0:02x} is not unsigned bytes")]
    ElementType(u8),
    /// No dimensions, or fewer header bytes than the dimensions need.
    #[error("truncated IDX header")]
    TruncatedHeader,
    /// The product of the dimensions does not fit in memory's address space.
    #[error("IDX dimensions overflow")]
    Overflow,
    /// The data after the header is not as long as the dimensions say.
    #[error("IDX data holds {have} bytes, dimensions {dims:?} need {need}")]
    Length { have: usize, dims: Vec<usize>, need: usize },
}

/// Parses IDX bytes: magic `0 0 0x08 n`, `n` big-endian u32 dimensions, then the data.
pub fn parse_idx(bytes: &[u8]) -> Result<Idx, IdxError> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(IdxError::BadMagic);
    }
    if bytes[2] != 0x08 {
        return Err(IdxError::ElementType(bytes[2]));
    }
    let n = bytes[3] as usize;
    let header = 4 + 4 * n;
    if n == 0 || bytes.len() < header {
        return Err(IdxError::TruncatedHeader);
    }
    let dims: Vec<usize> =
        (0..n).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize).collect();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or(IdxError::Overflow)?;
    if bytes.len() - header != count {
        return Err(IdxError::Length { have: bytes.len() - header, dims, need: count });
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
        let short = parse_idx(&idx(&[2, 2, 3], &[1; 11])).unwrap_err();
        assert_eq!(short, IdxError::Length { have: 11, dims: vec![2, 2, 3], need: 12 });
        assert!(short.to_string().contains("need 12"));
        assert_eq!(parse_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x01x"), Err(IdxError::ElementType(0x0d)));
        assert_eq!(parse_idx(b"PK\x03\x04"), Err(IdxError::BadMagic));
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
