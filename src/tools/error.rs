//! What a client tool could not do, and with which input.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Why a client tool stopped: each variant names the input it failed on.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A file or folder could not be read, listed or resolved.
    #[error("{action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path named on the command line does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound { path: PathBuf },
    /// A path that has no `file://` form (not absolute once resolved).
    #[error("{} cannot be a file URI", path.display())]
    FileUri { path: PathBuf },
    /// A file that should be an av-digits `manifest.json` but does not parse as one.
    #[error("{}: not an av-digits manifest: {source}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The assignments topic holds no record (within the wait the tool was given).
    #[error("no assignments on topic {topic} at {brokers}")]
    NoAssignments { topic: String, brokers: String },
    /// The broker failed a request.
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A clip the product's decoder cannot turn into windows.
    #[error("{}: {source}", clip.display())]
    Decode {
        clip: PathBuf,
        #[source]
        source: crate::decode::DecodeError,
    },
    /// The `ffmpeg` CLI could not be started.
    #[error("running ffmpeg: {0}")]
    FfmpegStart(#[source] std::io::Error),
    /// The `ffmpeg` CLI ran but failed on a clip.
    #[error("ffmpeg failed on {}: {status}", clip.display())]
    FfmpegFailed { clip: PathBuf, status: ExitStatus },
    /// libtorch refused to build the model.
    #[error("model: {0}")]
    Model(#[from] tch::TchError),
    /// A TorchScript encoder that cannot serve.
    #[error(transparent)]
    Encoder(#[from] crate::model::EncoderError),
    /// The daemon's config does not describe a usable source (e.g. a missing media root).
    #[error(transparent)]
    Source(#[from] crate::Error),
}

impl ToolError {
    /// Wraps a broker error with what the tool was doing.
    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let context = context.into();
        move |source| ToolError::Kafka { context, source }
    }

    /// Wraps an I/O error with what the tool was doing to which path.
    pub(crate) fn file(action: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| ToolError::File { action, path, source }
    }
}
