//! The daemon's metrics in Prometheus text format, and a small HTTP endpoint serving them with
//! `/healthz` (the process is up) and `/readyz` (the model is loaded and the consumer has
//! partitions). No secrets ever go in here: only counts, times and model state.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// An `f64` gauge stored in an atomic.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Versions over which `novelstream_replay_kept_fraction` follows the replay set's decisions.
pub const KEPT_OVER_VERSIONS: u64 = 10;

/// A gauge that also counts how often it was set: the gauge alone reads 0 both when it measured
/// 0 and when it never measured, and a test (or a dashboard) must tell the two apart.
#[derive(Debug, Default)]
pub struct Measurement {
    value: Gauge,
    count: AtomicU64,
}

impl Measurement {
    pub fn set(&self, value: f64) {
        self.value.set(value);
        // Release: whoever sees the count also sees the value stored before it.
        self.count.fetch_add(1, Ordering::Release);
    }

    /// The last value, `None` until the first.
    pub fn get(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.value.get())
    }

    /// How many values were set.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

/// A running sum and count of seconds (a Prometheus summary without quantiles).
#[derive(Debug, Default)]
pub struct Timer {
    micros: AtomicU64,
    count: AtomicU64,
}

impl Timer {
    pub fn observe(&self, seconds: f64) {
        self.micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every metric the daemon exposes.
#[derive(Debug, Default)]
pub struct Metrics {
    pub segments_in: AtomicU64,
    pub windows_assigned: AtomicU64,
    pub windows_published: AtomicU64,
    pub dead_letters: AtomicU64,
    pub decode_queue: Gauge,
    pub embed_queue: Gauge,
    pub publish_queue: Gauge,
    pub decode_seconds: Timer,
    pub assign_seconds: Timer,
    pub train_step_seconds: Timer,
    pub train_steps: AtomicU64,
    /// Dead outputs of the unlabelled head re-initialised to split the largest.
    pub head_splits: AtomicU64,
    /// Windows that skipped training because the trainer's queue was full.
    pub train_skipped: AtomicU64,
    /// Segments the trainer (`--role train`) did not decode: its decoders were busy, or it had
    /// decoded as many windows as it trains on.
    pub train_skipped_segments: AtomicU64,
    pub buffered_labelled: Gauge,
    pub buffered_unlabelled: Gauge,
    /// Novel clusters the unlabelled head has in use: the estimate with `novel_clusters = "auto"`.
    pub novel_clusters_estimated: Gauge,
    pub loss_total: Gauge,
    pub loss_instance: Gauge,
    pub loss_category: Gauge,
    pub loss_bce: Gauge,
    pub loss_cross_entropy: Gauge,
    pub loss_consistency: Gauge,
    pub wta_positive_rate: Gauge,
    pub model_version: Gauge,
    /// The margin towards the known classes the assigner's decisions use (`model.known_recall`).
    pub known_margin: Gauge,
    /// What decides unlabelled windows: 1 the picture alone, 2 the audio alone, 3 both
    /// (`model.assign_with`; with `auto`, what labelled windows chose for this version).
    pub assign_modalities: Gauge,
    /// Model versions read from the models topic and refused (checksum, configuration, shapes).
    pub models_refused: AtomicU64,
    /// Model versions this trainer published to the models topic.
    pub models_published: AtomicU64,
    /// 1 while this process is the active trainer (`--role train`), 0 while it stands by.
    pub trainer_active: Gauge,
    /// Share of the replay set whose novel cluster changed at the last new version.
    pub cluster_changed_fraction: Measurement,
    /// Share of the replay set whose published decision stayed the same through the last
    /// [`KEPT_OVER_VERSIONS`] versions.
    pub replay_kept_fraction: Measurement,
    pub consumer_lag: Gauge,
    pub ready: AtomicBool,
    /// Errors the Kafka client reported (connection failures, timeouts, …).
    pub broker_errors: AtomicU64,
    /// Times a resumed partition was read again from before its committed offset (its first
    /// message lay beyond it, or nothing came).
    pub input_rereads: AtomicU64,
    /// Partitions whose first message read lay beyond the group's committed offset, even read
    /// from before it.
    pub input_offset_gaps: AtomicU64,
    /// Input offsets between a committed offset and the first message read, never received.
    pub input_offsets_skipped: AtomicU64,
    /// Times every broker became unreachable.
    pub broker_outages: AtomicU64,
    /// Since when every broker is unreachable, while they are; `broker_down` mirrors it so the
    /// per-message check in [`Metrics::broker_reachable`] takes no lock.
    broker_down_since: std::sync::Mutex<Option<std::time::Instant>>,
    broker_down: AtomicBool,
}

impl Metrics {
    /// Notes that the client lost every broker (logged once per outage).
    pub fn broker_down(&self, reason: &str) {
        let mut since = self.broker_down_since.lock().expect("broker state lock");
        if since.is_none() {
            *since = Some(std::time::Instant::now());
            self.broker_down.store(true, Ordering::Relaxed);
            self.broker_outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reason, "every broker is unreachable; reconnecting (uncommitted input is kept)");
        }
    }

    /// Notes that the brokers answered again, ending an outage if there was one.
    pub fn broker_reachable(&self) {
        if !self.broker_down.load(Ordering::Relaxed) {
            return;
        }
        let mut since = self.broker_down_since.lock().expect("broker state lock");
        if let Some(start) = since.take() {
            self.broker_down.store(false, Ordering::Relaxed);
            tracing::info!(outage = %humantime::format_duration(std::time::Duration::from_secs(start.elapsed().as_secs())),
                "brokers reachable again; resuming");
        }
    }

    /// Whether the brokers are reachable, as far as the client knows.
    pub fn broker_up(&self) -> bool {
        !self.broker_down.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_data_path(&mut out);
        self.render_training(&mut out);
        self.render_broker(&mut out);
        out
    }

    /// What went through the stages: counts, queue depths and stage times.
    fn render_data_path(&self, out: &mut String) {
        sample(out, "segments_in_total", "counter", "Segments consumed.", count(&self.segments_in));
        sample(
            out,
            "windows_assigned_total",
            "counter",
            "Windows assigned by the model.",
            count(&self.windows_assigned),
        );
        sample(
            out,
            "windows_published_total",
            "counter",
            "Assignments acknowledged by the broker.",
            count(&self.windows_published),
        );
        sample(
            out,
            "dead_letters_total",
            "counter",
            "Inputs sent to the dead-letter topic.",
            count(&self.dead_letters),
        );
        sample(out, "decode_queue_depth", "gauge", "Segments waiting for a decoder.", self.decode_queue.get());
        sample(out, "embed_queue_depth", "gauge", "Decoded segments waiting for the model.", self.embed_queue.get());
        sample(out, "publish_queue_depth", "gauge", "Outcomes waiting to be produced.", self.publish_queue.get());
        for (name, help, timer) in [
            ("decode_seconds", "Time decoding segments.", &self.decode_seconds),
            (
                "assign_seconds",
                "Time of each assignment pass (the windows of one or more segments).",
                &self.assign_seconds,
            ),
            ("train_step_seconds", "Time of training steps.", &self.train_step_seconds),
        ] {
            let _ = writeln!(out, "# HELP novelstream_{name} {help}\n# TYPE novelstream_{name} summary");
            let _ = writeln!(out, "novelstream_{name}_sum {}", timer.micros.load(Ordering::Relaxed) as f64 / 1e6);
            let _ = writeln!(out, "novelstream_{name}_count {}", timer.count.load(Ordering::Relaxed));
        }
    }

    /// The trainer and the model: steps, buffers, losses, versions and their stability.
    fn render_training(&self, out: &mut String) {
        sample(out, "train_steps_total", "counter", "Training steps taken.", count(&self.train_steps));
        sample(
            out,
            "head_splits_total",
            "counter",
            "Dead outputs of the unlabelled head re-initialised to split the largest (train.clusters.head_min_share).",
            count(&self.head_splits),
        );
        sample(
            out,
            "models_refused_total",
            "counter",
            "Model versions read from the models topic and refused (checksum, configuration or shapes).",
            count(&self.models_refused),
        );
        sample(
            out,
            "models_published_total",
            "counter",
            "Model versions this trainer published to the models topic.",
            count(&self.models_published),
        );
        sample(
            out,
            "trainer_active",
            "gauge",
            "1 while this process is the active trainer.",
            self.trainer_active.get(),
        );
        sample(
            out,
            "train_skipped_segments_total",
            "counter",
            "Segments the trainer (--role train) did not decode: busy decoders, or as many windows decoded as it trains on.",
            count(&self.train_skipped_segments),
        );
        sample(
            out,
            "train_skipped_windows_total",
            "counter",
            "Windows not offered to training because the trainer was behind.",
            count(&self.train_skipped),
        );
        sample(
            out,
            "buffered_labelled_windows",
            "gauge",
            "Labelled windows in the training buffer.",
            self.buffered_labelled.get(),
        );
        sample(
            out,
            "buffered_unlabelled_windows",
            "gauge",
            "Unlabelled windows in the training buffer.",
            self.buffered_unlabelled.get(),
        );
        sample(
            out,
            "novel_clusters_estimated",
            "gauge",
            "Novel clusters in use: the estimated number of new categories (model.novel_clusters = \"auto\"), or the number given.",
            self.novel_clusters_estimated.get(),
        );
        for (term, gauge) in [
            ("total", &self.loss_total),
            ("instance", &self.loss_instance),
            ("category", &self.loss_category),
            ("bce", &self.loss_bce),
            ("cross_entropy", &self.loss_cross_entropy),
            ("consistency", &self.loss_consistency),
        ] {
            sample(out, &format!("loss_{term}"), "gauge", "Loss term of the last training step.", gauge.get());
        }
        sample(
            out,
            "wta_positive_pair_rate",
            "gauge",
            "Share of unlabelled pairs the pseudo labels called positive at the last step.",
            self.wta_positive_rate.get(),
        );
        sample(out, "model_version", "gauge", "Model version the assigner uses.", self.model_version.get());
        sample(
            out,
            "known_margin",
            "gauge",
            "Log-probability by which a novel cluster must lead the best known class for an unlabelled window to be called novel (model.known_recall; 0: the joint head's argmax).",
            self.known_margin.get(),
        );
        sample(
            out,
            "assign_modalities",
            "gauge",
            "What decides unlabelled windows: 1 the picture alone, 2 the audio alone, 3 both (model.assign_with; with auto, chosen by labelled windows for this model version).",
            self.assign_modalities.get(),
        );
        sample(
            out,
            "cluster_changed_fraction",
            "gauge",
            "Share of the replay set whose novel cluster changed at the last version.",
            self.cluster_changed_fraction.get().unwrap_or(0.0),
        );
        sample(
            out,
            "cluster_changed_measurements_total",
            "counter",
            "Versions whose cluster_changed_fraction was measured (it reads 0 before the first).",
            self.cluster_changed_fraction.count() as f64,
        );
        // Not rendered before it is measured: a 0 would read as "every decision changed".
        if let Some(kept) = self.replay_kept_fraction.get() {
            sample(
                out,
                "replay_kept_fraction",
                "gauge",
                &format!(
                    "Share of the replay set whose published decision (known class or novel cluster id) stayed the same through the last {KEPT_OVER_VERSIONS} versions."
                ),
                kept,
            );
        }
    }

    /// The consumer and the brokers: lag, readiness and outages.
    fn render_broker(&self, out: &mut String) {
        sample(
            out,
            "consumer_lag_messages",
            "gauge",
            "Input messages behind the partitions' ends.",
            self.consumer_lag.get(),
        );
        sample(out, "ready", "gauge", "1 when serving.", f64::from(u8::from(self.ready.load(Ordering::Relaxed))));
        sample(
            out,
            "broker_up",
            "gauge",
            "0 while every broker is unreachable.",
            f64::from(u8::from(self.broker_up())),
        );
        sample(
            out,
            "broker_outages_total",
            "counter",
            "Times every broker became unreachable.",
            count(&self.broker_outages),
        );
        sample(out, "broker_errors_total", "counter", "Errors the Kafka client reported.", count(&self.broker_errors));
        sample(
            out,
            "input_rereads_total",
            "counter",
            "Times a resumed partition was read again from before its committed offset, because its \
             first message lay beyond that offset or nothing came.",
            count(&self.input_rereads),
        );
        sample(
            out,
            "input_offset_gaps_total",
            "counter",
            "Assigned partitions whose first message lay beyond the committed offset even when read \
             from before it (offsets the broker never delivered).",
            count(&self.input_offset_gaps),
        );
        sample(
            out,
            "input_offsets_skipped_total",
            "counter",
            "Input offsets between a committed offset and the first message read, never received.",
            count(&self.input_offsets_skipped),
        );
    }
}

/// A counter's value as a sample.
fn count(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}

/// One metric with its HELP and TYPE lines.
fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP novelstream_{name} {help}\n# TYPE novelstream_{name} {kind}");
    let _ = writeln!(out, "novelstream_{name} {value}");
}

