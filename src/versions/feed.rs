//! Reading the models topic: a thread follows it from its beginning, keeps the leases, puts
//! versions back together and keeps the newest one it accepts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tch::Tensor;

use super::{parse, Assembly, Leases, TopicRecord, Whole};
use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::train::checkpoint::{self, CheckpointMeta};
use crate::train::fingerprint::{changed, Fingerprint};
use crate::train::Inherited;
use crate::Error;

/// A version read from the topic and accepted: its metadata and the online model's weights.
pub struct Published {
    pub epoch: u64,
    pub meta: CheckpointMeta,
    pub weights: Vec<(String, Tensor)>,
}

impl Published {
    pub fn version(&self) -> u64 {
        self.meta.version
    }

    /// This version as the state a new trainer takes over from.
    pub fn inherited(self) -> Inherited {
        let origin = PathBuf::from(format!("models topic, version {}", self.meta.version));
        Inherited { meta: self.meta, weights: self.weights, origin }
    }
}

#[derive(Default)]
struct State {
    leases: Leases,
    /// The newest version accepted and not taken yet.
    newest: Option<Published>,
    /// The number of the newest version accepted (taken or not).
    newest_version: u64,
    /// When the last record arrived.
    last_record: Option<Instant>,
}

/// The reader's end: the newest version, the leases.
pub struct ModelFeed {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl ModelFeed {
    /// Follows `kafka.models_topic` from its first record; versions written under another
    /// configuration than `fingerprint` are refused.
    pub fn start(kafka: &KafkaConfig, fingerprint: Fingerprint, metrics: Arc<Metrics>) -> crate::Result<Self> {
        let mut client = kafka.client_config();
        // Partitions are assigned by hand and no offset is ever committed: the group is unused.
        client
            .set("group.id", format!("{}-models", kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.message.max.bytes", (kafka.models_chunk_bytes + 65_536).to_string());
        let consumer: BaseConsumer = client.create().map_err(Error::kafka("creating the models topic reader"))?;
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition_offset(&kafka.models_topic, 0, Offset::Beginning).expect("valid offset");
        consumer.assign(&partitions).map_err(Error::kafka("reading the models topic"))?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            consumer,
            state: state.clone(),
            stop: stop.clone(),
            fingerprint,
            metrics,
            assembly: Assembly::default(),
        };
        let thread = std::thread::Builder::new()
            .name("models-feed".into())
            .spawn(move || reader.run())
            .map_err(Error::io("starting the models topic reader"))?;
        Ok(Self { state, stop, thread: Some(thread), started: Instant::now() })
    }

    /// Waits until the topic was read to its end: no record for `idle` (the broker's high
    /// watermark is not trusted for this), or `at_most` since the start.
    pub fn wait_caught_up(&self, idle: Duration, at_most: Duration) {
        loop {
            let last = self.state.lock().expect("feed lock").last_record;
            let quiet = last.unwrap_or(self.started).elapsed() >= idle;
            if quiet || self.started.elapsed() >= at_most {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The newest accepted version, if one arrived since the last call.
    pub fn take(&self) -> Option<Published> {
        self.state.lock().expect("feed lock").newest.take()
    }

    /// The number of the newest accepted version (0: none).
    pub fn newest_version(&self) -> u64 {
        self.state.lock().expect("feed lock").newest_version
    }

    /// The leases as read so far.
    pub fn leases(&self) -> Leases {
        self.state.lock().expect("feed lock").leases.clone()
    }
}

impl Drop for ModelFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Reader {
    consumer: BaseConsumer,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    fingerprint: Fingerprint,
    metrics: Arc<Metrics>,
    assembly: Assembly,
}

impl Reader {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let Some(message) = self.consumer.poll(Duration::from_millis(200)) else { continue };
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "models topic: read error");
                    continue;
                }
            };
            let offset = message.offset();
            let record = parse(message.payload().unwrap_or_default());
            self.state.lock().expect("feed lock").last_record = Some(Instant::now());
            match record {
                Ok(TopicRecord::Control(control)) => self.state.lock().expect("feed lock").leases.observe(&control),
                Ok(TopicRecord::Chunk(chunk)) => match self.assembly.add(chunk) {
                    None => {}
                    Some(Ok(whole)) => self.accept(whole),
                    Some(Err(refused)) => self.refuse(refused.version, &refused.problem),
                },
                Err(e) => tracing::warn!(offset, error = %e, "models topic: record not understood; skipped"),
            }
        }
    }

    /// Takes a whole version that its epoch's winner wrote, when it is newer than the one held
    /// and its configuration is this process's.
    fn accept(&mut self, whole: Whole) {
        let Whole { epoch, owner, version, blob } = whole;
        {
            let state = self.state.lock().expect("feed lock");
            if !state.leases.accepts(epoch, &owner) {
                tracing::warn!(version, epoch, owner, holder = ?state.leases.holder(),
                    "models topic: version of a trainer that does not hold the newest epoch; ignored");
                return;
            }
            if version <= state.newest_version {
                return;
            }
        }
        let origin = PathBuf::from(format!("models topic, version {version}"));
        let (meta, weights) = match checkpoint::from_bytes(&blob, &origin) {
            Ok(read) => read,
            Err(e) => return self.refuse(version, &e.to_string()),
        };
        let keys = changed(&meta.fingerprint, &self.fingerprint);
        if !keys.is_empty() {
            return self.refuse(version, &format!("written under another configuration ({})", keys.join("; ")));
        }
        let mut state = self.state.lock().expect("feed lock");
        state.newest_version = version;
        state.newest = Some(Published { epoch, meta, weights });
    }

    fn refuse(&self, version: u64, problem: &str) {
        self.metrics.models_refused.fetch_add(1, Ordering::Relaxed);
        tracing::error!(version, problem, "models topic: version refused; the previous one stays in use");
    }
}
