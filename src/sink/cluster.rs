//! The clusters topic (`schema/cluster.v1.json`): one record per known class or novel cluster,
//! keyed by its id on a compacted topic, so a consumer reading it from the start learns the current state of every
//! cluster. Records are re-published (at most every `pipeline.clusters_interval`) whenever a
//! cluster received windows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Assignment, Kind};

/// Schema version written into every cluster record.
pub const CLUSTER_SCHEMA: &str = "novelstream.cluster.v1";

/// Exemplars kept per cluster: its most confident windows.
pub const EXEMPLARS: usize = 3;

/// Where to find one window of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exemplar {
    pub stream_id: String,
    pub segment_id: String,
    pub window: u32,
    pub start_ms: u64,
    pub end_ms: u64,
    pub confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub schema: String,
    /// Known class name, or `novel-<k>`: the record's key.
    pub cluster: String,
    pub kind: Kind,
    /// Windows assigned to it since the daemon's state began.
    pub size: u64,
    /// Wall-clock times (ms since the epoch) of its first and latest window.
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The model version of its latest window.
    pub model_version: u64,
    pub exemplars: Vec<Exemplar>,
}

/// Schema version of the model record on the clusters topic.
pub const MODEL_SCHEMA: &str = "novelstream.model.v1";
/// The key of the model record on the clusters topic (cluster ids never start with `_`).
pub const MODEL_KEY: &str = "_model";
/// Model versions the model record remembers.
pub const MODEL_HISTORY: usize = 1000;

/// One model version and how stable the clusters were when it replaced the one before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionPoint {
    pub model_version: u64,
    /// Fraction of the trainer's fixed replay windows whose novel cluster changed from the
    /// previous version to this one.
    pub changed_fraction: f64,
    /// When the assigner started using it (ms since the epoch).
    pub time_ms: i64,
}

/// The clusters topic's record of the model itself (key [`MODEL_KEY`], `schema/model.v1.json`):
/// its current version and the cluster stability of the latest versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub schema: String,
    pub model_version: u64,
    /// The novel cluster ids that version can give (`novel-<k>`): as many as the estimated
    /// number of new categories with `model.novel_clusters = "auto"`.
    #[serde(default)]
    pub novel_clusters: Vec<String>,
    /// Oldest first, at most [`MODEL_HISTORY`] versions of this daemon's run.
    pub stability: Vec<VersionPoint>,
}

/// Every cluster's record, and which changed since the last publication.
#[derive(Debug, Default)]
pub struct ClusterTable {
    clusters: BTreeMap<String, ClusterRecord>,
    changed: std::collections::BTreeSet<String>,
    model: Option<ModelRecord>,
    model_changed: bool,
}

impl ClusterTable {
    /// Counts one assignment, seen at `now_ms`.
    pub fn observe(&mut self, a: &Assignment, now_ms: i64) {
        let record = self.clusters.entry(a.cluster.clone()).or_insert_with(|| ClusterRecord {
            schema: CLUSTER_SCHEMA.into(),
            cluster: a.cluster.clone(),
            kind: a.kind,
            size: 0,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            model_version: a.model_version,
            exemplars: Vec::new(),
        });
        record.size += 1;
        record.last_seen_ms = now_ms;
        record.model_version = a.model_version;
        let weakest = record.exemplars.last().map_or(f64::NEG_INFINITY, |e| e.confidence);
        if record.exemplars.len() < EXEMPLARS || a.confidence > weakest {
            record.exemplars.push(Exemplar {
                stream_id: a.stream_id.clone(),
                segment_id: a.segment_id.clone(),
                window: a.window,
                start_ms: a.start_ms,
                end_ms: a.end_ms,
                confidence: a.confidence,
            });
            record.exemplars.sort_by(|x, y| y.confidence.total_cmp(&x.confidence));
            record.exemplars.truncate(EXEMPLARS);
        }
        self.changed.insert(a.cluster.clone());
    }

    /// The records of clusters that changed since the last call.
    pub fn take_changed(&mut self) -> Vec<ClusterRecord> {
        std::mem::take(&mut self.changed).into_iter().map(|c| self.clusters[&c].clone()).collect()
    }

    /// Marks clusters as changed again (their publication failed).
    pub fn mark_changed(&mut self, clusters: impl IntoIterator<Item = String>) {
        self.changed.extend(clusters);
    }

    /// Notes the model version in use, the novel clusters it can give and its stability measure
    /// (`None` before the trainer has compared two versions); a version already noted is
    /// ignored.
    pub fn observe_version(
        &mut self,
        model_version: u64,
        novel_clusters: Vec<String>,
        changed_fraction: Option<f64>,
        now_ms: i64,
    ) {
        let new = self.model.is_none();
        let model = self.model.get_or_insert_with(|| ModelRecord {
            schema: MODEL_SCHEMA.into(),
            model_version,
            novel_clusters: novel_clusters.clone(),
            stability: Vec::new(),
        });
        let measured = model.stability.last().is_some_and(|p| p.model_version == model_version);
        if !new && model.model_version == model_version && (changed_fraction.is_none() || measured) {
            return;
        }
        model.model_version = model_version;
        model.novel_clusters = novel_clusters;
        if let Some(changed_fraction) = changed_fraction {
            if !measured {
                model.stability.push(VersionPoint { model_version, changed_fraction, time_ms: now_ms });
                let excess = model.stability.len().saturating_sub(MODEL_HISTORY);
                model.stability.drain(..excess);
            }
        }
        self.model_changed = true;
    }

