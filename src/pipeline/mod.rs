//! Wiring of the daemon: Kafka → parse → decode (threads) → model (thread) → produce → commit.
//!
//! Every edge is a bounded queue whose policy when full is to wait: nothing is dropped, so a
//! slow stage slows consumption instead of losing input. An input offset is committed only
//! after every record made from it (assignments or one dead letter) was acknowledged.
//!
//! Each stage is a file with one small context type, and the roles of `novelstream run --role`
//! are compositions of them:
//! - `all` and `assign` ([`serve`]): [`consume`] → [`decoders`] → [`model`] → [`publish`]; `all`
//!   trains beside the model stage and writes the clusters topic ([`clusters`]), `assign` takes
//!   its model versions from the models topic ([`crate::versions`]).
//! - `train` ([`train`]): its own read of the input topic → [`decoders`] → the trainer, model
//!   versions to the models topic, and the clusters topic aggregated from the assignments.

mod clusters;
mod consume;
mod decoders;
mod model;
mod publish;
mod records;
mod serve;
mod train;

use std::sync::Arc;

use crate::config::{Config, Role};
use crate::decode::Window;
use crate::metrics::Metrics;
use crate::sink::OutRecord;
use crate::source::{Coordinates, Segment};
use crate::{Error, Result};

/// A segment on its way to a decoder.
struct Job {
    coordinates: Coordinates,
    segment: Segment,
}

/// A decoded segment on its way to the model.
struct Decoded {
    coordinates: Coordinates,
    segment: Segment,
    windows: Vec<Window>,
}

/// Everything one input message turned into, ready to produce.
struct Outcome {
    coordinates: Coordinates,
    records: Vec<OutRecord>,
}

/// Counts of one run, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    pub segments: u64,
    pub windows: u64,
    pub dead_letters: u64,
}

/// Runs the daemon in its role (`pipeline.role`) until `shutdown` is cancelled, then drains
/// what is in flight.
pub async fn run(config: Config, shutdown: tokio_util::sync::CancellationToken) -> Result<RunStats> {
    config.validate()?;
    let metrics = Arc::new(Metrics::default());
    let endpoint = tokio_util::sync::CancellationToken::new();
    if !config.metrics.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .map_err(Error::io(format!("listening for metrics on {}", config.metrics.listen)))?;
        tracing::info!(listen = %config.metrics.listen, "metrics on /metrics, health on /healthz and /readyz");
        tokio::spawn(crate::metrics::serve(listener, metrics.clone(), endpoint.clone()));
    }
    let _endpoint_guard = endpoint.drop_guard();
    match config.pipeline.role {
        Role::All | Role::Assign => serve::run(config, metrics, shutdown).await,
        Role::Train => train::run(config, metrics, shutdown).await,
    }
}

/// Wall-clock milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    crate::versions::now_ms()
}
