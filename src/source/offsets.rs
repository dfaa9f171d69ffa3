//! Which input offsets may be committed: a partition's offset advances only past messages whose
//! every output the broker has acknowledged, even when segments finish out of order.
//! It also notices when the first offset read from a partition lies beyond the group's committed
//! position, so offsets the broker never delivered show up instead of being committed past.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

#[derive(Debug, Default)]
struct Partition {
    /// Offsets taken from the broker whose outputs are not all acknowledged yet.
    in_flight: BTreeSet<i64>,
    /// One past the highest offset taken.
    next: i64,
    /// The last position handed out for committing.
    committed: i64,
    /// Tells this ownership of the partition from a later one (after a revoke and reassignment).
    incarnation: u64,
    /// The group's committed position when this ownership began, when there was one.
    baseline: Option<i64>,
}

/// Offsets `from..to` of a partition that were never received: the group had committed `from`,
/// yet the first message read was `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: i64,
    pub to: i64,
}

impl Gap {
    /// How many offsets were never received.
    pub fn skipped(&self) -> u64 {
        (self.to - self.from) as u64
    }
}

/// In-flight offsets of every (topic, partition) the consumer reads.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: DashMap<(String, i32), Partition>,
    incarnations: AtomicU64,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new ownership of a partition whose group had committed position `committed`.
    /// A partition already being read keeps its state.
    pub fn expect(&self, topic: &str, partition: i32, committed: i64) {
        let mut p = self.partitions.entry((topic.to_owned(), partition)).or_default();
        if p.next == 0 {
            *p = Partition {
                committed,
                baseline: Some(committed),
                incarnation: self.incarnations.fetch_add(1, Ordering::Relaxed),
                ..Default::default()
            };
        }
    }

    /// Records that `offset` was taken and its outputs are on their way. Returns the offsets
    /// skipped when this is the first offset of an ownership and lies beyond the committed
    /// position. Commits go on from `offset` all the same: real brokers leave legitimate gaps
    /// (transaction markers, compaction), so a gap is reported, never waited for.
    pub fn begin(&self, topic: &str, partition: i32, offset: i64) -> Option<Gap> {
        let mut p = self.partitions.entry((topic.to_owned(), partition)).or_insert_with(|| Partition {
            incarnation: self.incarnations.fetch_add(1, Ordering::Relaxed),
            ..Default::default()
        });
        let mut gap = None;
        if p.in_flight.is_empty() && p.next == 0 {
            gap = p.baseline.filter(|&from| offset > from).map(|from| Gap { from, to: offset });
            p.committed = offset;
        }
        p.in_flight.insert(offset);
        p.next = p.next.max(offset + 1);
        gap
    }

    /// Records that every output of `offset` was acknowledged. Returns the position to commit
    /// (the next offset to read) when it advanced.
    pub fn finish(&self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let mut p = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        if !p.in_flight.remove(&offset) {
            return None;
        }
        let position = p.in_flight.first().copied().unwrap_or(p.next);
        (position > p.committed).then(|| {
            p.committed = position;
            position
        })
    }

    /// Whether `offset` was taken and not finished, in a partition still owned.
    pub fn is_in_flight(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.partitions.get(&(topic.to_owned(), partition)).is_some_and(|p| p.in_flight.contains(&offset))
    }

    /// The position last handed out for committing a partition still owned, with the
    /// partition's incarnation (which changes when it is revoked and assigned again).
    pub fn position(&self, topic: &str, partition: i32) -> Option<(u64, i64)> {
        self.partitions.get(&(topic.to_owned(), partition)).map(|p| (p.incarnation, p.committed))
    }

    /// Forgets a partition (after it was revoked): outputs still in flight for it will not commit.
    pub fn forget(&self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }

    /// The position last handed out for each partition, for a final synchronous commit.
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        self.partitions.iter().filter(|p| p.next > 0).map(|p| (p.key().0.clone(), p.key().1, p.committed)).collect()
    }

    /// Offsets taken but not yet fully acknowledged, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.iter().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_contiguous_prefix() {
        let t = OffsetTracker::new();
        for o in 10..14 {
            t.begin("in", 0, o);
        }
        assert_eq!(t.finish("in", 0, 11), None, "10 is still in flight");
        assert_eq!(t.finish("in", 0, 13), None);
        assert_eq!(t.finish("in", 0, 10), Some(12));
        assert_eq!(t.finish("in", 0, 12), Some(14));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_forgettable() {
        let t = OffsetTracker::new();
        t.begin("in", 0, 5);
        t.begin("in", 1, 7);
        assert_eq!(t.finish("in", 1, 7), Some(8));
        assert!(t.is_in_flight("in", 0, 5) && !t.is_in_flight("in", 1, 7), "7 is finished");
        t.forget("in", 0);
        assert!(!t.is_in_flight("in", 0, 5), "a revoked partition has nothing in flight");
        assert_eq!(t.position("in", 0), None);
        let (before, _) = t.position("in", 1).unwrap();
        t.forget("in", 1);
        t.begin("in", 1, 8);
        assert_eq!(t.position("in", 1).map(|(_, at)| at), Some(8));
        assert_ne!(t.position("in", 1).unwrap().0, before, "a reassigned partition is a new incarnation");
        assert_eq!(t.finish("in", 0, 5), None);
        assert_eq!(t.finish("in", 1, 7), None, "finishing twice commits nothing");
    }

    #[test]
    fn random_completion_orders_never_commit_past_unfinished() {
        // A small deterministic shuffle per round; the invariant is checked after every finish.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let t = OffsetTracker::new();
            let n = 1 + (state % 20) as i64;
            let mut order: Vec<i64> = (0..n).collect();
            for i in (1..order.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                order.swap(i, (state % (i as u64 + 1)) as usize);
            }
            for o in 0..n {
                t.begin("in", 0, o);
            }
            let mut done = BTreeSet::new();
            let mut last = 0;
            for o in order {
                done.insert(o);
                if let Some(pos) = t.finish("in", 0, o) {
                    assert!(pos > last);
                    assert!((0..pos).all(|x| done.contains(&x)), "committed past an unfinished offset");
                    last = pos;
                }
            }
            assert_eq!(last, n);
        }
    }

    #[test]
    fn expect_sets_the_baseline_commits_start_from() {
        let t = OffsetTracker::new();
        t.expect("in", 0, 40);
        assert_eq!(t.position("in", 0).map(|(_, at)| at), Some(40));
        assert!(t.positions().is_empty(), "nothing read yet, nothing to commit at shutdown");
        assert_eq!(t.begin("in", 0, 40), None, "reading on from the committed position is no gap");
        assert_eq!(t.finish("in", 0, 40), Some(41));
    }

    #[test]
    fn a_first_offset_beyond_the_baseline_is_a_gap() {
        let t = OffsetTracker::new();
        t.expect("in", 0, 40);
        let gap = t.begin("in", 0, 47);
        assert_eq!(gap, Some(Gap { from: 40, to: 47 }));
        assert_eq!(gap.unwrap().skipped(), 7);
        assert_eq!(t.finish("in", 0, 47), Some(48), "commits go on past a gap");
        assert_eq!(t.begin("in", 0, 49), None, "only the first offset of an ownership is checked");
    }

    #[test]
    fn no_gap_without_a_committed_offset() {
        let t = OffsetTracker::new();
        assert_eq!(t.begin("in", 0, 12), None, "a first assignment reads from wherever it starts");
        assert_eq!(t.finish("in", 0, 12), Some(13));
    }

    #[test]
    fn a_new_ownership_gets_a_fresh_baseline() {
        let t = OffsetTracker::new();
        t.expect("in", 0, 10);
        t.begin("in", 0, 10);
        t.expect("in", 0, 0);
        assert_eq!(t.position("in", 0).map(|(_, at)| at), Some(10), "a partition being read keeps its state");
        let (before, _) = t.position("in", 0).unwrap();
        t.forget("in", 0);
        t.expect("in", 0, 20);
        assert_ne!(t.position("in", 0).unwrap().0, before);
        assert_eq!(t.begin("in", 0, 25), Some(Gap { from: 20, to: 25 }));
        t.forget("in", 0);
        assert_eq!(t.begin("in", 0, 30), None, "no committed offset this time: no baseline");
    }
}
