//! Kafka input: segment messages, the URI policy for referenced media, and offset bookkeeping.

mod kafka;
mod offsets;
mod uri;

pub use kafka::{consumer, Coordinates, SegmentConsumer};
pub use novelstream_input::segment::{parse_segment, InputError, Media, Segment, SegmentRef, SEGMENT_SCHEMA};
pub use offsets::{Arrival, Gap, OffsetTracker};
pub use uri::UriPolicy;
