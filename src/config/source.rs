//! `[source]`: where segment media may come from, and how large it may be.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Where segment media may come from, and how large it may be.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// URI schemes a segment reference may use. Supported: `file`.
    pub allowed_schemes: Vec<String>,
    /// Directories `file://` URIs must resolve into (after following links).
    pub file_roots: Vec<PathBuf>,
    /// Largest segment accepted, inline or referenced, in bytes.
    pub max_segment_bytes: u64,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self { allowed_schemes: vec!["file".into()], file_roots: Vec::new(), max_segment_bytes: 64 * 1024 * 1024 }
    }
}

impl SourceConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for scheme in &self.allowed_schemes {
            if scheme != "file" {
                return invalid("source.allowed_schemes", &format!("lists `{scheme}`, but only `file` is supported"));
            }
        }
        Ok(())
    }
}
