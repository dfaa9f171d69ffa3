//! The clusters topic: one record per cluster (size, span, exemplars) and the `_model` record,
//! published when they change. Exactly one process writes it: `--role all`, or the trainer,
//! which aggregates them from the assignments topic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::sink::{ClusterTable, OutRecord, Publisher, MODEL_KEY};

/// Publishes changed clusters every `interval` and once more when `shutdown` is cancelled.
pub(super) fn spawn_publisher(
    clusters: Arc<Mutex<ClusterTable>>,
    publisher: Publisher,
    topic: String,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                _ = tick.tick() => false,
            };
            publish_clusters(&clusters, &publisher, &topic).await;
            if stopping {
                break;
            }
        }
    })
}

/// Publishes the records of clusters that changed; on failure they stay marked for next time.
/// The model record (key `_model`) goes with them when the model version changed.
pub(super) async fn publish_clusters(clusters: &Mutex<ClusterTable>, publisher: &Publisher, topic: &str) {
    let (changed, model) = {
        let mut table = clusters.lock().expect("cluster table lock");
        (table.take_changed(), table.take_model())
    };
    if changed.is_empty() && model.is_none() {
        return;
    }
    let names: Vec<String> = changed.iter().map(|c| c.cluster.clone()).collect();
    let mut records: Vec<OutRecord> = changed
        .iter()
        .map(|c| OutRecord {
            topic: topic.to_owned(),
            key: c.cluster.clone(),
            payload: serde_json::to_vec(c).expect("cluster records serialize"),
        })
        .collect();
    if let Some(model) = &model {
        records.push(OutRecord {
            topic: topic.to_owned(),
            key: MODEL_KEY.to_owned(),
            payload: serde_json::to_vec(model).expect("model records serialize"),
        });
    }
    if let Err(e) = publisher.send_all(records).await {
        tracing::warn!(error = %e, "cluster records not published; retrying with the next update");
        let mut table = clusters.lock().expect("cluster table lock");
        table.mark_changed(names);
        if model.is_some() {
            table.mark_model_changed();
        }
    }
}
