//! Which input offsets may be committed: a partition's offset advances only past messages whose
//! every output the broker has acknowledged, even when segments finish out of order.
//! It also checks where a partition's reading resumes: when the first message lies beyond the
//! group's committed position, or nothing comes at all, the consumer is sent back to read from
//! before that position (skipping what was committed), so offsets a broker failed to serve from
//! are read instead of committed past; only offsets no read from earlier delivers are a gap.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    /// How reading was made to resume at the baseline.
    resume: Resume,
}

/// The search for a read that covers the baseline: how far before it the consumer was last sent,
/// when, and whether a message from before it has come (then the broker serves every offset from
/// there on, and a later jump is offsets that do not exist, not a gap).
#[derive(Debug, Default)]
struct Resume {
    back: i64,
    since: Option<Instant>,
    covered: bool,
}

/// What to do with a message, decided before it is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Process it; with the gap it opens when no read from earlier delivers the offsets before.
    Take(Option<Gap>),
    /// Drop it: its offset lies before the group's committed position, so it was done before.
    Skip,
    /// Drop it and read the partition again from this offset: the message lies beyond the
    /// committed position and the offsets between may exist.
    Seek(i64),
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

impl Resume {
    /// Sends the read further back from `from`, or `None` once it reached the partition's start
    /// or `MAX_BACK`: what has not come by then is a gap.
    fn widen(&mut self, from: i64, now: Instant) -> Option<i64> {
        if from - self.back <= 0 || self.back >= OffsetTracker::MAX_BACK {
            return None;
        }
        self.back = if self.back == 0 { 1 } else { self.back * 16 };
        self.since = Some(now);
        Some((from - self.back).max(0))
    }
}

/// In-flight offsets of every (topic, partition) the consumer reads.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: DashMap<(String, i32), Partition>,
    incarnations: AtomicU64,
}

