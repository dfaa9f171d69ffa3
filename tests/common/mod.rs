//! Test harness: a real `tansu` broker on a free 127.0.0.1 port, clips made with the `ffmpeg`
//! CLI, and the `novelstream` binary as a child process. Everything started here is stopped on
//! drop.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tansu binary: `$NOVELSTREAM_TANSU`, or where `make setup` puts it.
fn tansu_binary() -> PathBuf {
    let path = std::env::var_os("NOVELSTREAM_TANSU").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("NOVELSTREAM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/novelstream"));
        cache.join("tansu-0.6.0/bin/tansu")
    });
    assert!(path.is_file(), "tansu not found at {} (run `make setup`)", path.display());
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tansu broker with in-memory storage, killed on drop.
pub struct Broker {
    child: Child,
    pub address: String,
}

impl Broker {
    pub fn start() -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        let broker = Broker { child, address: format!("127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&broker.address).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(100));
        }
        broker
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
    pub fn start(args: &[&str]) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_novelstream"))
            .args(args)
            .env("RUST_LOG", "info,librdkafka=warn")
            .spawn()
            .expect("starting novelstream");
        Daemon { child }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
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
