//! The publishing stage: outcomes are put back in each stream's input order, produced, and
//! their input offsets committed once the broker acknowledged every record made from them
//! (at-least-once), or written with their offsets in Kafka transactions (exactly-once).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Outcome, RunStats};
use crate::metrics::Metrics;
use crate::sink::{OutRecord, Publisher, StreamOrder, TransactionalPublisher};
use crate::source::{OffsetTracker, SegmentConsumer};
use crate::Error;

/// The first error that stops the daemon, and the token that stops it.
pub(super) type Failure = (Arc<Mutex<Option<Error>>>, CancellationToken);

/// What publishing needs.
pub(super) struct Publishing {
    pub publisher: Publisher,
    /// Under exactly-once, assignments and dead letters go through the transactional producer.
    pub transactions: Option<Arc<TransactionalPublisher>>,
    pub consumer: Arc<SegmentConsumer>,
    pub offsets: Arc<OffsetTracker>,
    pub counter: PublishCounter,
    pub max_unacknowledged: usize,
    pub transaction_interval: Duration,
    pub failure: Failure,
}

/// The running stage: wait for `ordering`, then `publishing`, then the acknowledgements.
pub(super) struct Running {
    pub ordering: JoinHandle<()>,
    pub publishing: JoinHandle<()>,
    pub acks: TaskTracker,
}

impl Publishing {
    /// Starts publishing what arrives on `outcomes`; decoders finish out of order, and `order`
    /// puts each stream's outcomes back in input order.
    pub fn start(
        self,
        outcomes: flume::Receiver<Outcome>,
        order: Arc<Mutex<StreamOrder<Outcome>>>,
        queue: usize,
    ) -> Running {
        let (ordered_tx, ordered_rx) = flume::bounded::<Outcome>(queue);
        let ordering = tokio::spawn(async move {
            while let Ok(outcome) = outcomes.recv_async().await {
                let coordinates = outcome.coordinates.clone();
                let ready = order.lock().expect("stream order lock").release(&coordinates, outcome);
                for outcome in ready {
                    if ordered_tx.send_async(outcome).await.is_err() {
                        return;
                    }
                }
            }
        });
        let acks = TaskTracker::new();
        let publishing = match self.transactions.clone() {
            Some(transactions) => tokio::spawn(publish_transactions(ordered_rx, transactions, self)),
            None => tokio::spawn(self.publish_acknowledged(ordered_rx, acks.clone())),
        };
        Running { ordering, publishing, acks }
    }

    /// At-least-once: each outcome's records are awaited on their own task, so slow
    /// acknowledgements of one segment do not hold up the next.
    async fn publish_acknowledged(self, ordered: flume::Receiver<Outcome>, acks: TaskTracker) {
        let unacknowledged = Arc::new(Semaphore::new(self.max_unacknowledged));
        let (failure, shutdown) = self.failure.clone();
        while let Ok(outcome) = ordered.recv_async().await {
            let permit = unacknowledged.clone().acquire_owned().await.expect("semaphore is never closed");
            // Enqueued here, one outcome after another, so a stream's records keep their order.
            let Outcome { coordinates: c, records } = outcome;
            let pending = match self.publisher.enqueue_all(&records).await {
                Ok(pending) => pending,
                Err(e) => {
                    failure.lock().expect("failure lock").get_or_insert(e);
                    shutdown.cancel();
                    break;
                }
            };
            let (publisher, consumer, offsets, counter, failure, shutdown) = (
                self.publisher.clone(),
                self.consumer.clone(),
                self.offsets.clone(),
                self.counter.clone(),
                failure.clone(),
                shutdown.clone(),
            );
            acks.spawn(async move {
                let _permit = permit;
                let counts = counter.counts(&records);
                match publisher.settle(records, pending).await {
                    Ok(()) => {
                        counter.add(counts);
                        if let Some(position) = offsets.finish(&c.topic, c.partition, c.offset) {
                            commit(&consumer, &c.topic, c.partition, position, CommitMode::Async);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, topic = %c.topic, partition = c.partition, offset = c.offset,
                            "records not acknowledged; stopping with the offset uncommitted");
                        failure.lock().expect("failure lock").get_or_insert(e);
                        shutdown.cancel();
                    }
                }
            });
        }
    }
}

