//! Which URIs a segment may refer to, and reading the media behind them.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::InputError;
use crate::config::SourceConfig;

/// The allow-list for segment URIs: schemes, and the directories `file://` may reach.
#[derive(Debug, Clone)]
pub struct UriPolicy {
    schemes: Vec<String>,
    /// Canonical roots and a handle on each: paths are resolved beneath the handle, so a link,
    /// `..` or a rename during the fetch cannot leave the root.
    roots: Vec<(PathBuf, Arc<OwnedFd>)>,
    max_bytes: u64,
}

/// Bytes read between two checks of the deadline.
const CHUNK: usize = 1 << 20;

impl UriPolicy {
    pub fn new(config: &SourceConfig) -> Result<Self, crate::Error> {
        let roots = config
            .file_roots
            .iter()
            .map(|root| {
                let what = || format!("source.file_roots: {}", root.display());
                let real = root.canonicalize().map_err(crate::Error::io(what()))?;
                let handle =
                    open_path(None, &real, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(crate::Error::io(what()))?;
                Ok((real, Arc::new(handle)))
            })
            .collect::<Result<_, crate::Error>>()?;
        Ok(Self { schemes: config.allowed_schemes.clone(), roots, max_bytes: config.max_segment_bytes })
    }

    /// Reads the media `uri` names, if the policy allows it, giving up at `deadline`.
    pub fn fetch(&self, uri: &str, deadline: Instant) -> Result<Vec<u8>, InputError> {
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
        let Some((root, relative)) = self.roots.iter().find_map(|(real, fd)| Some((fd, path.strip_prefix(real).ok()?)))
        else {
            return Err(refuse("path is outside source.file_roots"));
        };
        let unreadable = |why: String| InputError::UnreadableUri { uri: uri.to_owned(), why };
        // Out of descriptors or memory is the machine's state, not the segment's: retriable.
        let io_error = |e: std::io::Error| match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EINTR) => {
                InputError::Exhausted { uri: uri.to_owned(), why: e.to_string() }
            }
            _ => unreadable(e.to_string()),
        };
        // A handle that names the file without opening it: a FIFO or a device is refused below
        // before anything opens it (opening either can block or act).
        let handle = open_path(Some(root), relative, libc::O_PATH, libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EXDEV) | Some(libc::ELOOP) => refuse("path leaves source.file_roots"),
                _ => io_error(e),
            })?;
        let kind = file_kind(&handle).map_err(io_error)?;
        if kind != libc::S_IFREG {
            return Err(unreadable("not a regular file".into()));
        }
        // Reopened through the handle, so it is the file just checked whatever the path names now.
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
        let file: std::fs::File = open_path(None, &proc_path, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY, 0)
            .map_err(io_error)?
            .into();
        let len = file.metadata().map_err(io_error)?.len();
        if len > self.max_bytes {
            return Err(InputError::Oversize { bytes: len, max: self.max_bytes });
        }
        read_until(file, self.max_bytes, deadline).map_err(|e| match e {
            Fetch::Io(e) => io_error(e),
            Fetch::Oversize(bytes) => InputError::Oversize { bytes, max: self.max_bytes },
            // A slow disk or a starved CPU: trying again may work.
            Fetch::Late => InputError::Exhausted {
                uri: uri.to_owned(),
                why: "reading took longer than the decode deadline".into(),
            },
        })
    }
}

enum Fetch {
    Io(std::io::Error),
    Oversize(u64),
    Late,
}

/// Reads `file` to its end in chunks, never past `max_bytes` (it may grow while being read) nor
/// past `deadline`.
fn read_until(file: std::fs::File, max_bytes: u64, deadline: Instant) -> Result<Vec<u8>, Fetch> {
    let mut bytes = Vec::new();
    let mut limited = file.take(max_bytes + 1);
    loop {
        if Instant::now() > deadline {
            return Err(Fetch::Late);
        }
        let before = bytes.len();
        (&mut limited).take(CHUNK as u64).read_to_end(&mut bytes).map_err(Fetch::Io)?;
        if bytes.len() as u64 > max_bytes {
            return Err(Fetch::Oversize(bytes.len() as u64));
        }
        if bytes.len() == before {
            return Ok(bytes);
        }
    }
}

