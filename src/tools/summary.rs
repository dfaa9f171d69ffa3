//! `novelstream summary`: counts of what the daemon published, for a terminal.

use std::collections::BTreeMap;

use super::TopicRecord;
use crate::sink::{Assignment, DeadLetter, Kind};

/// Counts per stream and cluster of published assignments, and dead letters by reason.
#[derive(Debug, Default)]
pub struct Summary {
    /// Assignment records that parsed.
    pub assignments: usize,
    /// Records of the assignment topic that are not assignments.
    pub unreadable: usize,
    /// Windows per stream id.
    pub by_stream: BTreeMap<String, usize>,
    /// Windows per (`known` or `novel`, cluster).
    pub by_cluster: BTreeMap<(String, String), usize>,
    /// Windows per model version.
    pub model_versions: BTreeMap<u64, usize>,
    /// Dead letters per reason (`unreadable` for records that are not dead letters).
    pub dead_letters: BTreeMap<String, usize>,
}

impl Summary {
    /// Counts the records of the assignment and the dead-letter topic.
    pub fn new(assignments: &[TopicRecord], dead_letters: &[TopicRecord]) -> Self {
        let mut s = Summary::default();
        for record in assignments {
            match serde_json::from_slice::<Assignment>(&record.payload) {
                Ok(a) => {
                    s.assignments += 1;
                    *s.by_stream.entry(a.stream_id).or_default() += 1;
                    let kind = match a.kind {
                        Kind::Known => "known",
                        Kind::Novel => "novel",
                    };
                    *s.by_cluster.entry((kind.to_owned(), a.cluster)).or_default() += 1;
                    *s.model_versions.entry(a.model_version).or_default() += 1;
                }
                Err(_) => s.unreadable += 1,
            }
        }
        for record in dead_letters {
            let reason = serde_json::from_slice::<DeadLetter>(&record.payload)
                .map(|d| d.reason)
                .unwrap_or_else(|_| "unreadable".into());
            *s.dead_letters.entry(reason).or_default() += 1;
        }
        s
    }

    /// A readable report for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!("{} window assignments", self.assignments);
        if self.unreadable > 0 {
            out += &format!(" ({} unreadable records)", self.unreadable);
        }
        out += "\n\nper stream:\n";
        for (stream, n) in &self.by_stream {
            out += &format!("  {stream:<24} {n:>6} windows\n");
        }
        out += "\nper cluster:\n";
        for ((kind, cluster), n) in &self.by_cluster {
            out += &format!("  {kind:<6} {cluster:<17} {n:>6} windows\n");
        }
        out += "\nmodel versions: ";
        out += &self.model_versions.iter().map(|(v, n)| format!("v{v} ({n} windows)")).collect::<Vec<_>>().join(", ");
        let dead: usize = self.dead_letters.values().sum();
        out += &format!("\n\n{dead} dead letters");
        for (reason, n) in &self.dead_letters {
            out += &format!("\n  {reason:<24} {n:>6}");
        }
        out + "\n"
    }
}
