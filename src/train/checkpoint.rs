//! Checkpoints of the online learner: weights of the model and of its momentum encoder, the
//! memory banks, the WTA permutations, the step and the model version, in one file written
//! atomically (temporary file, fsync, rename; the previous checkpoint is kept as `*.prev`).
//! A CRC-32 trailer detects torn or corrupt files; loading falls back to the previous one.
//!
//! File: libtorch's named-tensor archive (`Tensor::save_multi`), with the metadata as JSON bytes in
//! the tensor `__meta__`, then 8 bytes: the CRC-32 of everything before, and the magic `NSCK`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::fingerprint::{changed, Fingerprint};
use super::{ClusterIds, Learner, WtaHash};

const MAGIC: &[u8; 4] = b"NSCK";
const META: &str = "__meta__";
/// Bumped when the layout changes; older files are refused with a clear error.
pub const FORMAT: u32 = 1;

/// What is saved besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointMeta {
    pub format: u32,
    pub version: u64,
    pub step: u64,
    pub wta_dim: usize,
    pub wta_prefixes: Vec<Vec<usize>>,
    /// Wall-clock time of the save, ms since the epoch.
    pub saved_at_ms: i64,
    /// The configuration the state was trained under (empty in checkpoints older than it).
    #[serde(default)]
    pub fingerprint: Fingerprint,
    /// The published id of each novel output (empty in checkpoints older than it: outputs are
    /// published as themselves).
    #[serde(default)]
    pub cluster_ids: ClusterIds,
}

/// Why a checkpoint could not be written, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: corrupt or torn checkpoint ({problem})")]
    Corrupt { path: PathBuf, problem: String },
    #[error("{path}: {source}")]
    Tensors { path: PathBuf, source: tch::TchError },
    /// The file is sound but was written by a learner of another model config.
    #[error("{path}: checkpoint does not fit this model config: {source}")]
    Mismatch { path: PathBuf, source: RestoreError, version: u64 },
    /// The file was written under another configuration: these keys differ.
    #[error("{path}: checkpoint was written under another configuration ({}); restore that configuration, or set checkpoint.discard_mismatched = true to start over from initial weights", keys.join("; "))]
    ConfigChanged { path: PathBuf, keys: Vec<String>, version: u64 },
}

impl CheckpointMeta {
    /// The metadata of a state saved now.
    pub fn new(version: u64, step: u64, wta: &WtaHash, fingerprint: &Fingerprint, cluster_ids: &ClusterIds) -> Self {
        CheckpointMeta {
            format: FORMAT,
            version,
            step,
            wta_dim: wta.dim(),
            wta_prefixes: wta.prefixes().to_vec(),
            saved_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            fingerprint: fingerprint.clone(),
            cluster_ids: cluster_ids.clone(),
        }
    }
}

impl CheckpointError {
    /// The model version of a checkpoint that was read but does not fit.
    pub fn mismatched_version(&self) -> Option<u64> {
        match self {
            CheckpointError::Mismatch { version, .. } | CheckpointError::ConfigChanged { version, .. } => {
                Some(*version)
            }
            _ => None,
        }
    }
}

/// Which of a checkpoint's tensors does not fit the learner it is restored into.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A tensor this learner has is not in the checkpoint.
    #[error("checkpoint lacks {name}")]
    Missing { name: String },
    /// A tensor has another shape in the checkpoint than here.
    #[error("{name}: shape {found:?} in the checkpoint, {expected:?} here")]
    Shape { name: String, expected: Vec<i64>, found: Vec<i64> },
    /// The WTA permutations compare another number of dimensions.
    #[error("WTA over {found} dimensions in the checkpoint, {expected} here")]
    WtaDimensions { expected: usize, found: usize },
    /// A tensor's values make no sense here.
    #[error("{name}: {problem}")]
    Invalid { name: String, problem: String },
    /// A tensor is there but its values cannot be read as expected.
    #[error("{name}: {source}")]
    Unreadable { name: String, source: tch::TchError },
}

impl RestoreError {
    /// `Ok` when `found`, the checkpoint's tensor `name`, has the shape of `expected`.
    pub fn check_shape(name: &str, expected: &Tensor, found: &Tensor) -> Result<(), RestoreError> {
        if found.size() == expected.size() {
            return Ok(());
        }
        Err(RestoreError::Shape { name: name.to_owned(), expected: expected.size(), found: found.size() })
    }
}

/// The previous generation of `path`.
pub fn previous(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".prev");
    path.with_file_name(name)
}

/// A checkpoint as bytes: the tensor archive with the metadata, then the CRC-32 trailer. Model
/// versions on the models topic are these bytes too.
pub fn to_bytes(meta: &CheckpointMeta, tensors: &[(String, Tensor)]) -> Result<Vec<u8>, tch::TchError> {
    let meta_bytes = serde_json::to_vec(meta).expect("checkpoint metadata serializes");
    let mut named: Vec<(&str, Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t.to(tch::Device::Cpu))).collect();
    named.push((META, Tensor::from_slice(&meta_bytes)));
    let mut bytes = Vec::new();
    Tensor::save_multi_to_stream(&named, &mut bytes)?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(MAGIC);
    Ok(bytes)
}

/// Writes a checkpoint atomically; the one it replaces becomes [`previous`].
pub fn save(path: &Path, meta: &CheckpointMeta, tensors: &[(String, Tensor)]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io { path: path.to_owned(), source };
    let bytes = to_bytes(meta, tensors).map_err(|source| CheckpointError::Tensors { path: path.to_owned(), source })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    if path.exists() {
        std::fs::rename(path, previous(path)).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Reads and verifies one checkpoint file.
pub fn load(path: &Path) -> Result<(CheckpointMeta, Vec<(String, Tensor)>), CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_owned(), source })?;
    from_bytes(&bytes, path)
}

