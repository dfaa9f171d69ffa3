//! The consuming stage: reads the input topic, checks offsets (gaps, re-reads), parses each
//! message; usable segments go to the decoders, the rest straight to the dead-letter topic.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::Offset;
use tokio_util::sync::CancellationToken;

use super::records::dead_letter_record;
use super::{Job, Outcome};
use crate::metrics::Metrics;
use crate::sink::StreamOrder;
use crate::source::{parse_segment, Arrival, Coordinates, Gap, OffsetTracker, SegmentConsumer};

/// What the consume loop needs.
pub(super) struct Intake {
    pub consumer: Arc<SegmentConsumer>,
    pub offsets: Arc<OffsetTracker>,
    pub order: Arc<Mutex<StreamOrder<Outcome>>>,
    pub metrics: Arc<Metrics>,
    /// The known classes a label may name.
    pub known: Vec<String>,
    pub max_bytes: u64,
    pub dead_letter_topic: String,
}

impl Intake {
    /// Consumes until `shutdown` is cancelled or a queue closes.
    pub async fn run(self, shutdown: CancellationToken, jobs: flume::Sender<Job>, outcomes: flume::Sender<Outcome>) {
        let Intake { consumer, offsets, order, metrics, known, max_bytes, dead_letter_topic } = self;
        let mut quiet_check = tokio::time::interval(Duration::from_secs(1));
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = consumer.recv() => message,
                _ = quiet_check.tick() => {
                    for (topic, partition, at) in offsets.quiet(std::time::Instant::now()) {
                        read_again(&consumer, &metrics, &topic, partition, at, "nothing came after the committed offset");
                    }
                    continue;
                }
            };
            let message = match message {
                Ok(m) => {
                    metrics.broker_reachable();
                    m
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let coordinates = Coordinates {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            };
            let headers = headers(&message);
            match offsets.arrive(&coordinates.topic, coordinates.partition, coordinates.offset) {
                Arrival::Skip => continue,
                Arrival::Seek(at) => {
                    read_again(
                        &consumer,
                        &metrics,
                        &coordinates.topic,
                        coordinates.partition,
                        at,
                        "the first message read lay beyond the committed offset",
                    );
                    continue;
                }
                Arrival::Take(gap) => {
                    if let Some(gap) = gap {
                        report_gap(&metrics, &coordinates, gap);
                    }
                }
            }
            order.lock().expect("stream order lock").admit(&coordinates);
            metrics.segments_in.fetch_add(1, Ordering::Relaxed);
            let sent = match parse_segment(message.payload(), &headers, &known, max_bytes) {
                Ok(segment) => jobs.send_async(Job { coordinates, segment }).await.is_ok(),
                Err(e) => {
                    let record =
                        dead_letter_record(&dead_letter_topic, &coordinates, None, (e.reason(), e.to_string(), false));
                    outcomes.send_async(Outcome { coordinates, records: vec![record] }).await.is_ok()
                }
            };
            if !sent {
                break;
            }
        }
    }
}

/// A message's headers as (name, value) pairs, for `parse_segment`.
pub(super) fn headers<'a>(message: &'a rdkafka::message::BorrowedMessage<'_>) -> Vec<(&'a str, &'a [u8])> {
    message.headers().map(|h| h.iter().map(|h| (h.key, h.value.unwrap_or_default())).collect()).unwrap_or_default()
}

/// Queue depths and consumer lag in the metrics, every few seconds.
pub(super) fn watch(
    metrics: Arc<Metrics>,
    consumer: Arc<SegmentConsumer>,
    queues: (flume::Receiver<Job>, flume::Receiver<super::Decoded>, flume::Receiver<Outcome>),
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            metrics.decode_queue.set(queues.0.len() as f64);
            metrics.embed_queue.set(queues.1.len() as f64);
            metrics.publish_queue.set(queues.2.len() as f64);
            let consumer = consumer.clone();
            if let Ok(Some(lag)) = tokio::task::spawn_blocking(move || consumer_lag(&consumer)).await {
                metrics.broker_reachable();
                metrics.consumer_lag.set(lag as f64);
            }
        }
    });
}

/// Sends the consumer of a partition back to `at`, before its committed offset, so offsets a
/// broker did not serve from where reading resumed are read (`OffsetTracker::arrive` skips what
/// was committed).
fn read_again(consumer: &SegmentConsumer, metrics: &Metrics, topic: &str, partition: i32, at: i64, why: &str) {
    tracing::info!(topic, partition, from = at, why, "reading the partition again from before its committed offset");
    metrics.input_rereads.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = consumer.seek(topic, partition, Offset::Offset(at), Duration::from_secs(5)) {
        tracing::warn!(topic, partition, error = %e, "seeking back failed; the partition reads on where it is");
    }
}

/// Makes offsets the broker never delivered visible: a log line and two counters.
fn report_gap(metrics: &Metrics, c: &Coordinates, gap: Gap) {
    tracing::warn!(topic = %c.topic, partition = c.partition, committed = gap.from, first_received = gap.to,
        skipped = gap.skipped(), "input offsets skipped: the first message read lies beyond the committed offset");
    metrics.input_offset_gaps.fetch_add(1, Ordering::Relaxed);
    metrics.input_offsets_skipped.fetch_add(gap.skipped(), Ordering::Relaxed);
}

/// Messages between the consumer's positions and the ends of its assigned partitions.
/// `None` when the brokers did not answer (or no partition is assigned).
fn consumer_lag(consumer: &SegmentConsumer) -> Option<i64> {
    let positions = consumer.position().ok()?;
    if positions.count() == 0 {
        return None;
    }
    let mut lag = 0;
    for element in positions.elements() {
        let (_, high) = consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(1)).ok()?;
        if let Offset::Offset(position) = element.offset() {
            lag += (high - position).max(0);
        }
    }
    Some(lag)
}
