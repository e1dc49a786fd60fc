//! Helpers for driving real `warpgate` processes: a node is a temporary home; a listener is a
//! child whose JSON events (stderr, `--json`) are read line by line on a thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_warpgate");
/// How long any single expected event may take to show up.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

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

/// A running child with its stderr events collected.
pub struct Running {
    pub child: Child,
    pub addr: String,
    events: mpsc::Receiver<Value>,
    /// Every stderr line, for failure messages.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn warpgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, events) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line.clone());
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v.get("event").is_some() {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        Self {
            child,
            addr: String::new(),
            events,
            log,
        }
    }

    /// The next event named `name` (earlier events of other names are skipped).
    pub fn wait_event(&mut self, name: &str) -> Value {
        let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == name => return v,
                Ok(_) => continue,
                Err(_) => panic!("no {name:?} event; stderr so far:\n{}", self.stderr()),
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for exit (bounded) and returns the exit code.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Give the stderr reader a moment to drain.
                std::thread::sleep(Duration::from_millis(50));
                return status.code().unwrap_or(-1);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
