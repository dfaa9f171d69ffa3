//! Which trainer is the one: epochs won by the first claim in the log, kept by heartbeats.

use std::collections::BTreeMap;

use super::Control;

/// What the claims and heartbeats read so far say.
#[derive(Debug, Default, Clone)]
pub struct Leases {
    /// The winner of each epoch claimed, and when it was last heard of (its clock, ms).
    epochs: BTreeMap<u64, (String, i64)>,
}

impl Leases {
    /// Takes one control record, in log order.
    pub fn observe(&mut self, control: &Control) {
        match control {
            Control::Claim { epoch, owner, at_ms } => {
                // The first claim of an epoch wins; later ones of it lost.
                self.epochs.entry(*epoch).or_insert_with(|| (owner.clone(), *at_ms));
            }
            Control::Heartbeat { epoch, owner, at_ms } => {
                if let Some((winner, seen)) = self.epochs.get_mut(epoch) {
                    if winner == owner {
                        *seen = (*seen).max(*at_ms);
                    }
                }
            }
        }
    }

    /// The newest epoch claimed and its winner.
    pub fn holder(&self) -> Option<(u64, &str)> {
        self.epochs.iter().next_back().map(|(&epoch, (owner, _))| (epoch, owner.as_str()))
    }

    /// The winner of `epoch`.
    pub fn winner(&self, epoch: u64) -> Option<&str> {
        self.epochs.get(&epoch).map(|(owner, _)| owner.as_str())
    }

    /// Whether the newest epoch's winner was heard of within `lease_ms` of `now_ms`.
    pub fn holder_alive(&self, now_ms: i64, lease_ms: i64) -> bool {
        self.epochs.values().next_back().is_some_and(|&(_, seen)| now_ms - seen < lease_ms)
    }

    /// The epoch a new claim asks for.
    pub fn next_epoch(&self) -> u64 {
        self.holder().map_or(1, |(epoch, _)| epoch + 1)
    }

    /// Whether a version of the trainer `owner` of `epoch` may be taken: it won that epoch and
    /// no later epoch was claimed before the version was read.
    pub fn accepts(&self, epoch: u64, owner: &str) -> bool {
        self.winner(epoch) == Some(owner) && self.holder().is_some_and(|(newest, _)| newest == epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(epoch: u64, owner: &str, at_ms: i64) -> Control {
        Control::Claim { epoch, owner: owner.into(), at_ms }
    }

    fn beat(epoch: u64, owner: &str, at_ms: i64) -> Control {
        Control::Heartbeat { epoch, owner: owner.into(), at_ms }
    }

    /// Two standbys claim the same epoch: the first in the log holds it, the other's heartbeats
    /// keep nothing alive, and a fenced trainer's versions are refused.
    #[test]
    fn the_first_claim_wins_and_fences_the_previous_holder() {
        let mut leases = Leases::default();
        assert_eq!(leases.next_epoch(), 1);
        assert!(!leases.holder_alive(0, 10_000));
        leases.observe(&claim(1, "a", 1_000));
        leases.observe(&beat(1, "a", 5_000));
        assert!(leases.holder_alive(14_000, 10_000));
        assert!(!leases.holder_alive(15_000, 10_000), "a silent holder's lease runs out");
        assert!(leases.accepts(1, "a"));

        leases.observe(&claim(2, "b", 16_000));
        leases.observe(&claim(2, "c", 16_001));
        assert_eq!(leases.holder(), Some((2, "b")));
        leases.observe(&beat(2, "c", 30_000));
        assert!(!leases.holder_alive(27_000, 10_000), "the loser's heartbeats keep no lease alive");
        assert!(!leases.accepts(2, "c"));
        assert!(!leases.accepts(1, "a"), "the holder of an older epoch is fenced off");
        assert!(leases.accepts(2, "b"));
        assert_eq!(leases.next_epoch(), 3);
    }
}