/// Connections the metrics endpoint serves at once; more are closed on arrival.
const MAX_CONNECTIONS: usize = 32;

/// The whole of one request, read and answer: a client that sends a byte now and then is cut off.
const REQUEST_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`, at most
/// `MAX_CONNECTIONS` at once and each for at most `REQUEST_TIME`.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Dropping the stream closes it: a scraper retries, a flood gets nothing.
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIME, respond(stream, &metrics)).await;
            drop(permit);
        });
    }
}

/// Reads one request head and writes its answer.
async fn respond(mut stream: tokio::net::TcpStream, metrics: &Metrics) {
    // Read the whole request head, so closing never resets a connection with unread bytes.
    let mut request = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buffer).await {
            Ok(n) if n > 0 => request.extend_from_slice(&buffer[..n]),
            _ => return,
        }
    }
    let line = String::from_utf8_lossy(&request);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => ("200 OK", "text/plain", "ready\n".to_owned()),
        "/readyz" => ("503 Service Unavailable", "text/plain", "not ready\n".to_owned()),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client trickling its request is cut off after `REQUEST_TIME`, connections beyond
    /// `MAX_CONNECTIONS` are closed on arrival, and once the slow ones are gone a scrape works.
    #[tokio::test]
    async fn slow_and_surplus_clients_are_cut_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::default()), shutdown.clone()));
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut c = tokio::net::TcpStream::connect(address).await.unwrap();
            c.write_all(b"G").await.unwrap();
            held.push(c);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut surplus = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(2), surplus.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a connection over the limit was kept: {closed:?}");

        let started = std::time::Instant::now();
        let slow = &mut held[0];
        let mut cut_off = false;
        // One byte a second: each read is quick, the request never ends.
        for b in b"ET /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\n" {
            if slow.write_all(&[*b]).await.is_err() {
                cut_off = true;
                break;
            }
            match tokio::time::timeout(std::time::Duration::from_secs(1), slow.read(&mut byte)).await {
                Err(_) => continue,
                Ok(_) => {
                    cut_off = true;
                    break;
                }
            }
        }
        assert!(
            cut_off && started.elapsed() < REQUEST_TIME + std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(held);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut scrape = tokio::net::TcpStream::connect(address).await.unwrap();
        scrape.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        scrape.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        shutdown.cancel();
        server.await.unwrap();
    }

    #[test]
    fn broker_outages_are_counted_once_each() {
        let m = Metrics::default();
        assert!(m.broker_up());
        m.broker_down("1/1 brokers are down");
        m.broker_down("1/1 brokers are down");
        assert!(!m.broker_up());
        m.broker_reachable();
        assert!(m.broker_up());
        m.broker_reachable();
        m.broker_down("again");
        assert_eq!(m.broker_outages.load(Ordering::Relaxed), 2);
        assert!(m.render().contains("novelstream_broker_up 0\n"));
    }

    #[test]
    fn a_measurement_tells_a_measured_zero_from_none() {
        let m = Metrics::default();
        assert_eq!(m.cluster_changed_fraction.get(), None);
        m.cluster_changed_fraction.set(0.0);
        assert_eq!((m.cluster_changed_fraction.get(), m.cluster_changed_fraction.count()), (Some(0.0), 1));
        assert!(m.render().contains("novelstream_cluster_changed_measurements_total 1\n"));
        // The kept share is not rendered before it is measured (a 0 would read as none kept).
        assert!(!m.render().contains("novelstream_replay_kept_fraction"));
        m.replay_kept_fraction.set(0.75);
        assert!(m.render().contains("novelstream_replay_kept_fraction 0.75\n"));
    }

    #[test]
    fn renders_every_metric_in_prometheus_text() {
        let m = Metrics::default();
        m.windows_assigned.fetch_add(3, Ordering::Relaxed);
        m.train_step_seconds.observe(0.25);
        m.train_step_seconds.observe(0.5);
        m.model_version.set(7.0);
        let text = m.render();
        assert!(text.contains("novelstream_windows_assigned_total 3\n"));
        assert!(text.contains("novelstream_train_step_seconds_sum 0.75\n"));
        assert!(text.contains("novelstream_train_step_seconds_count 2\n"));
        assert!(text.contains("novelstream_model_version 7\n"));
        assert!(text.contains("novelstream_known_margin 0\n"));
        m.assign_modalities.set(1.0);
        assert!(m.render().contains("novelstream_assign_modalities 1\n"));
        assert!(text.contains("novelstream_ready 0\n"));
        assert!(text.contains("novelstream_cluster_changed_fraction 0\n"));
        assert!(text.contains("novelstream_cluster_changed_measurements_total 0\n"), "never measured");
        assert!(text.contains("novelstream_input_offsets_skipped_total 0\n"));
        // Every sample line follows its HELP and TYPE lines.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split_whitespace().next().unwrap();
            let base = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {base} ")), "{name} has no TYPE line");
        }
    }
}