/// Counts what was published, for the run's stats and the metrics.
#[derive(Clone)]
pub(super) struct PublishCounter {
    pub stats: Arc<Mutex<RunStats>>,
    pub metrics: Arc<Metrics>,
    pub dead_letter_topic: String,
}

impl PublishCounter {
    /// (windows, dead letters) among `records`.
    fn counts(&self, records: &[OutRecord]) -> (u64, u64) {
        let dead = records.iter().filter(|r| r.topic == self.dead_letter_topic).count() as u64;
        (records.len() as u64 - dead, dead)
    }

    /// Records one input message's outputs as published.
    fn add(&self, (windows, dead): (u64, u64)) {
        {
            let mut s = self.stats.lock().expect("stats lock");
            s.segments += u64::from(windows > 0);
            s.windows += windows;
            s.dead_letters += dead;
        }
        self.metrics.windows_published.fetch_add(windows, Ordering::Relaxed);
        self.metrics.dead_letters.fetch_add(dead, Ordering::Relaxed);
    }
}

/// Most input messages whose outputs share one transaction.
const MAX_TRANSACTION_MESSAGES: usize = 256;

/// Exactly-once publishing: outcomes arriving within `interval` of each other are written, with
/// the input positions past them, in one transaction. An outcome is written only once its input
/// position is committable (every earlier message of its partition finished), so that a crash
/// can never leave it published with its input uncommitted, to be published again after the
/// restart. A batch that cannot be committed stops the daemon; its input is read again after the
/// restart and nothing of it was visible.
async fn publish_transactions(rx: flume::Receiver<Outcome>, transactions: Arc<TransactionalPublisher>, p: Publishing) {
    let Publishing { consumer, offsets, counter, transaction_interval: interval, failure: (failure, shutdown), .. } = p;
    // Finished outcomes waiting for an earlier message of their partition, with the partition's
    // incarnation when they finished.
    let mut waiting: Vec<(u64, Outcome)> = Vec::new();
    while let Ok(first) = rx.recv_async().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + interval;
        while batch.len() < MAX_TRANSACTION_MESSAGES {
            match tokio::time::timeout_at(deadline, rx.recv_async()).await {
                Ok(Ok(outcome)) => batch.push(outcome),
                _ => break,
            }
        }
        for outcome in batch {
            let c = &outcome.coordinates;
            // Input of partitions revoked since it was read belongs to their new owner now,
            // which reads it again from the last committed position.
            let Some((incarnation, _)) = offsets.position(&c.topic, c.partition) else { continue };
            if !offsets.is_in_flight(&c.topic, c.partition, c.offset) {
                continue;
            }
            offsets.finish(&c.topic, c.partition, c.offset);
            waiting.push((incarnation, outcome));
        }
        let ready = take_committable(&mut waiting, &offsets);
        if ready.is_empty() {
            continue;
        }
        // Every finished outcome below a partition's position is in `ready` now, so the
        // partitions' current positions are what this transaction commits.
        let partitions: BTreeSet<(&str, i32)> =
            ready.iter().map(|o| (o.coordinates.topic.as_str(), o.coordinates.partition)).collect();
        let mut positions = TopicPartitionList::new();
        for (topic, partition) in partitions {
            // A partition revoked this instant is left out: its new owner commits it.
            let Some((_, position)) = offsets.position(topic, partition) else { continue };
            positions.add_partition_offset(topic, partition, Offset::Offset(position)).expect("valid offset");
        }
        let counts: Vec<(u64, u64)> = ready.iter().map(|o| counter.counts(&o.records)).collect();
        let records: Vec<OutRecord> = ready.into_iter().flat_map(|o| o.records).collect();
        let Some(group) = consumer.group_metadata() else {
            failure.lock().expect("failure lock").get_or_insert(Error::NoGroupMetadata);
            shutdown.cancel();
            break;
        };
        let transactions = transactions.clone();
        let committed = tokio::task::spawn_blocking(move || transactions.commit(&records, &positions, &group))
            .await
            .unwrap_or_else(|source| Err(Error::Task { task: "transaction", source }));
        match committed {
            Ok(()) => counts.into_iter().for_each(|c| counter.add(c)),
            Err(e) => {
                tracing::error!(error = %e, "transaction not committed; stopping, its input will be read again");
                failure.lock().expect("failure lock").get_or_insert(e);
                shutdown.cancel();
                break;
            }
        }
    }
    if !waiting.is_empty() {
        tracing::warn!(
            outcomes = waiting.len(),
            "stopping with outputs whose input is not committable; they are read again"
        );
    }
}

