//! Poison messages: a message whose decoding kills the process (an abort inside libav*, the
//! kernel's out-of-memory killer) would be read again after every restart and block its
//! partition. A marker file per message in decoding, removed when decoding returns, survives the
//! crash: a message found marked was in flight when the process died. It is then decoded alone,
//! with no other decode running, so that a second death while it is in flight can only be its
//! doing; a message marked `MAX_CRASHES` times is not decoded again but dead-lettered.

use std::path::PathBuf;
use std::sync::RwLock;

use crate::source::Coordinates;

/// Deaths while a message was in flight (the last one decoding it alone) before it is refused.
pub const MAX_CRASHES: u32 = 2;

/// The marker directory, and the lock that lets a suspect message decode alone.
#[derive(Debug)]
pub struct CrashMarkers {
    dir: Option<PathBuf>,
    alone: RwLock<()>,
}

impl CrashMarkers {
    /// Markers in `dir` (created when missing); an empty path keeps none.
    pub fn new(dir: &std::path::Path) -> std::io::Result<Self> {
        let dir = (!dir.as_os_str().is_empty()).then(|| dir.to_owned());
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self { dir, alone: RwLock::new(()) })
    }

    /// Runs `decode` for the message at `c` under its marker; `Err(deaths)` instead when the
    /// process died `MAX_CRASHES` times with the message in flight (its marker then goes).
    pub fn guard<T>(&self, c: &Coordinates, decode: impl FnOnce() -> T) -> Result<T, u32> {
        let Some(dir) = &self.dir else { return Ok(decode()) };
        // Kafka topic names are ASCII letters, digits, `.`, `_` and `-`: safe in a file name.
        let marker = dir.join(format!("{}.{}.{}", c.topic, c.partition, c.offset));
        let deaths: u32 = std::fs::read_to_string(&marker).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        if deaths >= MAX_CRASHES {
            let _ = std::fs::remove_file(&marker);
            return Err(deaths);
        }
        let result = {
            // A suspect decodes with the write half: every other decode waits for it.
            let (_shared, _alone) = if deaths > 0 {
                tracing::warn!(topic = %c.topic, partition = c.partition, offset = c.offset, deaths,
                    "the process died while this message was in flight; decoding it alone");
                (None, Some(self.alone.write().unwrap_or_else(|e| e.into_inner())))
            } else {
                (Some(self.alone.read().unwrap_or_else(|e| e.into_inner())), None)
            };
            if let Err(e) = std::fs::write(&marker, (deaths + 1).to_string()) {
                tracing::warn!(error = %e, marker = %marker.display(), "crash marker not written");
            }
            let result = decode();
            // Removed before the lock is let go: a suspect that starts next must never find this
            // one's marker still there, or a death during its decode would count against both.
            let _ = std::fs::remove_file(&marker);
            result
        };
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_in_flight_at_two_deaths_is_refused_and_one_that_finishes_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let at = |offset| Coordinates { topic: "in".into(), partition: 0, offset, key: None };
        let markers = CrashMarkers::new(dir.path()).unwrap();
        assert_eq!(markers.guard(&at(1), || 7), Ok(7));
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "a finished decode leaves no marker");
        // A death mid-decode leaves the marker: written by hand as the dying process leaves it.
        std::fs::write(dir.path().join("in.0.2"), "1").unwrap();
        let alone = markers.guard(&at(2), || markers.alone.try_read().is_err());
        assert_eq!(alone, Ok(true), "a suspect decodes with every other decode held off");
        std::fs::write(dir.path().join("in.0.3"), "2").unwrap();
        assert_eq!(
            markers.guard(&at(3), || unreachable!("a message that killed the process twice is not decoded")),
            Err(2)
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
        // The marker is in place while decoding runs, counting this attempt.
        let during = markers.guard(&at(4), || std::fs::read_to_string(dir.path().join("in.0.4")).unwrap());
        assert_eq!(during, Ok("1".to_owned()));
        assert!(CrashMarkers::new(std::path::Path::new("")).unwrap().guard(&at(5), || true).unwrap());
    }
}