    /// The model record, if it changed since the last call.
    pub fn take_model(&mut self) -> Option<ModelRecord> {
        std::mem::take(&mut self.model_changed).then(|| self.model.clone()).flatten()
    }

    /// Marks the model record as changed again (its publication failed).
    pub fn mark_model_changed(&mut self) {
        self.model_changed = self.model.is_some();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(cluster: &str, window: u32, confidence: f64) -> Assignment {
        Assignment {
            schema: super::super::ASSIGNMENT_SCHEMA.into(),
            stream_id: "cam".into(),
            segment_id: "s".into(),
            seq: 0,
            window,
            start_ms: 0,
            end_ms: 1000,
            kind: Kind::Novel,
            cluster: cluster.into(),
            confidence,
            model_version: window as u64,
        }
    }

    #[test]
    fn sizes_times_and_the_most_confident_exemplars() {
        let mut table = ClusterTable::default();
        for (i, confidence) in [0.5, 0.9, 0.3, 0.8, 0.95].into_iter().enumerate() {
            table.observe(&assignment("novel-1", i as u32, confidence), 100 + i as i64);
        }
        table.observe(&assignment("novel-0", 9, 0.4), 200);
        let changed = table.take_changed();
        assert_eq!(changed.len(), 2);
        let one = changed.iter().find(|r| r.cluster == "novel-1").unwrap();
        assert_eq!((one.size, one.first_seen_ms, one.last_seen_ms, one.model_version), (5, 100, 104, 4));
        let windows: Vec<u32> = one.exemplars.iter().map(|e| e.window).collect();
        assert_eq!(windows, vec![4, 1, 3], "the three most confident, best first");
        assert!(table.take_changed().is_empty(), "nothing changed since");
        table.mark_changed(["novel-0".to_owned()]);
        assert_eq!(table.take_changed()[0].size, 1);
    }

    #[test]
    fn the_model_record_keeps_each_versions_stability_once() {
        let mut table = ClusterTable::default();
        table.observe_version(0, vec!["novel-0".into()], None, 10);
        let first = table.take_model().unwrap();
        assert_eq!((first.model_version, first.stability.len()), (0, 0));
        assert_eq!(first.novel_clusters, ["novel-0"]);
        table.observe_version(0, vec![], None, 11);
        assert!(table.take_model().is_none(), "nothing new");
        table.observe_version(1, vec![], None, 12);
        assert_eq!(table.take_model().unwrap().model_version, 1);
        table.observe_version(2, vec![], Some(0.25), 13);
        table.observe_version(2, vec![], Some(0.25), 14);
        table.observe_version(3, vec![], Some(0.1), 15);
        let model = table.take_model().unwrap();
        assert_eq!(model.model_version, 3);
        let points: Vec<(u64, f64, i64)> =
            model.stability.iter().map(|p| (p.model_version, p.changed_fraction, p.time_ms)).collect();
        assert_eq!(points, vec![(2, 0.25, 13), (3, 0.1, 15)]);
        table.mark_model_changed();
        assert!(table.take_model().is_some());
        for v in 4..(4 + MODEL_HISTORY as u64) {
            table.observe_version(v, vec![], Some(0.0), v as i64);
        }
        let model = table.take_model().unwrap();
        assert_eq!(model.stability.len(), MODEL_HISTORY, "bounded");
        assert_eq!(model.stability.last().unwrap().model_version, 3 + MODEL_HISTORY as u64);
        let schema: serde_json::Value = serde_json::from_str(include_str!("../../schema/model.v1.json")).unwrap();
        let value = serde_json::to_value(&model).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&value), keys(&schema["properties"]));
        assert_eq!(keys(&value["stability"][0]), keys(&schema["properties"]["stability"]["items"]["properties"]));
        assert_eq!(value["schema"], schema["properties"]["schema"]["const"]);
    }

    /// The JSON Schema in `schema/` and the struct name the same fields, exemplars included.
    #[test]
    fn matches_its_json_schema() {
        let schema: serde_json::Value = serde_json::from_str(include_str!("../../schema/cluster.v1.json")).unwrap();
        let mut table = ClusterTable::default();
        table.observe(&assignment("novel-2", 0, 0.7), 5);
        let value = serde_json::to_value(&table.take_changed()[0]).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&value), keys(&schema["properties"]));
        assert_eq!(keys(&value["exemplars"][0]), keys(&schema["properties"]["exemplars"]["items"]["properties"]));
        assert_eq!(value["schema"], schema["properties"]["schema"]["const"]);
    }
}
