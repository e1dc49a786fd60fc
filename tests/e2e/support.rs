//! Helpers for the e2e tests: a node is a temporary home whose commands run on loopback only;
//! its processes are driven by the shared [`Running`] (tests/common/process.rs). Test data and
//! digests.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::process::{Running, BIN};

/// A node: its own home directory.
pub struct Node {
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// `warpgate --home … --json --offline <args>` with piped stdio unless the caller changes it.
    /// `--offline`: these tests run on loopback and must never reach the public default servers.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--home")
            .arg(self.home())
            .args(["--json", "--offline"])
            .args(args);
        cmd.env_remove("RUST_LOG").env_remove("WARPGATE_CONFIG");
        cmd
    }

    pub fn id(&self) -> String {
        let out = self.command(&["addr"]).output().expect("run addr");
        assert!(
            out.status.success(),
            "addr failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).expect("addr --json is JSON");
        doc["id"].as_str().expect("id").to_string()
    }

    /// Starts `listen --port 0 <extra>` and waits for its `listening` event.
    /// `connect --via VIA FLAG PATH ADDR` (FLAG: `--send` or `--recv`) with no stdin, run to
    /// its end.
    pub fn connect_file(&self, via: &str, flag: &str, path: &Path, addr: &str) -> Output {
        let path = path.to_str().expect("a UTF-8 path");
        self.command(&["connect", "--via", via, flag, path, addr])
            .stdin(Stdio::null())
            .output()
            .expect("warpgate runs")
    }

    pub fn listen(&self, extra: &[&str], stdin: Stdio, stdout: Stdio) -> Running {
        let mut args = vec!["listen", "--port", "0"];
        args.extend_from_slice(extra);
        let mut running = Running::spawn(self.command(&args).stdin(stdin).stdout(stdout));
        let event = running.wait_event("listening");
        running.addr = event["addr"]
            .as_str()
            .expect("addr in listening event")
            .to_string();
        running
    }
}

/// Writes `len` pseudo-random bytes (seeded, so failures reproduce) to `path`.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut state = seed | 1;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut block = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len());
        file.write_all(&block[..n]).expect("write");
        left -= n;
    }
    file.flush().expect("flush");
}

pub fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).expect("open");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    format!("{:x}", hasher.finalize())
}

pub fn file_stdio(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::open(path).expect("open input"))
}

pub fn file_out(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).expect("create output"))
}

/// A TCP echo server on loopback; each connection's end (EOF or error) is reported on the
/// channel, so a test can see a forwarded connection being closed.
pub fn echo_server() -> (u16, mpsc::Receiver<Instant>) {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let (ended, ends) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in server.incoming().map_while(Result::ok) {
            let ended = ended.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 16 << 10];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = ended.send(Instant::now());
            });
        }
    });
    (port, ends)
}
