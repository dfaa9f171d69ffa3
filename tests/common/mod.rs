//! Test harness: a real `tansu` broker on 127.0.0.1, clips made with the `ffmpeg` CLI, and the
//! `novelstream` binary as a child process. Everything started here is stopped on drop.

#![allow(dead_code)]

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The tansu binary: `$NOVELSTREAM_TANSU`, or the `tansu` link `make setup` points at the version
/// it built (the version is written only in scripts/setup.sh).
fn tansu_binary() -> PathBuf {
    let path = std::env::var_os("NOVELSTREAM_TANSU").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("NOVELSTREAM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/novelstream"));
        cache.join("tansu/bin/tansu")
    });
    assert!(path.is_file(), "tansu not found at {} (run `make setup`)", path.display());
    path
}

/// A port nothing listened on a moment ago: only a guess, as any process may bind it before the
/// caller does. A server started on it is checked with [`wait_listening`].
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// (port, socket inode) of every TCP socket listening on this machine, from /proc/net.
fn listening_sockets() -> Vec<(u16, u64)> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for fields in text.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>()) {
            // Field 1 is the local ADDRESS:PORT in hex, field 3 the state (0A: listening), 9 the inode.
            if fields.len() > 9 && fields[3] == "0A" {
                let port = fields[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
                if let (Some(port), Ok(inode)) = (port, fields[9].parse()) {
                    found.push((port, inode));
                }
            }
        }
    }
    found
}

/// Inodes of the sockets process `pid` holds open.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return HashSet::new() };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// Waits until `child` itself listens on `port` (or, with `None`, on any port) and returns that
/// port; `Err` with its status when it exited first. The listening socket must be among the
/// child's own descriptors: a server that lost its port to another process is not taken for one
/// that serves.
fn wait_listening(child: &mut Child, port: Option<u16>, within: Duration) -> Result<u16, ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(status);
        }
        let own = socket_inodes(child.id());
        let listening = listening_sockets()
            .into_iter()
            .find(|(p, inode)| own.contains(inode) && port.is_none_or(|want| *p == want));
        if let Some((port, _)) = listening {
            return Ok(port);
        }
        assert!(Instant::now() < deadline, "pid {} listened on no port ({port:?}) within {within:?}", child.id());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tansu broker with in-memory storage, killed on drop.
pub struct Broker {
    child: Child,
    pub address: String,
}

impl Broker {
    /// Tansu must be told its port up front (it advertises it to clients), so the port is picked
    /// before tansu binds it and a parallel test's server may take it in between: tansu then exits,
    /// and it is started again on another port.
    pub fn start() -> Broker {
        for _ in 0..5 {
            let port = unused_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let mut child = Command::new(tansu_binary())
                .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting tansu");
            match wait_listening(&mut child, Some(port), Duration::from_secs(30)) {
                Ok(_) => return Broker { child, address: format!("127.0.0.1:{port}") },
                Err(status) => eprintln!("tansu exited ({status}) on port {port}; trying another port"),
            }
        }
        panic!("tansu did not start on any of 5 ports");
    }
}

impl Broker {
    /// A client config for this broker whose topics get `partitions` partitions of one replica,
    /// with `topics` created.
    pub fn with_topics(&self, partitions: i32, topics: &[&str]) -> novelstream::config::KafkaConfig {
        let kafka = novelstream::config::KafkaConfig {
            brokers: self.address.clone(),
            topic_partitions: partitions,
            topic_replication_factor: 1,
            ..Default::default()
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(novelstream::admin::ensure_topics(&kafka, topics)).unwrap();
        kafka
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child `novelstream` process, killed on drop if still running.
pub struct Daemon {
    pub child: Child,
}

impl Daemon {
    /// Starts `novelstream ARGS`, its output on the test's.
    pub fn start(args: &[&str]) -> Daemon {
        Self::spawn(args, Stdio::inherit(), Stdio::inherit())
    }

    /// Starts `novelstream ARGS` with its log (standard error) written to `log`, for a test that
    /// reads it; standard output is dropped.
    pub fn start_logging_to(args: &[&str], log: &Path) -> Daemon {
        Self::spawn(args, Stdio::null(), std::fs::File::create(log).unwrap().into())
    }

    fn spawn(args: &[&str], stdout: Stdio, stderr: Stdio) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_novelstream"))
            .args(args)
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("starting novelstream");
        Daemon { child }
    }

    /// The port of the metrics endpoint of a daemon configured with `listen = "127.0.0.1:0"`:
    /// the system picks a free port as the daemon binds it, so no parallel test can take it
    /// between a pick and the bind. The daemon listens on no other port.
    pub fn metrics_port(&mut self) -> u16 {
        wait_listening(&mut self.child, None, Duration::from_secs(60))
            .unwrap_or_else(|status| panic!("novelstream exited ({status}) before serving its metrics"))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self, within: Duration) -> ExitStatus {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "novelstream did not exit within {within:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the novelstream binary to completion and returns its stdout.
pub fn novelstream(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_novelstream")).args(args).output().unwrap();
    assert!(out.status.success(), "novelstream {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Makes an H.264 (+ AAC) clip from lavfi sources with the `ffmpeg` CLI.
/// `video` is a lavfi source such as `testsrc`; the container follows the file extension.
pub fn make_clip(path: &Path, video: &str, seconds: f64, fps: u32, audio: bool) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"]).arg(format!("{video}=size=160x120:rate={fps}"));
    if audio {
        cmd.args(["-f", "lavfi", "-i"]).arg("sine=frequency=440:sample_rate=44100");
    }
    cmd.args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]);
    if audio {
        cmd.args(["-c:a", "aac"]);
    }
    // Not every lavfi source has a duration option: cut the output instead.
    let status = cmd.arg("-t").arg(seconds.to_string()).arg(path).status().expect("running ffmpeg (run `make setup`)");
    assert!(status.success(), "ffmpeg failed to make {}", path.display());
}

/// Runs the `ffmpeg` CLI with `args` (after `-loglevel error -y`), asserting success.
pub fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("running ffmpeg (run `make setup`)");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body (`None` when nothing listens).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// The value of one sample line (`name value`) of a Prometheus text body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `/metrics` on `port` until `done` holds for its body, and returns that body; fails
/// saying what it waited for and what the endpoint said last.
pub fn wait_for_metrics(port: u16, what: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let body = http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}; /metrics last said:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Merges the TOML `new` into `into`, table by table, a key of `new` replacing the same key of
/// `into` (as scripts/toml_merge.py merges the scripts' configs).
pub fn merge_toml(into: &mut toml::Table, new: toml::Table) {
    for (key, value) in new {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge_toml(old, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}
