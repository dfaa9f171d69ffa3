//! `novelstream report`: one self-contained HTML page about what the daemon discovered. Per
//! cluster: its size and span, its size over time, a contact sheet of exemplar windows (frames
//! decoded from the segments' media, with the window's audio to play), and, when the truth of
//! the streamed clips is given, its majority class; for the run: the accuracy-over-time curve
//! and the stability of clusters across model versions. Images and audio are embedded as data
//! URIs, so the file can be mailed or archived on its own.

mod exemplars;
mod page;
mod published;

pub use exemplars::{MediaError, MediaSource};
pub use page::{render, ReportInput, ReportOptions, ReportStats};
pub use published::{read_published, Published, SegmentMedia};
