//! Model versions on the models topic (`kafka.models_topic`): how the one trainer hands its
//! weights to every assigner, and how trainers agree which of them is the one.
//!
//! The topic has a single partition, so every reader sees its records in one order, and it is
//! compacted. It holds three kinds of record:
//! - **chunks** of a version: the version's weights in the checkpoint format (with its
//!   configuration fingerprint, cluster-id map and CRC-32 trailer), cut into pieces below the
//!   broker's message limit, each with a header naming the version, the trainer's epoch, the
//!   piece and the checksum of the whole. Keys alternate between two slots by version parity,
//!   so compaction keeps the newest two versions, and a trainer dying halfway through writing
//!   one leaves the one before it whole.
//! - **claims**: a trainer that finds no live holder claims the next epoch; the first claim of
//!   an epoch in the log wins it ([`Leases`]). Deciding by log order needs no broker feature
//!   beyond a single partition.
//! - **heartbeats** of the holder, every quarter of `pipeline.trainer_lease`; a standby claims
//!   the next epoch once the holder's newest heartbeat is older than the lease.
//!
//! Readers accept a version only from the winner of its epoch, only when no later epoch was
//! claimed before it in the log (a trainer fenced off by a newer one cannot publish), and only
//! when it is newer than what they have.

mod feed;
mod lease;

use serde::{Deserialize, Serialize};

pub use feed::{ModelFeed, Published};
pub use lease::Leases;

use crate::sink::OutRecord;

/// The first bytes of a chunk record.
const CHUNK_MAGIC: &[u8; 4] = b"NSMV";

/// A record of the models topic other than a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// `owner` asks to be the trainer of `epoch`; the first such record in the log wins.
    Claim { epoch: u64, owner: String, at_ms: i64 },
    /// The trainer of `epoch` is alive at `at_ms` (its own clock).
    Heartbeat { epoch: u64, owner: String, at_ms: i64 },
}

impl Control {
    /// The record on `topic`.
    pub fn record(&self, topic: &str) -> OutRecord {
        let key = match self {
            Control::Claim { epoch, owner, .. } => format!("claim/{epoch:020}/{owner}"),
            Control::Heartbeat { owner, .. } => format!("heartbeat/{owner}"),
        };
        OutRecord { topic: topic.to_owned(), key, payload: serde_json::to_vec(self).expect("control serializes") }
    }
}

/// What one chunk says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    pub epoch: u64,
    pub owner: String,
    pub version: u64,
    /// This chunk's index, of `chunks`.
    pub chunk: u32,
    pub chunks: u32,
    /// Length and CRC-32 of the whole version.
    pub bytes: u64,
    pub crc: u32,
}

/// One piece of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub header: ChunkHeader,
    pub data: Vec<u8>,
}

/// A record read from the models topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRecord {
    Chunk(Chunk),
    Control(Control),
}

/// Why a record of the models topic was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("chunk header: {0}")]
    Header(String),
    #[error("control record: {0}")]
    Control(String),
}

/// The records of version `version` (its checkpoint bytes `blob`) of the trainer `owner` of
/// `epoch`, in pieces of at most `chunk_bytes` bytes of data.
pub fn chunk_records(
    topic: &str,
    (epoch, owner): (u64, &str),
    version: u64,
    blob: &[u8],
    chunk_bytes: usize,
) -> Vec<OutRecord> {
    let pieces: Vec<&[u8]> = if blob.is_empty() { vec![blob] } else { blob.chunks(chunk_bytes.max(1)).collect() };
    let crc = crc32fast::hash(blob);
    pieces
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let header = ChunkHeader {
                epoch,
                owner: owner.to_owned(),
                version,
                chunk: i as u32,
                chunks: pieces.len() as u32,
                bytes: blob.len() as u64,
                crc,
            };
            let header = serde_json::to_vec(&header).expect("chunk header serializes");
            let mut payload = Vec::with_capacity(8 + header.len() + data.len());
            payload.extend_from_slice(CHUNK_MAGIC);
            payload.extend_from_slice(&(header.len() as u32).to_le_bytes());
            payload.extend_from_slice(&header);
            payload.extend_from_slice(data);
            OutRecord { topic: topic.to_owned(), key: format!("version/{}/{i}", version % 2), payload }
        })
        .collect()
}

/// Reads one record's payload.
pub fn parse(payload: &[u8]) -> Result<TopicRecord, RecordError> {
    if let Some(rest) = payload.strip_prefix(CHUNK_MAGIC) {
        let header_error = |what: &str| RecordError::Header(what.to_owned());
        let length = rest.get(..4).ok_or_else(|| header_error("truncated"))?;
        let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
        let header = rest.get(4..4 + length).ok_or_else(|| header_error("truncated"))?;
        let header: ChunkHeader = serde_json::from_slice(header).map_err(|e| RecordError::Header(e.to_string()))?;
        if header.chunk >= header.chunks {
            return Err(header_error("chunk index beyond the count"));
        }
        return Ok(TopicRecord::Chunk(Chunk { header, data: rest[4 + length..].to_vec() }));
    }
    serde_json::from_slice(payload).map(TopicRecord::Control).map_err(|e| RecordError::Control(e.to_string()))
}

