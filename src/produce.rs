//! `novelstream produce`: publishes video files as segments, by reference or inline.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::config::KafkaConfig;
use crate::source::{SegmentRef, SEGMENT_SCHEMA};
use crate::{Error, Result};

/// What to publish and how.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub topic: String,
    /// Files, or directories whose files are taken in name order.
    pub paths: Vec<PathBuf>,
    pub stream_id: String,
    /// Sequence number of the first segment.
    pub first_seq: u64,
    pub label: Option<String>,
    /// Send the media bytes as the message (headers carry the fields) instead of a `file://` URI.
    pub inline: bool,
}

/// One published segment.
#[derive(Debug, Clone)]
pub struct Produced {
    pub segment_id: String,
    pub path: PathBuf,
    pub partition: i32,
    pub offset: i64,
}

/// Lists the files to publish: files as given, directories expanded (not recursively), sorted.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(Error::io(format!("listing {}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            inner.sort();
            files.extend(inner);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(Error::Io {
                context: format!("{}", path.display()),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            });
        }
    }
    Ok(files)
}

/// Publishes each file as one segment of `stream_id`, waiting for every acknowledgement.
pub async fn produce(kafka: &KafkaConfig, options: &ProduceOptions) -> Result<Vec<Produced>> {
    let files = collect_files(&options.paths)?;
    let producer: FutureProducer = kafka.client_config().create().map_err(Error::kafka("creating producer"))?;
    let mut produced = Vec::with_capacity(files.len());
    for (i, path) in files.iter().enumerate() {
        let seq = options.first_seq + i as u64;
        let segment_id = format!("{}-{seq}-{}", options.stream_id, &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let start_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).ok();
        let (payload, headers) = if options.inline {
            let bytes = std::fs::read(path).map_err(Error::io(format!("reading {}", path.display())))?;
            let seq_text = seq.to_string();
            let start_text = start_ms.map(|t| t.to_string());
            let mut headers = OwnedHeaders::new();
            let mut fields = vec![
                ("schema", SEGMENT_SCHEMA),
                ("stream_id", options.stream_id.as_str()),
                ("segment_id", segment_id.as_str()),
                ("seq", seq_text.as_str()),
            ];
            if let Some(label) = &options.label {
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
                stream_id: options.stream_id.clone(),
                segment_id: segment_id.clone(),
                seq,
                uri: file_uri(path)?,
                label: options.label.clone(),
                start_ms,
            };
            (serde_json::to_vec(&reference).expect("segment references serialize"), None)
        };
        let mut record = FutureRecord::to(&options.topic).key(&options.stream_id).payload(&payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let delivery = producer
            .send(record, Timeout::Never)
            .await
            .map_err(|(e, _)| Error::Kafka { context: format!("producing {}", path.display()), source: e })?;
        produced.push(Produced {
            segment_id,
            path: path.clone(),
            partition: delivery.partition,
            offset: delivery.offset,
        });
    }
    Ok(produced)
}

/// The `file://` URI of a path, made absolute.
pub fn file_uri(path: &Path) -> Result<String> {
    let absolute = path.canonicalize().map_err(Error::io(format!("resolving {}", path.display())))?;
    url::Url::from_file_path(&absolute)
        .map(|u| u.to_string())
        .map_err(|()| Error::Pipeline(format!("{} cannot be a file URI", absolute.display())))
}
