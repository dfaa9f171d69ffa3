//! novelstream: discovers new categories in live video.
//!
//! Segments arrive from Kafka ([`source`]), are decoded into windows of frames and audio
//! ([`decode`]), embedded by a tch model ([`model`]), assigned to a known class or a novel cluster
//! ([`assign`]) and published back to Kafka ([`sink`]). [`pipeline`] wires the stages together
//! with bounded queues.

pub mod admin;
pub mod allocator;
pub mod assign;
pub mod bench;
pub mod config;
pub mod decode;
pub mod eval;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod produce;
pub mod report;
pub mod rng;
pub mod score;
pub mod sink;
pub mod source;
pub mod summary;
pub mod train;

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
    #[error("{0}")]
    Pipeline(String),
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
