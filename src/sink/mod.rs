//! Kafka output: assignment records, dead-letter records, cluster records, and the producer that waits for the
//! broker's acknowledgement of each.

mod assignment;
mod cluster;
mod dead_letter;
mod kafka;
mod order;
mod transactional;

pub use assignment::{Assignment, Kind, ASSIGNMENT_SCHEMA};
pub use cluster::{
    ClusterRecord, ClusterTable, Exemplar, ModelRecord, VersionPoint, CLUSTER_SCHEMA, MODEL_KEY, MODEL_SCHEMA,
};
pub use dead_letter::{DeadLetter, DEAD_LETTER_SCHEMA};
pub use kafka::{OutRecord, Publisher};
pub use order::StreamOrder;
pub use transactional::TransactionalPublisher;
