//! novelstream: discovers new categories in live video.
//!
//! Segments arrive from Kafka ([`source`]), are decoded into windows of frames and audio
//! ([`decode`]), embedded by a tch model ([`model`]), assigned to a known class or a novel cluster
//! ([`assign`]) and published back to Kafka ([`sink`]). [`pipeline`] wires the stages together
//! with bounded queues; [`train`] learns beside them. [`eval`] measures the method offline, and
//! [`tools`] holds the client tools (produce, summary, score, report, bench). The map of the
//! whole is `docs/ARCHITECTURE.md`.

pub mod admin;
pub mod allocator;
pub mod assign;
pub mod config;
pub mod decode;
pub mod eval;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod rng;
pub mod sink;
pub mod source;
pub mod tools;
pub mod train;
pub mod versions;

/// Crate-wide result for the library's top-level entry points.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop the daemon or a command as a whole (per-segment problems become dead letters).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("model: {0}")]
    Model(#[from] tch::TchError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic { topic: String, code: rdkafka::types::RDKafkaErrorCode },
    #[error(transparent)]
    Device(#[from] model::DeviceError),
    /// A TorchScript encoder that cannot serve (missing, not TorchScript, wrong output).
    #[error(transparent)]
    Encoder(#[from] model::EncoderError),
    /// The checkpoint to resume from was written under another configuration.
    #[error(transparent)]
    Checkpoint(#[from] train::checkpoint::CheckpointError),
    /// `checkpoint.start` names no usable checkpoint of this configuration.
    #[error("checkpoint.start: {0}")]
    StartCheckpoint(String),
    /// The model thread ended before it had a model to serve with (its own error is logged).
    #[error("the model thread stopped before it loaded a model")]
    ModelThreadStart,
    /// A thread of the data path panicked: what it held in flight is not published, so its
    /// input offsets were not committed and will be read again.
    #[error("a decoder or the model thread panicked")]
    WorkerPanicked,
    /// Exactly-once needs the consumer's group metadata to commit offsets in a transaction.
    #[error("exactly-once: the consumer has no group metadata to commit offsets with")]
    NoGroupMetadata,
    /// Another trainer claimed a later epoch of the trainer lease: this one must stop.
    #[error("fenced off: this trainer held epoch {epoch}, another claimed epoch {newest}")]
    Fenced { epoch: u64, newest: u64 },
    #[error("the {task} task failed: {source}")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let context = context.into();
        move |source| Error::Kafka { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// Serialises tests that draw from libtorch's global random generator, so a test that seeds it
/// sees the same numbers however the test harness interleaves threads.
#[cfg(test)]
pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
