//! The client tools: what talks to a running daemon from outside its data path. [`produce`]
//! publishes segments; [`topic_reader`] reads a topic back, from which [`summary`], [`score`]
//! and [`report`] count, measure and show what the daemon published (against the truth of an
//! av-digits [`manifest`], drawn by [`charts`]); [`bench`] times the daemon's stages.

pub mod bench;
pub mod charts;
mod error;
pub mod manifest;
pub mod produce;
pub mod report;
pub mod score;
pub mod summary;
#[cfg(test)]
mod testing;
pub mod topic_reader;

pub use error::ToolError;
pub use topic_reader::{read_topic, TopicRecord};