/// Puts versions back together from their chunks.
#[derive(Default)]
pub struct Assembly {
    /// Versions with chunks missing, by (epoch, version).
    partial: std::collections::BTreeMap<(u64, u64), Partial>,
}

struct Partial {
    header: ChunkHeader,
    chunks: Vec<Option<Vec<u8>>>,
}

/// A version whose chunks all arrived.
#[derive(Debug, PartialEq, Eq)]
pub struct Whole {
    pub epoch: u64,
    pub owner: String,
    pub version: u64,
    pub blob: Vec<u8>,
}

/// Why a version that arrived whole is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("version {version}: {problem}")]
pub struct Refused {
    pub version: u64,
    pub problem: String,
}

impl Assembly {
    /// Adds a chunk; the version once its last chunk arrived, checked against its length and
    /// checksum. Chunks of older versions than one completed are dropped.
    pub fn add(&mut self, chunk: Chunk) -> Option<Result<Whole, Refused>> {
        let Chunk { header, data } = chunk;
        let key = (header.epoch, header.version);
        let partial = self
            .partial
            .entry(key)
            .or_insert_with(|| Partial { header: header.clone(), chunks: vec![None; header.chunks as usize] });
        if partial.header.chunks != header.chunks || partial.header.crc != header.crc {
            // Written again differently (a restarted writer of the same version): start over.
            *partial = Partial { header: header.clone(), chunks: vec![None; header.chunks as usize] };
        }
        partial.chunks[header.chunk as usize] = Some(data);
        if partial.chunks.iter().any(Option::is_none) {
            return None;
        }
        let partial = self.partial.remove(&key).expect("present");
        // Anything older than a version that is whole will never be wanted.
        self.partial.retain(|&(_, version), _| version > key.1);
        let blob: Vec<u8> = partial.chunks.into_iter().flatten().flatten().collect();
        let h = partial.header;
        let refused = |problem: String| Some(Err(Refused { version: h.version, problem }));
        if blob.len() as u64 != h.bytes {
            return refused(format!("{} bytes arrived, the header says {}", blob.len(), h.bytes));
        }
        if crc32fast::hash(&blob) != h.crc {
            return refused("checksum mismatch".to_owned());
        }
        Some(Ok(Whole { epoch: h.epoch, owner: h.owner, version: h.version, blob }))
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(version: u64, blob: &[u8], size: usize) -> Vec<Chunk> {
        chunk_records("models", (1, "t1"), version, blob, size)
            .into_iter()
            .map(|r| match parse(&r.payload).unwrap() {
                TopicRecord::Chunk(c) => c,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// A version cut into pieces comes back whole in any order, keyed by slot so that
    /// compaction keeps two versions.
    #[test]
    fn versions_round_trip_through_chunks() {
        let blob: Vec<u8> = (0..2500u32).map(|i| (i * 7 % 251) as u8).collect();
        let records = chunk_records("models", (3, "t1"), 5, &blob, 1000);
        assert_eq!(
            records.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            ["version/1/0", "version/1/1", "version/1/2"]
        );
        let mut pieces = chunks(5, &blob, 1000);
        pieces.reverse();
        let mut assembly = Assembly::default();
        assert!(assembly.add(pieces[0].clone()).is_none());
        assert!(assembly.add(pieces[1].clone()).is_none());
        let whole = assembly.add(pieces[2].clone()).unwrap().unwrap();
        assert_eq!((whole.version, whole.epoch, whole.owner.as_str()), (5, 1, "t1"));
        assert_eq!(whole.blob, blob);
    }

    /// A flipped byte in one piece is caught by the checksum of the whole.
    #[test]
    fn a_corrupt_piece_fails_the_checksum() {
        let blob = vec![9u8; 3000];
        let mut pieces = chunks(2, &blob, 1024);
        pieces[1].data[10] ^= 1;
        let mut assembly = Assembly::default();
        let results: Vec<_> = pieces.into_iter().filter_map(|c| assembly.add(c)).collect();
        assert_eq!(results, [Err(Refused { version: 2, problem: "checksum mismatch".into() })]);
    }

    /// A version whose writer died halfway never completes, and does not block the next one.
    #[test]
    fn a_torn_version_is_skipped_for_the_next() {
        let mut assembly = Assembly::default();
        let torn = chunks(7, &[1; 300], 100);
        assert!(assembly.add(torn[0].clone()).is_none());
        let mut done = None;
        for c in chunks(8, &[2; 300], 100) {
            done = assembly.add(c);
        }
        assert_eq!(done.unwrap().unwrap().version, 8);
        assert!(assembly.partial.is_empty(), "the torn older version is dropped");
    }

    #[test]
    fn control_records_and_garbage() {
        let claim = Control::Claim { epoch: 4, owner: "host-1".into(), at_ms: 9 };
        let record = claim.record("models");
        assert_eq!(record.key, "claim/00000000000000000004/host-1");
        assert_eq!(parse(&record.payload).unwrap(), TopicRecord::Control(claim));
        assert!(matches!(parse(b"NSMV\xff\xff\xff\xff"), Err(RecordError::Header(_))));
        assert!(matches!(parse(b"{}"), Err(RecordError::Control(_))));
    }
}
