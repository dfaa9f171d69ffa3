//! Which URIs a segment may refer to, and reading the media behind them.

use std::io::Read;
use std::path::PathBuf;

use super::InputError;
use crate::config::SourceConfig;

/// The allow-list for segment URIs: schemes, and the directories `file://` may reach.
#[derive(Debug, Clone)]
pub struct UriPolicy {
    schemes: Vec<String>,
    /// Canonical roots, so a link or `..` cannot escape them.
    roots: Vec<PathBuf>,
    max_bytes: u64,
}

impl UriPolicy {
    pub fn new(config: &SourceConfig) -> Result<Self, crate::Error> {
        let roots = config
            .file_roots
            .iter()
            .map(|root| root.canonicalize().map_err(crate::Error::io(format!("source.file_roots: {}", root.display()))))
            .collect::<Result<_, _>>()?;
        Ok(Self { schemes: config.allowed_schemes.clone(), roots, max_bytes: config.max_segment_bytes })
    }

    /// Reads the media `uri` names, if the policy allows it.
    pub fn fetch(&self, uri: &str) -> Result<Vec<u8>, InputError> {
        let refuse = |why: &str| InputError::RefusedUri { uri: uri.to_owned(), why: why.to_owned() };
        let parsed = url::Url::parse(uri).map_err(|e| refuse(&format!("not a URI: {e}")))?;
        if !self.schemes.iter().any(|s| s == parsed.scheme()) {
            return Err(refuse(&format!("scheme `{}` is not allowed", parsed.scheme())));
        }
        // Only `file` passes config validation today; other schemes need a fetcher first.
        if parsed.scheme() != "file" {
            return Err(refuse("no reader for this scheme"));
        }
        if !matches!(parsed.host_str(), None | Some("") | Some("localhost")) {
            return Err(refuse("file URIs must not name a host"));
        }
        let path = parsed.to_file_path().map_err(|()| refuse("not a local file path"))?;
        let unreadable = |why: String| InputError::UnreadableUri { uri: uri.to_owned(), why };
        let real = path.canonicalize().map_err(|e| unreadable(e.to_string()))?;
        if !self.roots.iter().any(|root| real.starts_with(root)) {
            return Err(refuse("path is outside source.file_roots"));
        }
        let file = std::fs::File::open(&real).map_err(|e| unreadable(e.to_string()))?;
        let meta = file.metadata().map_err(|e| unreadable(e.to_string()))?;
        if !meta.is_file() {
            return Err(unreadable("not a regular file".into()));
        }
        if meta.len() > self.max_bytes {
            return Err(InputError::Oversize { bytes: meta.len(), max: self.max_bytes });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The file may grow between stat and read: never read past the limit.
        file.take(self.max_bytes + 1).read_to_end(&mut bytes).map_err(|e| unreadable(e.to_string()))?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(InputError::Oversize { bytes: bytes.len() as u64, max: self.max_bytes });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(root: &std::path::Path, max: u64) -> UriPolicy {
        UriPolicy::new(&SourceConfig {
            allowed_schemes: vec!["file".into()],
            file_roots: vec![root.to_owned()],
            max_segment_bytes: max,
        })
        .unwrap()
    }

    #[test]
    fn reads_inside_roots_only() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("root");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(inside.join("a.ts"), b"media").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), inside.join("link")).unwrap();
        let p = policy(&inside, 100);
        let uri = |p: &std::path::Path| url::Url::from_file_path(p).unwrap().to_string();

        assert_eq!(p.fetch(&uri(&inside.join("a.ts"))).unwrap(), b"media");
        let reason = |u: &str| p.fetch(u).unwrap_err().reason();
        assert_eq!(reason(&uri(&dir.path().join("secret"))), "refused_uri");
        assert_eq!(reason(&uri(&inside.join("link"))), "refused_uri");
        assert_eq!(reason(&format!("{}/../secret", uri(&inside))), "refused_uri");
        assert_eq!(reason("http://127.0.0.1/a.ts"), "refused_uri");
        assert_eq!(reason("file://example.com/etc/passwd"), "refused_uri");
        assert_eq!(reason("not a uri"), "refused_uri");
        assert_eq!(reason(&uri(&inside.join("missing.ts"))), "unreadable_uri");
        assert_eq!(policy(&inside, 3).fetch(&uri(&inside.join("a.ts"))).unwrap_err().reason(), "oversize");
    }
}
