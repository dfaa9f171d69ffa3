//! `novelstream produce`: publishes video files as segments, by reference or inline.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::manifest::read_manifest;
use super::ToolError;
use crate::config::KafkaConfig;
use crate::eval::av_digits::AvClip;
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

/// Publishes one segment and waits for its acknowledgement.
async fn send_segment(
    producer: &FutureProducer,
    topic: &str,
    inline: bool,
    s: Outgoing<'_>,
) -> Result<Produced, ToolError> {
    acknowledged(enqueue(producer, topic, inline, s)?).await
}

/// A segment handed to the producer, its acknowledgement to come.
struct Pending {
    segment_id: String,
    path: PathBuf,
    delivery: DeliveryFuture,
}

/// Hands one segment (a `file://` reference, or inline bytes with the fields as headers) to the
/// producer, which sends it with whatever else is queued for its partition.
fn enqueue(producer: &FutureProducer, topic: &str, inline: bool, s: Outgoing<'_>) -> Result<Pending, ToolError> {
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
        .send_result(record)
        .map_err(|(e, _)| ToolError::Kafka { context: format!("producing {}", s.path.display()), source: e })?;
    Ok(Pending { segment_id: s.segment_id, path: s.path.to_owned(), delivery })
}

/// Waits for a segment's acknowledgement: where the broker stored it.
async fn acknowledged(p: Pending) -> Result<Produced, ToolError> {
    let failed = |source| ToolError::Kafka { context: format!("producing {}", p.path.display()), source };
    let delivery = match p.delivery.await {
        Ok(Ok(delivery)) => delivery,
        Ok(Err((e, _))) => return Err(failed(e)),
        Err(_) => return Err(failed(KafkaError::Canceled)),
    };
    Ok(Produced { segment_id: p.segment_id, path: p.path, partition: delivery.partition, offset: delivery.offset })
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
    /// Share of the known classes' clips sent without their label (drawn with `seed`).
    pub unlabelled_known_fraction: f64,
    /// Novel classes entering in stages: the classes of stage `s` are sent only from
    /// `s · stage_time` after the start on (classes in no stage from the start).
    pub novel_stages: Vec<Vec<String>>,
    /// How long each stage runs before the next enters (with `novel_stages`; needs a `rate`).
    pub stage_time: std::time::Duration,
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
    /// Segments handed to the producer before their acknowledgements are awaited: the producer
    /// then stores several per partition in one record batch, as most upstream producers do
    /// (1: each segment is acknowledged before the next is sent, one record per batch).
    pub batch: usize,
}

/// Publishes the clips of a manifest in a seeded random order, round-robin over `streams`
/// streams (`av-0`, `av-1`, …). A clip's segment id is its path in the manifest, so `score`
/// can find its true class; only clips of `known` classes carry their label, less the
/// `unlabelled_known_fraction` of them; classes of later `novel_stages` join the order later.
pub async fn produce_manifest(kafka: &KafkaConfig, options: &ManifestOptions) -> Result<Vec<Produced>, ToolError> {
    let manifest = read_manifest(&options.manifest)?;
    let root = options.manifest.parent().unwrap_or(Path::new("."));
    let clips: Vec<_> =
        manifest.clips.iter().filter(|c| options.split.as_ref().is_none_or(|s| *s == c.split)).collect();
    let mut clips = staged_order(clips, options);
    if options.limit > 0 {
        clips.truncate(options.limit);
    }
    let mut draw = crate::rng::SplitMix64::new(options.seed ^ 0x0075_6e6c_6162_656c);
    let producer: FutureProducer = kafka.client_config().create().map_err(ToolError::kafka("creating producer"))?;
    let streams: Vec<String> = (0..options.streams.max(1)).map(|i| format!("av-{i}")).collect();
    let started = std::time::Instant::now();
    let mut produced = Vec::with_capacity(clips.len());
    let mut pending = Vec::new();
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
            label: (options.known.contains(&clip.label) && draw.uniform(0.0, 1.0) >= options.unlabelled_known_fraction)
                .then_some(clip.label.as_str()),
        };
        pending.push(enqueue(&producer, &options.topic, options.inline, segment)?);
        if pending.len() >= options.batch.max(1) || i + 1 == clips.len() {
            for p in pending.drain(..) {
                produced.push(acknowledged(p).await?);
            }
        }
    }
    Ok(produced)
}

