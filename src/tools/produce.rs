//! `novelstream produce`: publishes video files as segments, by reference or inline.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::manifest::read_manifest;
use super::ToolError;
use crate::config::KafkaConfig;
use crate::source::{SegmentRef, SEGMENT_SCHEMA};

/// What to publish and how.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// The topic the daemon reads segments from.
    pub topic: String,
    /// Files, or directories whose files are taken in name order.
    pub paths: Vec<PathBuf>,
    /// The stream every file belongs to (the message key).
    pub stream_id: String,
    /// Sequence number of the first segment.
    pub first_seq: u64,
    /// Known class every segment is labelled with, or none.
    pub label: Option<String>,
    /// Send the media bytes as the message (headers carry the fields) instead of a `file://` URI.
    pub inline: bool,
}

/// One published segment.
#[derive(Debug, Clone)]
pub struct Produced {
    pub segment_id: String,
    /// The file the segment's media came from.
    pub path: PathBuf,
    /// Where the broker stored it.
    pub partition: i32,
    pub offset: i64,
}

/// Lists the files to publish: files as given, directories expanded (not recursively), sorted.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ToolError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(ToolError::file("listing", path))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            inner.sort();
            files.extend(inner);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(ToolError::NotFound { path: path.clone() });
        }
    }
    Ok(files)
}

/// Publishes each file as one segment of `stream_id`, waiting for every acknowledgement.
pub async fn produce(kafka: &KafkaConfig, options: &ProduceOptions) -> Result<Vec<Produced>, ToolError> {
    let files = collect_files(&options.paths)?;
    let producer: FutureProducer = kafka.client_config().create().map_err(ToolError::kafka("creating producer"))?;
    let mut produced = Vec::with_capacity(files.len());
    for (i, path) in files.iter().enumerate() {
        let seq = options.first_seq + i as u64;
        let segment = Outgoing {
            stream_id: &options.stream_id,
            segment_id: format!("{}-{seq}-{}", options.stream_id, &uuid::Uuid::new_v4().simple().to_string()[..12]),
            seq,
            path,
            label: options.label.as_deref(),
        };
        produced.push(send_segment(&producer, &options.topic, options.inline, segment).await?);
    }
    Ok(produced)
}

/// One segment to publish.
struct Outgoing<'a> {
    stream_id: &'a str,
    segment_id: String,
    seq: u64,
    path: &'a Path,
    label: Option<&'a str>,
}

/// Publishes one segment (a `file://` reference, or inline bytes with the fields as headers) and
/// waits for its acknowledgement.
async fn send_segment(
    producer: &FutureProducer,
    topic: &str,
    inline: bool,
    s: Outgoing<'_>,
) -> Result<Produced, ToolError> {
    let start_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).ok();
    let (payload, headers) = if inline {
        let bytes = std::fs::read(s.path).map_err(ToolError::file("reading", s.path))?;
        let seq_text = s.seq.to_string();
        let start_text = start_ms.map(|t| t.to_string());
        let mut headers = OwnedHeaders::new();
        let mut fields = vec![
            ("schema", SEGMENT_SCHEMA),
            ("stream_id", s.stream_id),
            ("segment_id", s.segment_id.as_str()),
            ("seq", seq_text.as_str()),
        ];
        if let Some(label) = s.label {
            fields.push(("label", label));
        }
        if let Some(start) = &start_text {
            fields.push(("start_ms", start));
        }
        for (key, value) in fields {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        (bytes, Some(headers))
    } else {
        let reference = SegmentRef {
            schema: Some(SEGMENT_SCHEMA.to_owned()),
            stream_id: s.stream_id.to_owned(),
            segment_id: s.segment_id.clone(),
            seq: s.seq,
            uri: file_uri(s.path)?,
            label: s.label.map(str::to_owned),
            start_ms,
        };
        (serde_json::to_vec(&reference).expect("segment references serialize"), None)
    };
    let mut record = FutureRecord::to(topic).key(s.stream_id).payload(&payload);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    let delivery = producer
        .send(record, Timeout::Never)
        .await
        .map_err(|(e, _)| ToolError::Kafka { context: format!("producing {}", s.path.display()), source: e })?;
    Ok(Produced {
        segment_id: s.segment_id,
        path: s.path.to_owned(),
        partition: delivery.partition,
        offset: delivery.offset,
    })
}

/// Streaming a labelled clip set (an `av-digits` manifest) as several interleaved streams.
#[derive(Debug, Clone)]
pub struct ManifestOptions {
    /// The topic the daemon reads segments from.
    pub topic: String,
    /// The av-digits `manifest.json`; clip paths are relative to its folder.
    pub manifest: PathBuf,
    /// Only clips of this split (`train`, `test`), or all.
    pub split: Option<String>,
    /// Classes whose clips carry their label; every other clip is sent unlabelled.
    pub known: Vec<String>,
    /// Streams the clips are dealt over, round-robin.
    pub streams: usize,
    /// Order of the clips: shuffled with this seed.
    pub seed: u64,
    /// Segments per second over all streams (0: as fast as the broker acknowledges).
    pub rate: f64,
    /// Clips sent at most (0: all).
    pub limit: usize,
    /// Send the media bytes in the message instead of a `file://` URI.
    pub inline: bool,
}

/// Publishes the clips of a manifest in a seeded random order, round-robin over `streams`
/// streams (`av-0`, `av-1`, …). A clip's segment id is its path in the manifest, so `score`
/// can find its true class; only clips of `known` classes carry their label.
pub async fn produce_manifest(kafka: &KafkaConfig, options: &ManifestOptions) -> Result<Vec<Produced>, ToolError> {
    let manifest = read_manifest(&options.manifest)?;
    let root = options.manifest.parent().unwrap_or(Path::new("."));
    let mut clips: Vec<_> =
        manifest.clips.iter().filter(|c| options.split.as_ref().is_none_or(|s| *s == c.split)).collect();
    crate::rng::SplitMix64::new(options.seed).shuffle(&mut clips);
    if options.limit > 0 {
        clips.truncate(options.limit);
    }
    let producer: FutureProducer = kafka.client_config().create().map_err(ToolError::kafka("creating producer"))?;
    let streams: Vec<String> = (0..options.streams.max(1)).map(|i| format!("av-{i}")).collect();
    let started = std::time::Instant::now();
    let mut produced = Vec::with_capacity(clips.len());
    for (i, clip) in clips.iter().enumerate() {
        if options.rate > 0.0 {
            let due = started + std::time::Duration::from_secs_f64(i as f64 / options.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let path = root.join(&clip.path);
        let segment = Outgoing {
            stream_id: &streams[i % streams.len()],
            segment_id: clip.path.to_string_lossy().into_owned(),
            seq: (i / streams.len()) as u64,
            path: &path,
            label: options.known.contains(&clip.label).then_some(clip.label.as_str()),
        };
        produced.push(send_segment(&producer, &options.topic, options.inline, segment).await?);
    }
    Ok(produced)
}

/// The `file://` URI of a path, made absolute.
pub fn file_uri(path: &Path) -> Result<String, ToolError> {
    let absolute = path.canonicalize().map_err(ToolError::file("resolving", path))?;
    url::Url::from_file_path(&absolute).map(|u| u.to_string()).map_err(|()| ToolError::FileUri { path: absolute })
}
