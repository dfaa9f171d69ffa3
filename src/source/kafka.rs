//! The daemon's consumer: manual offset commits, quick group joins, rebalances logged.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::OffsetTracker;
use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::Error;

/// Where an input message came from: the coordinates dead letters and commits refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
}

/// Forgets in-flight offsets of revoked partitions, so late acknowledgements commit nothing
/// for a partition another member now owns, and tells the tracker the committed offsets of
/// assigned ones, so input the broker skips shows up as a gap.
/// Also reports broker outages to the metrics.
pub struct SegmentConsumerContext {
    offsets: Arc<OffsetTracker>,
    metrics: Arc<Metrics>,
}

impl ClientContext for SegmentConsumerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.broker_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.metrics.broker_down(reason);
        } else {
            tracing::warn!(error = %error, reason, "kafka client error");
        }
    }
}

impl SegmentConsumerContext {
    /// How long an assignment waits for the group's committed offsets before going on unchecked.
    const COMMITTED_TIMEOUT: Duration = Duration::from_secs(5);

    /// Gives the tracker the group's committed offset of each newly assigned partition.
    fn expect_committed(&self, consumer: &BaseConsumer<Self>, assigned: &TopicPartitionList) {
        match consumer.committed_offsets(assigned.clone(), Self::COMMITTED_TIMEOUT) {
            Ok(committed) => {
                for e in committed.elements() {
                    if let Offset::Offset(at) = e.offset() {
                        self.offsets.expect(e.topic(), e.partition(), at);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading committed offsets failed; input gaps go unchecked"),
        }
    }
}

impl ConsumerContext for SegmentConsumerContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                for e in list.elements() {
                    self.offsets.forget(e.topic(), e.partition());
                }
                tracing::info!(partitions = list.count(), "partitions revoked");
            }
            Rebalance::Assign(list) => tracing::info!(partitions = list.count(), "partitions assigned"),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.expect_committed(consumer, list);
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(error = %e, partitions = offsets.count(), "offset commit failed");
        }
    }
}

pub type SegmentConsumer = StreamConsumer<SegmentConsumerContext>;

/// A consumer of the input topic that commits only what the pipeline says is done.
pub fn consumer(
    config: &KafkaConfig,
    offsets: Arc<OffsetTracker>,
    metrics: Arc<Metrics>,
) -> Result<SegmentConsumer, Error> {
    let mut client = config.client_config();
    client
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    for (key, default) in [("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "1000")] {
        if !config.properties.contains_key(key) {
            client.set(key, default);
        }
    }
    client.create_with_context(SegmentConsumerContext { offsets, metrics }).map_err(Error::kafka("creating consumer"))
}