/// The clips in the order they are sent: shuffled with the options' seed, then, with novel
/// stages, dealt so that the `rate · stage_time` clips of stage `s` come only from the classes
/// of stages up to `s` (and the classes in no stage); the last stage takes what is left.
fn staged_order<'c>(mut clips: Vec<&'c AvClip>, options: &ManifestOptions) -> Vec<&'c AvClip> {
    crate::rng::SplitMix64::new(options.seed).shuffle(&mut clips);
    if options.novel_stages.is_empty() {
        return clips;
    }
    let stage_of =
        |clip: &AvClip| options.novel_stages.iter().position(|stage| stage.contains(&clip.label)).unwrap_or(0);
    let per_stage = (options.rate * options.stage_time.as_secs_f64()).round() as usize;
    let mut waiting: Vec<Option<&AvClip>> = clips.into_iter().map(Some).collect();
    let mut ordered = Vec::with_capacity(waiting.len());
    for stage in 0..options.novel_stages.len() {
        let last = stage + 1 == options.novel_stages.len();
        for slot in waiting.iter_mut() {
            if !last && ordered.len() >= per_stage * (stage + 1) {
                break;
            }
            if slot.as_ref().is_some_and(|clip| stage_of(clip) <= stage) {
                ordered.extend(slot.take());
            }
        }
    }
    ordered
}

/// The `file://` URI of a path, made absolute.
pub fn file_uri(path: &Path) -> Result<String, ToolError> {
    let absolute = path.canonicalize().map_err(ToolError::file("resolving", path))?;
    url::Url::from_file_path(&absolute).map(|u| u.to_string()).map_err(|()| ToolError::FileUri { path: absolute })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clips of classes 0 (known), 5, 6 and 7 (novel): with stages `5:6,7`, two clips a second
    /// and stages of 5 s, the first 10 clips hold no 6 or 7, every clip is sent once, and the
    /// order without stages is the seeded shuffle.
    #[test]
    fn novel_classes_enter_in_stages() {
        let clip = |i: usize, label: &str| AvClip {
            path: format!("c{i}").into(),
            split: "test".into(),
            label: label.into(),
            image: i,
            speech: String::new(),
            language: String::new(),
        };
        let all: Vec<AvClip> = (0..40).map(|i| clip(i, ["0", "5", "6", "7"][i % 4])).collect();
        let mut options = ManifestOptions {
            topic: String::new(),
            manifest: PathBuf::new(),
            split: None,
            known: vec!["0".into()],
            unlabelled_known_fraction: 0.0,
            novel_stages: vec![vec!["5".into()], vec!["6".into(), "7".into()]],
            stage_time: std::time::Duration::from_secs(5),
            streams: 1,
            seed: 3,
            rate: 2.0,
            limit: 0,
            inline: false,
            batch: 1,
        };
        let staged = staged_order(all.iter().collect(), &options);
        assert_eq!(staged.len(), 40);
        assert!(staged[..10].iter().all(|c| c.label == "0" || c.label == "5"), "stage 0");
        assert!(staged[10..].iter().any(|c| c.label == "6") && staged[10..].iter().any(|c| c.label == "7"));
        let mut paths: Vec<_> = staged.iter().map(|c| c.path.clone()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 40, "each clip once");
        options.novel_stages.clear();
        let plain = staged_order(all.iter().collect(), &options);
        let mut expected: Vec<&AvClip> = all.iter().collect();
        crate::rng::SplitMix64::new(3).shuffle(&mut expected);
        assert_eq!(plain, expected);
    }
}
