//! The decoders: FFmpeg work on threads of its own, off the async runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::records::dead_letter_record;
use super::{Decoded, Job, Outcome};
use crate::config::DecodeConfig;
use crate::decode::{fetch_and_decode, CrashMarkers, JobError};
use crate::metrics::Metrics;
use crate::source::UriPolicy;
use crate::{Error, Result};

/// The first wait before a segment that failed for want of time or resources is tried again.
const RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// What the decoder threads share.
pub(super) struct Decoders {
    pub policy: UriPolicy,
    pub decode: DecodeConfig,
    pub metrics: Arc<Metrics>,
    pub markers: Arc<CrashMarkers>,
    /// Where a segment that cannot be decoded goes as a dead letter (topic, queue); `None`: it
    /// is dropped (the trainer's read of the input: the assigners report it).
    pub dead_letters: Option<(String, flume::Sender<Outcome>)>,
}

impl Decoders {
    /// Starts `workers` threads taking jobs from `jobs` and sending decoded segments to
    /// `decoded`; they stop when `jobs` is closed and empty, or a queue they send to is closed.
    pub fn start(
        self,
        workers: usize,
        jobs: &flume::Receiver<Job>,
        decoded: &flume::Sender<Decoded>,
    ) -> Result<Vec<std::thread::JoinHandle<()>>> {
        let shared = Arc::new(self);
        (0..workers)
            .map(|i| {
                let (shared, jobs, decoded) = (shared.clone(), jobs.clone(), decoded.clone());
                std::thread::Builder::new()
                    .name(format!("decode-{i}"))
                    .spawn(move || shared.work(&jobs, &decoded))
                    .map_err(Error::io("starting a decoder thread"))
            })
            .collect()
    }

    fn work(&self, jobs: &flume::Receiver<Job>, decoded: &flume::Sender<Decoded>) {
        for job in jobs.iter() {
            let Job { coordinates, segment } = job;
            let started = Instant::now();
            let result = self
                .markers
                .guard(&coordinates, || fetch_and_decode(&segment, &self.policy, &self.decode, RETRY_BACKOFF))
                .unwrap_or_else(|deaths| {
                    let detail = format!("the daemon died {deaths} times while decoding this message");
                    Err(JobError { reason: "crashed_decoder", detail, retriable: false })
                });
            self.metrics.decode_seconds.observe(started.elapsed().as_secs_f64());
            let sent = match (result, &self.dead_letters) {
                (Ok(windows), _) => decoded.send(Decoded { coordinates, segment, windows }).is_ok(),
                (Err(e), Some((topic, outcomes))) => {
                    let record =
                        dead_letter_record(topic, &coordinates, Some(&segment), (e.reason, e.detail, e.retriable));
                    outcomes.send(Outcome { coordinates, records: vec![record] }).is_ok()
                }
                (Err(e), None) => {
                    tracing::debug!(reason = e.reason, offset = coordinates.offset, "not decoded; not trained on");
                    true
                }
            };
            if !sent {
                break;
            }
        }
    }
}
