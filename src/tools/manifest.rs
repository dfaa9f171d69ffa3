//! The av-digits manifest as the tools use it: the clips `produce --manifest` streams, and the
//! truth `score` and `report` measure the daemon's assignments against.

use std::collections::HashMap;
use std::path::Path;

use super::ToolError;
use crate::eval::av_digits::AvManifest;

/// Reads an av-digits `manifest.json`.
pub fn read_manifest(path: &Path) -> Result<AvManifest, ToolError> {
    let text = std::fs::read_to_string(path).map_err(ToolError::file("reading", path))?;
    serde_json::from_str(&text).map_err(|source| ToolError::Manifest { path: path.to_owned(), source })
}

/// Each clip's class by its segment id (its path in the manifest), for the clips of `split`
/// (all clips without one).
pub fn truth_labels<'a>(manifest: &'a AvManifest, split: Option<&str>) -> HashMap<String, &'a str> {
    manifest
        .clips
        .iter()
        .filter(|c| split.is_none_or(|s| c.split == s))
        .map(|c| (c.path.to_string_lossy().into_owned(), c.label.as_str()))
        .collect()
}
