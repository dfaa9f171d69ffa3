//! Producing records and waiting for the broker's acknowledgement of every one of them.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::KafkaConfig;
use crate::Error;

/// One record to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// Attempts per record before the pipeline gives up (its input offset then stays uncommitted).
const MAX_ATTEMPTS: u32 = 5;

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(config: &KafkaConfig) -> Result<Self, Error> {
        let mut client = config.client_config();
        // Idempotent: a retry inside librdkafka (a lost acknowledgement) writes no duplicate, and
        // records to one partition keep their order across retries.
        let defaults =
            [("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "5"), ("message.timeout.ms", "120000")];
        for (key, default) in defaults {
            if !config.properties.contains_key(key) {
                client.set(key, default);
            }
        }
        let producer = client.create().map_err(Error::kafka("creating producer"))?;
        Ok(Self { producer })
    }

    /// Produces every record and resolves once the broker acknowledged all of them. Failed
    /// deliveries are retried; an error means some record is not acknowledged.
    pub async fn send_all(&self, records: Vec<OutRecord>) -> Result<(), Error> {
        let pending = self.enqueue_all(&records).await?;
        self.settle(records, pending).await
    }

    /// Hands every record to librdkafka, in order: records enqueued one call after another keep
    /// that order in each partition (the producer is idempotent).
    pub async fn enqueue_all(&self, records: &[OutRecord]) -> Result<Vec<rdkafka::producer::DeliveryFuture>, Error> {
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            pending.push(self.enqueue(record).await?);
        }
        Ok(pending)
    }

    /// Waits for the broker's acknowledgement of records [`Publisher::enqueue_all`] enqueued,
    /// producing a failed one again; an error means some record is not acknowledged.
    pub async fn settle(
        &self,
        records: Vec<OutRecord>,
        pending: Vec<rdkafka::producer::DeliveryFuture>,
    ) -> Result<(), Error> {
        for (record, delivery) in records.iter().zip(pending) {
            let mut delivery = delivery;
            let mut attempt = 1;
            loop {
                let failure = match delivery.await {
                    Ok(Ok(_)) => break,
                    Ok(Err((e, _))) => e,
                    Err(_) => KafkaError::Canceled,
                };
                if attempt >= MAX_ATTEMPTS {
                    return Err(Error::Kafka {
                        context: format!("producing to {} after {attempt} attempts", record.topic),
                        source: failure,
                    });
                }
                tracing::warn!(topic = %record.topic, error = %failure, attempt, "delivery failed, retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                attempt += 1;
                delivery = self.enqueue(record).await?;
            }
        }
        Ok(())
    }

    /// Hands one record to librdkafka, waiting while its local queue is full.
    async fn enqueue(&self, record: &OutRecord) -> Result<rdkafka::producer::DeliveryFuture, Error> {
        loop {
            let future_record = FutureRecord::to(&record.topic).key(&record.key).payload(&record.payload);
            match self.producer.send_result(future_record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    return Err(Error::Kafka { context: format!("producing to {}", record.topic), source: e })
                }
            }
        }
    }

    /// Waits until everything queued was delivered or `timeout` passed.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.producer.flush(timeout).map_err(Error::kafka("flushing producer"))
    }
}