/// Takes the waiting outcomes whose input position is committable (every earlier message of the
/// partition finished), and drops those of partitions revoked since.
fn take_committable(waiting: &mut Vec<(u64, Outcome)>, offsets: &OffsetTracker) -> Vec<Outcome> {
    let mut ready = Vec::new();
    let mut kept = Vec::new();
    for (incarnation, outcome) in waiting.drain(..) {
        let c = &outcome.coordinates;
        match offsets.position(&c.topic, c.partition) {
            Some((now, position)) if now == incarnation && c.offset < position => ready.push(outcome),
            Some((now, _)) if now == incarnation => kept.push((incarnation, outcome)),
            // Revoked (and maybe assigned again) meanwhile: not ours to publish.
            _ => {}
        }
    }
    *waiting = kept;
    ready
}

pub(super) fn commit(consumer: &SegmentConsumer, topic: &str, partition: i32, position: i64, mode: CommitMode) {
    let mut list = TopicPartitionList::new();
    if list.add_partition_offset(topic, partition, Offset::Offset(position)).is_ok() {
        if let Err(e) = consumer.commit(&list, mode) {
            tracing::warn!(error = %e, topic, partition, position, "commit failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Coordinates;

    fn outcome(partition: i32, offset: i64) -> Outcome {
        let coordinates = Coordinates { topic: "in".into(), partition, offset, key: None };
        let record = OutRecord { topic: "out".into(), key: format!("{partition}/{offset}"), payload: Vec::new() };
        Outcome { coordinates, records: vec![record] }
    }

    /// Finishes `offset` and queues its outcome as the transactional publisher does.
    fn finish(offsets: &OffsetTracker, waiting: &mut Vec<(u64, Outcome)>, partition: i32, offset: i64) {
        let (incarnation, _) = offsets.position("in", partition).unwrap();
        offsets.finish("in", partition, offset);
        waiting.push((incarnation, outcome(partition, offset)));
    }

    fn keys(ready: Vec<Outcome>) -> Vec<String> {
        ready.into_iter().flat_map(|o| o.records).map(|r| r.key).collect()
    }

    /// Under exactly-once an output may only be written once its input position can be
    /// committed with it: one finished ahead of an earlier message waits for it.
    #[test]
    fn outputs_wait_for_earlier_input_of_their_partition() {
        let offsets = OffsetTracker::new();
        for o in 0..3 {
            offsets.begin("in", 0, o);
        }
        offsets.begin("in", 1, 7);
        let mut waiting = Vec::new();
        finish(&offsets, &mut waiting, 0, 1);
        finish(&offsets, &mut waiting, 1, 7);
        assert_eq!(keys(take_committable(&mut waiting, &offsets)), ["1/7"], "0/1 waits for 0/0");
        finish(&offsets, &mut waiting, 0, 0);
        assert_eq!(keys(take_committable(&mut waiting, &offsets)), ["0/1", "0/0"]);
        assert!(waiting.is_empty());
    }

    /// Outputs of a partition revoked meanwhile are dropped, even when it comes back: its new
    /// incarnation reads that input again from the committed position.
    #[test]
    fn outputs_of_revoked_partitions_are_dropped() {
        let offsets = OffsetTracker::new();
        for o in 0..2 {
            offsets.begin("in", 0, o);
        }
        let mut waiting = Vec::new();
        finish(&offsets, &mut waiting, 0, 1);
        offsets.forget("in", 0);
        offsets.begin("in", 0, 0);
        offsets.finish("in", 0, 0);
        assert!(take_committable(&mut waiting, &offsets).is_empty());
        assert!(waiting.is_empty());
    }
}
