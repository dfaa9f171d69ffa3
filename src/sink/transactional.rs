//! Exactly-once output: the records made from a batch of input messages and the input offsets
//! past them are committed in one Kafka transaction, so a `read_committed` consumer sees each
//! window once however often the daemon is killed or restarted.

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;

use super::OutRecord;
use crate::config::KafkaConfig;
use crate::Error;

/// How long one transactional call (init, offsets, commit, abort) may block.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Attempts at one batch before the daemon gives up on it (and stops, its offsets uncommitted).
const MAX_ATTEMPTS: u32 = 5;

/// A producer with a `transactional.id`; all its records are written inside transactions.
pub struct TransactionalPublisher {
    producer: ThreadedProducer<DefaultProducerContext>,
    id: String,
}

impl TransactionalPublisher {
    /// Creates the producer and registers its transactional id with the broker, which fences
    /// (and aborts the open transaction of) any earlier instance that used the same id.
    pub fn new(config: &KafkaConfig) -> Result<Self, Error> {
        let id = config.transactional_id();
        let mut client = config.client_config();
        client.set("transactional.id", &id).set("enable.idempotence", "true");
        for (key, default) in [("linger.ms", "5"), ("transaction.timeout.ms", "60000")] {
            if !config.properties.contains_key(key) {
                client.set(key, default);
            }
        }
        let producer: ThreadedProducer<DefaultProducerContext> =
            client.create().map_err(Error::kafka("creating the transactional producer"))?;
        producer.init_transactions(CALL_TIMEOUT).map_err(|e| Error::Kafka {
            context: format!(
                "starting transactions as `{id}` (exactly-once needs a broker with Kafka transactions; \
                 set kafka.delivery = \"at-least-once\" otherwise)"
            ),
            source: e,
        })?;
        tracing::info!(transactional_id = %id, "exactly-once delivery: outputs and input offsets commit together");
        Ok(Self { producer, id })
    }

    /// Writes `records` and commits `offsets` (the next input position per partition) for
    /// `group` in one transaction. A step that failed but may be repeated is repeated; a
    /// failure that needs an abort aborts the transaction and tries the whole batch again. A
    /// fatal failure (this instance was fenced by another with the same id, or the broker has no
    /// transactions) or too many attempts return the error, and nothing of the batch is visible
    /// to `read_committed` consumers. Blocks: call it off the async runtime.
    pub fn commit(
        &self,
        records: &[OutRecord],
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), Error> {
        let context = |what: &str| format!("{what} a transaction of {} records as `{}`", records.len(), self.id);
        let mut attempt = 1;
        loop {
            let failure = match self.try_commit(records, offsets, group) {
                Ok(()) => return Ok(()),
                Err(Failure::Abortable(e)) if attempt < MAX_ATTEMPTS => e,
                Err(Failure::Abortable(e) | Failure::Stop(e)) => {
                    // Ends what can be ended; after a fatal error this fails too, harmlessly.
                    let _ = self.producer.abort_transaction(CALL_TIMEOUT);
                    return Err(Error::Kafka {
                        context: context(&format!("attempt {attempt} at committing")),
                        source: e,
                    });
                }
            };
            tracing::warn!(error = %failure, attempt, records = records.len(), "transaction failed; aborting and retrying");
            self.producer
                .abort_transaction(CALL_TIMEOUT)
                .map_err(|source| Error::Kafka { context: context("aborting"), source })?;
            std::thread::sleep(Duration::from_millis(200 << attempt));
            attempt += 1;
        }
    }

    fn try_commit(
        &self,
        records: &[OutRecord],
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), Failure> {
        self.producer.begin_transaction().map_err(Failure::Stop)?;
        for record in records {
            self.enqueue(record).map_err(Failure::Abortable)?;
        }
        if offsets.count() > 0 {
            repeat(|| self.producer.send_offsets_to_transaction(offsets, group, CALL_TIMEOUT))?;
        }
        // Flushes every record first; a record that cannot be delivered fails the commit.
        repeat(|| self.producer.commit_transaction(CALL_TIMEOUT))
    }

    /// Hands one record to librdkafka, waiting while its local queue is full.
    fn enqueue(&self, record: &OutRecord) -> Result<(), KafkaError> {
        loop {
            let base = BaseRecord::to(&record.topic).key(&record.key).payload(&record.payload);
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// How a transaction step failed, in librdkafka's classification.
enum Failure {
    /// Abort the transaction, then the batch may be tried again.
    Abortable(KafkaError),
    /// Neither repeating nor aborting helps: fenced, unsupported by the broker, or fatal.
    Stop(KafkaError),
}

/// Runs a transactional call, repeating it while librdkafka says the same call may succeed.
fn repeat(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), Failure> {
    let mut attempt = 1;
    loop {
        match call() {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < MAX_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "transaction step failed; repeating it");
                std::thread::sleep(Duration::from_millis(100 << attempt));
                attempt += 1;
            }
            Err(KafkaError::Transaction(e)) if e.txn_requires_abort() => {
                return Err(Failure::Abortable(KafkaError::Transaction(e)))
            }
            Err(e) => return Err(Failure::Stop(e)),
        }
    }
}
