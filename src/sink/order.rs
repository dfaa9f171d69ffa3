//! Publication in input order per stream. Decoders finish segments out of order; the records of
//! a message wait here until every message admitted before it with the same topic, partition and
//! key (a stream's segments share their key, so they share a partition) has been released.
//! Streams do not wait for each other.

use std::collections::{HashMap, VecDeque};

use crate::source::Coordinates;

type Stream = (String, i32, Option<String>);

/// Holds finished messages until the earlier ones of their stream are finished too.
#[derive(Debug)]
pub struct StreamOrder<T> {
    /// Offsets of each stream's unreleased messages, in the order they were admitted.
    admitted: HashMap<Stream, VecDeque<i64>>,
    /// Finished messages waiting for an earlier one, by stream and offset.
    finished: HashMap<(Stream, i64), VecDeque<T>>,
}

impl<T> Default for StreamOrder<T> {
    fn default() -> Self {
        Self { admitted: HashMap::new(), finished: HashMap::new() }
    }
}

fn stream(c: &Coordinates) -> Stream {
    (c.topic.clone(), c.partition, c.key.clone())
}

impl<T> StreamOrder<T> {
    /// Records that the message at `c` was read: its stream's later messages wait for it.
    pub fn admit(&mut self, c: &Coordinates) {
        self.admitted.entry(stream(c)).or_default().push_back(c.offset);
    }

    /// The message at `c` is finished as `item`: returns what may be published now, in order
    /// (`item` and the finished messages it held back, or nothing while an earlier one is open).
    /// A message that was never admitted is released at once.
    pub fn release(&mut self, c: &Coordinates, item: T) -> Vec<T> {
        let key = stream(c);
        let Some(queue) = self.admitted.get_mut(&key).filter(|q| q.contains(&c.offset)) else {
            return vec![item];
        };
        self.finished.entry((key.clone(), c.offset)).or_default().push_back(item);
        let mut ready = Vec::new();
        while let Some(&front) = queue.front() {
            let Some(waiting) = self.finished.get_mut(&(key.clone(), front)) else { break };
            ready.push(waiting.pop_front().expect("finished queues are never left empty"));
            if waiting.is_empty() {
                self.finished.remove(&(key.clone(), front));
            }
            queue.pop_front();
        }
        if queue.is_empty() {
            self.admitted.remove(&key);
        }
        ready
    }

    /// Messages admitted and not yet released.
    pub fn open(&self) -> usize {
        self.admitted.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64, key: &str) -> Coordinates {
        Coordinates { topic: "in".into(), partition, offset, key: Some(key.into()) }
    }

    #[test]
    fn a_stream_waits_for_its_earlier_messages_only() {
        let mut order = StreamOrder::default();
        for (offset, key) in [(0, "a"), (1, "b"), (2, "a"), (3, "a")] {
            order.admit(&at(0, offset, key));
        }
        // Offset 3 and 2 of stream a finish first: held back behind 0. Stream b is not.
        assert!(order.release(&at(0, 3, "a"), 3).is_empty());
        assert_eq!(order.release(&at(0, 1, "b"), 1), vec![1]);
        assert!(order.release(&at(0, 2, "a"), 2).is_empty());
        assert_eq!(order.release(&at(0, 0, "a"), 0), vec![0, 2, 3]);
        assert_eq!(order.open(), 0);
        assert!(order.admitted.is_empty() && order.finished.is_empty(), "finished streams leave nothing behind");
        // The same key in another partition is another stream; an unadmitted message passes.
        order.admit(&at(1, 0, "a"));
        assert_eq!(order.release(&at(0, 9, "a"), 9), vec![9]);
        assert_eq!(order.release(&at(1, 0, "a"), 10), vec![10]);
        // After a rewind (a rebalance), the order is the order of reading; a message read twice
        // is released once per read.
        for offset in [5, 4, 4] {
            order.admit(&at(1, offset, "a"));
        }
        assert!(order.release(&at(1, 4, "a"), 40).is_empty());
        assert!(order.release(&at(1, 4, "a"), 41).is_empty());
        assert_eq!(order.release(&at(1, 5, "a"), 50), vec![50, 40, 41]);
        assert_eq!(order.open(), 0);
    }
}