impl OffsetTracker {
    /// How far before the committed position a resumed read goes at most: a broker that serves a
    /// fetch from the middle of a stored batch from the next batch (tansu 0.6) needs one start at
    /// or before the batch's first offset, and a producer's batch holds 10,000 records at most.
    const MAX_BACK: i64 = 1 << 16;
    /// How long a resumed partition may deliver nothing before it is read from earlier: a broker
    /// that serves nothing from the middle of its last batch would otherwise never deliver it.
    pub const QUIET: Duration = Duration::from_secs(3);

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
                resume: Resume { since: Some(Instant::now()), ..Default::default() },
                incarnation: self.incarnations.fetch_add(1, Ordering::Relaxed),
                ..Default::default()
            };
        }
    }

    /// Decides what to do with a message of a partition before it is taken, and takes it (as
    /// `begin`) when it is to be processed. Until the first message of an ownership is taken, a
    /// message beyond the committed position sends the consumer back (1, 16, 256, … offsets
    /// before the position), and messages before the position are skipped.
    pub fn arrive(&self, topic: &str, partition: i32, offset: i64) -> Arrival {
        if let Some(mut p) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            let started = p.next > 0 || !p.in_flight.is_empty();
            if started && offset < p.committed {
                return Arrival::Skip;
            }
            if let (Some(from), false) = (p.baseline, started) {
                if offset < from {
                    p.resume.covered = true;
                    return Arrival::Skip;
                }
                if offset > from && !p.resume.covered {
                    if let Some(at) = p.resume.widen(from, Instant::now()) {
                        return Arrival::Seek(at);
                    }
                }
                if p.resume.covered {
                    p.baseline = None;
                }
            }
        }
        Arrival::Take(self.begin(topic, partition, offset))
    }

    /// Partitions resumed at a committed position that delivered nothing for `QUIET`, with the
    /// offset to read each from now, further back each time.
    pub fn quiet(&self, now: Instant) -> Vec<(String, i32, i64)> {
        let mut seeks = Vec::new();
        for mut p in self.partitions.iter_mut() {
            let waiting = p.next == 0 && p.in_flight.is_empty() && !p.resume.covered;
            let quiet = p.resume.since.is_some_and(|since| now.duration_since(since) >= Self::QUIET);
            if let (Some(from), true, true) = (p.baseline, waiting, quiet) {
                match p.resume.widen(from, now) {
                    Some(at) => seeks.push((p.key().0.clone(), p.key().1, at)),
                    None => p.resume.since = None,
                }
            }
        }
        seeks
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

    /// tansu 0.6 answers a fetch from inside a stored batch with the next batch: committed 40
    /// inside the batch 32-47, the first message read is 48. Reading from 39 gives 48 again,
    /// from 24 the batch 16-31; what lies before 40 is skipped and 40 on is taken, gap-free.
    #[test]
    fn a_first_message_beyond_the_committed_position_sends_the_read_back() {
        let t = OffsetTracker::new();
        t.expect("in", 0, 40);
        assert_eq!(t.arrive("in", 0, 48), Arrival::Seek(39));
        assert_eq!(t.arrive("in", 0, 48), Arrival::Seek(24));
        for o in 16..40 {
            assert_eq!(t.arrive("in", 0, o), Arrival::Skip, "offset {o} was committed before");
        }
        assert_eq!(t.arrive("in", 0, 40), Arrival::Take(None));
        assert_eq!(t.arrive("in", 0, 41), Arrival::Take(None));
        assert_eq!(t.finish("in", 0, 40), Some(41), "commits go on from the committed position");
        assert_eq!(t.arrive("in", 0, 12), Arrival::Skip, "a late message from before is not taken twice");
    }

    #[test]
    fn offsets_that_no_earlier_read_delivers_are_a_gap() {
        let t = OffsetTracker::new();
        t.expect("in", 0, 3);
        assert_eq!(t.arrive("in", 0, 10), Arrival::Seek(2));
        assert_eq!(t.arrive("in", 0, 10), Arrival::Seek(0), "never before the partition's start");
        assert_eq!(t.arrive("in", 0, 10), Arrival::Take(Some(Gap { from: 3, to: 10 })));
        assert_eq!(t.finish("in", 0, 10), Some(11));
    }

    /// On a broker that serves every offset, a read from before the committed position that
    /// jumps over it (transaction markers, compaction) leaves no gap: those offsets hold nothing.
    #[test]
    fn a_jump_after_a_read_from_before_is_no_gap() {
        let t = OffsetTracker::new();
        t.expect("in", 0, 40);
        assert_eq!(t.arrive("in", 0, 44), Arrival::Seek(39));
        assert_eq!(t.arrive("in", 0, 39), Arrival::Skip);
        assert_eq!(t.arrive("in", 0, 44), Arrival::Take(None));
        assert_eq!(t.finish("in", 0, 44), Some(45));
    }

    #[test]
    fn a_partition_quiet_after_its_committed_position_is_read_from_earlier() {
        let t = OffsetTracker::new();
        t.expect("in", 0, 40);
        t.expect("in", 1, 0);
        let start = Instant::now();
        assert!(t.quiet(start).is_empty(), "not quiet long enough yet");
        let later = start + OffsetTracker::QUIET * 2;
        assert_eq!(t.quiet(later), vec![("in".to_owned(), 0, 39)], "offset 0 committed: nothing before it");
        assert!(t.quiet(later).is_empty(), "each read back gets its own quiet time");
        assert_eq!(t.quiet(later + OffsetTracker::QUIET * 2), vec![("in".to_owned(), 0, 24)]);
        assert_eq!(t.arrive("in", 0, 30), Arrival::Skip);
        assert!(t.quiet(later + OffsetTracker::QUIET * 4).is_empty(), "a read that covers 40 is no longer quiet");
        assert_eq!(t.arrive("in", 1, 0), Arrival::Take(None));
    }

    #[test]
    fn a_taken_partition_is_never_sent_back() {
        let t = OffsetTracker::new();
        t.expect("in", 0, 40);
        assert_eq!(t.arrive("in", 0, 40), Arrival::Take(None));
        assert_eq!(t.arrive("in", 0, 90), Arrival::Take(None), "only the first message is checked");
        assert!(t.quiet(Instant::now() + OffsetTracker::QUIET * 2).is_empty());
        assert_eq!(t.arrive("in", 5, 7), Arrival::Take(None), "a partition without a committed offset");
    }
}
