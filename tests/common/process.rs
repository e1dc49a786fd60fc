//! The one driver of a real `warpgate` process, shared by the e2e and lab test binaries: the
//! caller builds the `Command` (a home, `--json`, maybe `ip netns exec NS` in front), the driver
//! reads its JSON events from stderr line by line on a thread, waits for an event or the exit
//! with a timeout, optionally feeds stdin and collects stdout, and kills the process on drop.

// Each test binary includes this file and uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The warpgate binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_warpgate");
/// How long any single expected event may take to show up in [`Running::wait_event`].
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the stderr reader may take to catch up once the process has exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A running child with its stderr read as it arrives; dropping it kills the process.
pub struct Running {
    pub child: Child,
    /// The address from the `listening` event, for the callers that wait for one.
    pub addr: String,
    /// JSON events not yet taken by `wait_event*`.
    events: mpsc::Receiver<Value>,
    /// Every stderr line so far, events or not.
    log: Arc<Mutex<Vec<String>>>,
    /// Disconnects when the stderr reader has seen the end of the pipe.
    drained: mpsc::Receiver<()>,
    /// Collects stdout when the driver owns it ([`Running::spawn_with_input`]).
    stdout: Option<JoinHandle<Vec<u8>>>,
    /// A home directory that must outlive the process (dropped after it is killed).
    home: Option<tempfile::TempDir>,
}

/// What a finished process left behind.
#[derive(Debug)]
pub struct Finished {
    /// `None` when it had to be killed.
    pub code: Option<i32>,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: Vec<String>,
    /// Every JSON event on stderr, including those already taken by `wait_event*`.
    pub events: Vec<Value>,
}

impl Finished {
    pub fn event(&self, name: &str) -> Option<&Value> {
        self.events.iter().find(|e| e["event"] == name)
    }
}

impl Running {
    /// Spawns `cmd` with stderr piped to the event reader; stdin and stdout are the caller's.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, events) = mpsc::channel();
        let (drained_tx, drained) = mpsc::channel::<()>();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            let _drained = drained_tx;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Logged first, so that a failure message after an event includes its line.
                lines.lock().unwrap().push(line.clone());
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
            drained,
            stdout: None,
            home: None,
        }
    }

    /// Spawns `cmd` with `input` written to its stdin (then closed) and its stdout collected
    /// for [`Running::finish`].
    pub fn spawn_with_input(cmd: &mut Command, input: &[u8]) -> Self {
        let mut running = Self::spawn(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()));
        let mut stdin = running.child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let mut out = running.child.stdout.take().expect("piped stdout");
        running.stdout = Some(std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        }));
        running
    }

    /// Keeps `home` until the process is gone.
    pub fn keeping(mut self, home: tempfile::TempDir) -> Self {
        self.home = Some(home);
        self
    }

    /// The next event named `name` (earlier events of other names are skipped); panics with
    /// the stderr so far when none comes within [`EVENT_TIMEOUT`].
    pub fn wait_event(&mut self, name: &str) -> Value {
        self.wait_event_within(name, EVENT_TIMEOUT)
            .unwrap_or_else(|| panic!("no {name:?} event; stderr so far:\n{}", self.stderr()))
    }

    /// The next event named `name`, or `None` when none comes within `timeout` or the
    /// process's stderr has ended.
    pub fn wait_event_within(&mut self, name: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == name => return Some(v),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for exit and returns the exit code (-1 for a signal); panics with the stderr
    /// when the process is still running after `timeout` (and kills it).
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        match self.exit_within(timeout) {
            Some(status) => {
                self.drain();
                status.code().unwrap_or(-1)
            }
            None => {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Waits for exit (killing the process after `timeout`) and collects what it left.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let code = match self.exit_within(timeout) {
            Some(status) => status.code(),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                None
            }
        };
        let stdout = self
            .stdout
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default();
        self.drain();
        let stderr = std::mem::take(&mut *self.log.lock().unwrap());
        let events = stderr
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("event").is_some())
            .collect();
        Finished {
            code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stdout_bytes: stdout,
            stderr,
            events,
        }
    }

    fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After the exit: lets the stderr reader take the last lines (bounded, in case something
    /// else still holds the pipe).
    fn drain(&self) {
        let _ = self.drained.recv_timeout(DRAIN_TIMEOUT);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