/// Verifies and reads checkpoint `bytes` (see [`to_bytes`]); `origin` names them in errors.
pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<(CheckpointMeta, Vec<(String, Tensor)>), CheckpointError> {
    let corrupt = |problem: &str| CheckpointError::Corrupt { path: origin.to_owned(), problem: problem.to_owned() };
    if bytes.len() < 8 || &bytes[bytes.len() - 4..] != MAGIC {
        return Err(corrupt("no trailer"));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 8);
    let stored = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != stored {
        return Err(corrupt("checksum mismatch"));
    }
    let loaded = Tensor::load_multi_from_stream(std::io::Cursor::new(body));
    let mut tensors = loaded.map_err(|source| CheckpointError::Tensors { path: origin.to_owned(), source })?;
    let at = tensors.iter().position(|(n, _)| n == META).ok_or_else(|| corrupt("no metadata"))?;
    let (_, meta) = tensors.swap_remove(at);
    let meta: CheckpointMeta =
        serde_json::from_slice(&Vec::<u8>::try_from(meta).map_err(|_| corrupt("metadata is not bytes"))?)
            .map_err(|e| corrupt(&format!("metadata: {e}")))?;
    if meta.format != FORMAT {
        return Err(corrupt(&format!("format {} (this build reads {FORMAT})", meta.format)));
    }
    Ok((meta, tensors))
}

/// The newest good checkpoint: `path`, else its previous generation (saying why in the log);
/// `None` when neither exists or both are unusable.
pub fn load_latest(path: &Path) -> Option<(CheckpointMeta, Vec<(String, Tensor)>)> {
    for candidate in [path.to_owned(), previous(path)] {
        if !candidate.exists() {
            continue;
        }
        match load(&candidate) {
            Ok(found) => {
                tracing::info!(path = %candidate.display(), version = found.0.version, step = found.0.step,
                    "restored checkpoint");
                return Some(found);
            }
            Err(e) => tracing::error!(error = %e, "checkpoint unusable; trying the previous one"),
        }
    }
    None
}

/// Writes `learner`'s state as model version `version` (see [`save`]); the step it was at.
pub fn save_learner(
    path: &Path,
    version: u64,
    learner: &Learner,
    fingerprint: &Fingerprint,
    cluster_ids: &ClusterIds,
) -> Result<u64, CheckpointError> {
    let (step, wta, tensors) = learner.state();
    let meta = CheckpointMeta::new(version, step, wta, fingerprint, cluster_ids);
    save(path, &meta, &tensors)?;
    Ok(step)
}

/// Restores `learner` from the newest good checkpoint at `path` (see [`load_latest`]): its
/// metadata, or `None` when there is no usable checkpoint. One written under another
/// configuration (`fingerprint`) is refused naming the keys, one whose tensors do not fit naming
/// the first that does not; either way nothing of it is applied.
pub fn resume(
    path: &Path,
    learner: &mut Learner,
    fingerprint: &Fingerprint,
) -> Result<Option<CheckpointMeta>, CheckpointError> {
    let Some((meta, tensors)) = load_latest(path) else {
        return Ok(None);
    };
    restore(path, learner, fingerprint, meta, &tensors).map(Some)
}

/// Restores `learner` from a state read from `origin` (a file, a models topic) after checking
/// its configuration against `fingerprint`; nothing of it is applied when it does not fit.
pub fn restore(
    origin: &Path,
    learner: &mut Learner,
    fingerprint: &Fingerprint,
    meta: CheckpointMeta,
    tensors: &[(String, Tensor)],
) -> Result<CheckpointMeta, CheckpointError> {
    if meta.fingerprint.is_empty() {
        tracing::warn!("checkpoint predates configuration fingerprints: only its tensor shapes are checked");
    } else {
        let keys = changed(&meta.fingerprint, fingerprint);
        if !keys.is_empty() {
            return Err(CheckpointError::ConfigChanged { path: origin.to_owned(), keys, version: meta.version });
        }
    }
    let wta = WtaHash::from_prefixes(meta.wta_dim, meta.wta_prefixes.clone());
    learner.restore(meta.step, wta, tensors).map_err(|source| CheckpointError::Mismatch {
        path: origin.to_owned(),
        source,
        version: meta.version,
    })?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: u64) -> CheckpointMeta {
        CheckpointMeta {
            format: FORMAT,
            version,
            step: version * 10,
            wta_dim: 4,
            wta_prefixes: vec![vec![0, 2], vec![3, 1]],
            saved_at_ms: 0,
            fingerprint: Fingerprint::from([("model.channels".to_owned(), "[8]".to_owned())]),
            cluster_ids: ClusterIds::default(),
        }
    }

    #[test]
    fn round_trip_and_fallback_to_the_previous_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("learner.ckpt");
        let w = |v: f32| vec![("online.w".to_owned(), Tensor::from_slice(&[v, v + 1.0]))];
        save(&path, &meta(1), &w(1.0)).unwrap();
        save(&path, &meta(2), &w(5.0)).unwrap();
        let (m, t) = load(&path).unwrap();
        assert_eq!(m, meta(2));
        assert_eq!(Vec::<f32>::try_from(&t[0].1).unwrap(), vec![5.0, 6.0]);

        // A torn write (truncated) and a flipped byte are both detected; the previous one is used.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(load(&path), Err(CheckpointError::Corrupt { .. })));
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 3] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        let (m, t) = load_latest(&path).unwrap();
        assert_eq!(m.version, 1);
        assert_eq!(Vec::<f32>::try_from(&t[0].1).unwrap(), vec![1.0, 2.0]);
        assert!(load_latest(&dir.path().join("none.ckpt")).is_none());
    }
}