/// `openat2(2)` of `path` beneath `dir` (or as given when `dir` is `None`), close-on-exec.
fn open_path(dir: Option<&OwnedFd>, path: &Path, flags: libc::c_int, resolve: u64) -> std::io::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: `open_how` is plain data; zeroed is a valid value, and its fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    let dir = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: the path is a valid C string and `how` a valid `open_how` of the size passed; the
    // returned descriptor, when not negative, is new and owned by nobody else.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c_path.as_ptr(),
            &how as *const libc::open_how,
            size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Err(std::io::Error::other("openat2 is unavailable (Linux 5.6 or later is needed)"));
        }
        return Err(e);
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// The file type bits (`S_IFREG`, `S_IFIFO`, …) of what `fd` names; `fd` may be an `O_PATH` one.
fn file_kind(fd: &OwnedFd) -> std::io::Result<libc::mode_t> {
    // SAFETY: `stat` is plain data, filled by `fstat` on a descriptor we own.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.st_mode & libc::S_IFMT)
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
        let soon = || Instant::now() + std::time::Duration::from_secs(5);

        assert_eq!(p.fetch(&uri(&inside.join("a.ts")), soon()).unwrap(), b"media");
        let reason = |u: &str| p.fetch(u, soon()).unwrap_err().reason();
        assert_eq!(reason(&uri(&dir.path().join("secret"))), "refused_uri");
        assert_eq!(reason(&uri(&inside.join("link"))), "refused_uri");
        assert_eq!(reason(&format!("{}/../secret", uri(&inside))), "refused_uri");
        assert_eq!(reason("http://127.0.0.1/a.ts"), "refused_uri");
        assert_eq!(reason("file://example.com/etc/passwd"), "refused_uri");
        assert_eq!(reason("not a uri"), "refused_uri");
        assert_eq!(reason(&uri(&inside.join("missing.ts"))), "unreadable_uri");
        assert_eq!(policy(&inside, 3).fetch(&uri(&inside.join("a.ts")), soon()).unwrap_err().reason(), "oversize");
    }

    /// FIFOs, directories and devices are refused without being opened for reading (opening a
    /// FIFO with no writer would block), links that stay inside the root are followed, and an
    /// absolute link is refused even when it points inside.
    #[test]
    fn only_regular_files_beneath_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.ts"), b"media").unwrap();
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::symlink("sub/a.ts", root.join("relative")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/a.ts"), root.join("absolute")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("device")).unwrap();
        let p = policy(&root, 100);
        let fetch = |name: &str| {
            p.fetch(
                url::Url::from_file_path(root.join(name)).unwrap().as_ref(),
                Instant::now() + std::time::Duration::from_secs(5),
            )
        };
        let started = Instant::now();
        let fifo = fetch("fifo").unwrap_err();
        assert_eq!(fifo.reason(), "unreadable_uri");
        assert!(fifo.to_string().contains("not a regular file"), "{fifo}");
        assert!(started.elapsed().as_secs() < 2, "a FIFO stalled the fetch");
        assert_eq!(fetch("sub").unwrap_err().reason(), "unreadable_uri");
        assert_eq!(fetch("relative").unwrap(), b"media");
        assert_eq!(fetch("absolute").unwrap_err().reason(), "refused_uri");
        assert_eq!(fetch("device").unwrap_err().reason(), "refused_uri");
        let late = p.fetch(url::Url::from_file_path(root.join("sub/a.ts")).unwrap().as_ref(), started);
        assert!(late.unwrap_err().to_string().contains("deadline"));
    }

    /// A directory of the root swapped for a link out of it while fetches run (the race between
    /// checking a path and opening it): every fetch gives the inside file or an error, never the
    /// outside one.
    #[test]
    fn a_directory_swapped_for_a_link_during_fetches_never_leaves_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(root.join("d/media.ts"), b"inside").unwrap();
        std::fs::write(outside.join("media.ts"), b"outside").unwrap();
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
        let (stop, swaps) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let swapper = {
            let (root, outside, stop, swaps) = (root.clone(), outside.clone(), stop.clone(), swaps.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    std::fs::rename(root.join("d"), root.join("saved")).unwrap();
                    std::os::unix::fs::symlink(&outside, root.join("d")).unwrap();
                    std::thread::yield_now();
                    std::fs::remove_file(root.join("d")).unwrap();
                    std::fs::rename(root.join("saved"), root.join("d")).unwrap();
                    std::thread::yield_now();
                    swaps.fetch_add(1, Relaxed);
                }
            })
        };
        let p = policy(&root, 100);
        let uri = url::Url::from_file_path(root.join("d/media.ts")).unwrap().to_string();
        let (mut inside, mut refused) = (0, 0);
        // At least 3000 fetches across at least 300 swaps, however busy the machine is.
        let started = Instant::now();
        while (inside + refused < 3000 || swaps.load(Relaxed) < 300) && started.elapsed().as_secs() < 30 {
            match p.fetch(&uri, Instant::now() + std::time::Duration::from_secs(5)) {
                Ok(bytes) => {
                    assert_eq!(bytes, b"inside");
                    inside += 1;
                }
                Err(e) => {
                    assert!(matches!(e.reason(), "refused_uri" | "unreadable_uri"), "{e}");
                    refused += 1;
                }
            }
        }
        stop.store(true, Relaxed);
        swapper.join().unwrap();
        assert!(swaps.load(Relaxed) >= 300, "the directory was hardly swapped");
        assert!(inside > 0, "{inside} read inside, {refused} refused");
    }
}
