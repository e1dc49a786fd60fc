//! Resuming `--recv FILE` (issue 14): a transfer SIGKILLed part way and started again moves
//! only the rest and ends byte-identical, whichever end sends, over TCP and QUIC; a receiver
//! stopped cleanly resumes without reading its `.part` back; a `.part` altered on disk is
//! caught and both ends start over, saying so; a damaged, cut or overclaiming hash record is
//! never trusted (the `.part` is hashed again); a stdin sender cannot resume and the receiver
//! starts over; and no resume byte ever reaches a stdio or forwarded stream.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::Finished;
use crate::support::{echo_server, file_out, Node, Running};

const MIB: u64 = 1 << 20;

/// Writes `len` bytes of position-dependent data: a seeded random 16 MiB block, repeated with
/// every 64 KiB stamped with its index (so a resume at a wrong offset cannot go unnoticed), fast
/// enough for gigabytes in a debug build.
fn big_file(path: &Path, len: u64, seed: u64) {
    let block_len = 16 * MIB as usize;
    let mut block = vec![0u8; block_len];
    let mut state = seed | 1;
    for chunk in block.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut written = 0u64;
    let mut page = 0u64;
    while written < len {
        for piece in block.chunks_mut(64 << 10) {
            piece[..8].copy_from_slice(&page.to_le_bytes());
            page += 1;
        }
        let n = (len - written).min(block_len as u64) as usize;
        out.write_all(&block[..n]).unwrap();
        written += n as u64;
    }
    out.flush().unwrap();
}

/// Whether two files hold the same bytes (compared a MiB at a time).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    loop {
        let n = read_full(&mut a, &mut x);
        let m = read_full(&mut b, &mut y);
        if n != m || x[..n] != y[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).unwrap() {
            0 => break,
            n => filled += n,
        }
    }
    filled
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn part(target: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part", target.display()))
}

fn sidecar(target: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part.hash", target.display()))
}

/// Which end runs `--send` (the other runs `--recv`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sends {
    Listener,
    Connector,
}

/// Which end is SIGKILLed in the first run.
#[derive(Clone, Copy, Debug)]
enum Kill {
    Sender,
    Receiver,
}

/// Two nodes, a source file on the sender and a target path on the receiver.
struct Setup {
    listener: Node,
    connector: Node,
    source: PathBuf,
    target: PathBuf,
    sends: Sends,
    via: &'static str,
}

impl Setup {
    fn new(sends: Sends, via: &'static str) -> Self {
        let (listener, connector) = (Node::new(), Node::new());
        let (sender, receiver) = match sends {
            Sends::Listener => (&listener, &connector),
            Sends::Connector => (&connector, &listener),
        };
        let source = sender.dir.path().join("source.bin");
        let target = receiver.dir.path().join("received.bin");
        Self {
            listener,
            connector,
            source,
            target,
            sends,
            via,
        }
    }

    /// One run: `(sender, receiver)`, both started, the link up.
    fn start(&self) -> (Running, Running) {
        let (source, target) = (self.source.to_str().unwrap(), self.target.to_str().unwrap());
        let (listen_end, connect_end) = match self.sends {
            Sends::Listener => (["--send", source], ["--recv", target]),
            Sends::Connector => (["--recv", target], ["--send", source]),
        };
        let listener = self
            .listener
            .listen(&listen_end, Stdio::null(), Stdio::null());
        let via = format!("direct,{}", self.via);
        let mut args = vec!["connect", "--via", &via];
        args.extend_from_slice(&connect_end);
        args.push(&listener.addr);
        let mut connector = Running::spawn(
            self.connector
                .command(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        );
        let event = connector.wait_event("connected");
        assert_eq!(event["transport"], self.via, "{event}");
        match self.sends {
            Sends::Listener => (listener, connector),
            Sends::Connector => (connector, listener),
        }
    }

    /// The first run, SIGKILLed (`kill`'s end) once the receiver's `.part` holds `at` bytes;
    /// the other end is killed too if it has not noticed within a second (a QUIC peer would
    /// wait out its idle timeout). Returns the `.part`'s size at the kill.
    fn interrupted_at(&self, at: u64, kill: Kill) -> u64 {
        let (mut sender, mut receiver) = self.start();
        let part = part(&self.target);
        let deadline = Instant::now() + Duration::from_secs(120);
        while size(&part) < at {
            assert!(
                Instant::now() < deadline,
                "stuck at {} bytes: {}",
                size(&part),
                receiver.stderr()
            );
            assert!(
                receiver.child.try_wait().unwrap().is_none(),
                "receiver ended early: {}",
                receiver.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let (victim, survivor) = match kill {
            Kill::Sender => (&mut sender, &mut receiver),
            Kill::Receiver => (&mut receiver, &mut sender),
        };
        victim.child.kill().unwrap();
        victim.child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        while survivor.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = survivor.child.kill();
        let _ = survivor.child.wait();
        assert!(
            !self.target.exists(),
            "an incomplete file was moved into place"
        );
        size(&part)
    }

    /// A run to the end: both exit 0; returns their `resume` events (if any) and `done` events.
    fn completed(&self) -> Outcome {
        let (sender, receiver) = self.start();
        let [sender, receiver] = [("sender", sender), ("receiver", receiver)].map(|(who, end)| {
            let finished = end.finish(Duration::from_secs(180));
            assert_eq!(finished.code, Some(0), "{who}: {:#?}", finished.stderr);
            finished
        });
        let event = |end: &Finished, name: &str| end.event(name).cloned();
        let outcome = Outcome {
            sender_resume: event(&sender, "resume"),
            receiver_resume: event(&receiver, "resume"),
            sender_done: event(&sender, "done").expect("sender done"),
            receiver_done: event(&receiver, "done").expect("receiver done"),
        };
        assert!(
            same_bytes(&self.source, &self.target),
            "the received file differs from the source"
        );
        assert!(!part(&self.target).exists() && !sidecar(&self.target).exists());
        outcome
    }
}

struct Outcome {
    sender_resume: Option<Value>,
    receiver_resume: Option<Value>,
    sender_done: Value,
    receiver_done: Value,
}

impl Outcome {
    /// Both ends resumed at the same offset, and only the rest moved: the offset.
    fn resumed(&self, len: u64) -> u64 {
        let (s, r) = (
            self.sender_resume.as_ref().expect("sender resume event"),
            self.receiver_resume
                .as_ref()
                .expect("receiver resume event"),
        );
        assert_eq!(s["outcome"], "resumed", "{s}");
        assert_eq!(r["outcome"], "resumed", "{r}");
        let at = r["offset"].as_u64().unwrap();
        assert_eq!(s["offset"], at, "{s} {r}");
        assert_eq!(self.receiver_done["resumed"]["received"], at);
        assert_eq!(
            self.receiver_done["received"],
            len - at,
            "{}",
            self.receiver_done
        );
        assert_eq!(self.sender_done["resumed"]["sent"], at);
        assert_eq!(self.sender_done["sent"], len - at, "{}", self.sender_done);
        at
    }

    /// Everything moved again.
    fn moved_all_again(&self, len: u64) {
        assert_eq!(
            self.receiver_done["received"], len,
            "{}",
            self.receiver_done
        );
        assert_eq!(self.receiver_done["resumed"]["received"], 0);
        assert_eq!(self.sender_done["sent"], len, "{}", self.sender_done);
        assert_eq!(self.sender_done["resumed"]["sent"], 0);
    }
}

/// Killed at ~60% of `len`, started again: the rest moves, and only the rest.
fn killed_and_resumed(len: u64, sends: Sends, via: &'static str, kill: Kill) {
    let setup = Setup::new(sends, via);
    // The source and the received copy, with room to spare: say so plainly rather than fail
    // with a write error half way.
    let disk = rustix::fs::statvfs(setup.listener.dir.path()).expect("statvfs");
    let free = disk.f_bavail * disk.f_frsize;
    assert!(
        free > 2 * len + 256 * MIB,
        "this test needs {} MiB free in the temporary directory, there are {} MiB",
        (2 * len + 256 * MIB) / MIB,
        free / MIB
    );
    big_file(&setup.source, len, len ^ 0x5eed);
    let kept = setup.interrupted_at(len * 6 / 10, kill);
    let outcome = setup.completed();
    let at = outcome.resumed(len);
    assert!(
        at == kept && at >= len * 6 / 10,
        "resumed at {at} with {kept} bytes kept"
    );
}

/// Issue 14: the 2 GiB case. The receiver (listener) is SIGKILLed, so its hash record is
/// whatever the crash left.
#[test]
fn two_gib_killed_at_sixty_percent_resumes_over_tcp() {
    killed_and_resumed(2048 * MIB, Sends::Connector, "tcp", Kill::Receiver);
}

#[test]
fn listener_sending_resumes_after_its_sender_was_killed_over_quic() {
    killed_and_resumed(192 * MIB, Sends::Listener, "quic", Kill::Sender);
}

#[test]
fn connector_sending_resumes_after_its_receiver_was_killed_over_quic() {
    killed_and_resumed(192 * MIB, Sends::Connector, "quic", Kill::Receiver);
}

#[test]
fn listener_sending_resumes_after_its_receiver_was_killed_over_tcp() {
    killed_and_resumed(192 * MIB, Sends::Listener, "tcp", Kill::Receiver);
}

/// A first run fed `head` bytes of `source` through the connector's stdin, the receiving
/// listener SIGKILLed once they are all in its `.part`: a `.part` and record of known content.
fn fed_and_killed(setup: &Setup, head: u64) {
    fed_and_stopped(setup, head, "KILL");
}

/// [`fed_and_killed`] with the receiver stopped by `signal` (`KILL`, `INT`).
fn fed_and_stopped(setup: &Setup, head: u64, signal: &str) {
    assert_eq!(setup.sends, Sends::Connector);
    let target = setup.target.to_str().unwrap();
    let mut receiver = setup
        .listener
        .listen(&["--recv", target], Stdio::null(), Stdio::null());
    let mut sender = Running::spawn(
        setup
            .connector
            .command(&["connect", "--via", "direct,tcp", &receiver.addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let mut input = sender.child.stdin.take().unwrap();
    let data = std::fs::read(&setup.source).unwrap();
    input.write_all(&data[..head as usize]).unwrap();
    input.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while size(&part(&setup.target)) < head {
        assert!(Instant::now() < deadline, "{}", receiver.stderr());
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), receiver.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    receiver.child.wait().unwrap();
    sender.child.kill().unwrap();
    sender.child.wait().unwrap();
}

/// The receiver's `resume` event says it started over, for `reason`.
fn restarted(event: &Option<Value>, reason: &str) {
    let event = event.as_ref().expect("a resume event");
    assert_eq!(event["outcome"], "restarted", "{event}");
    assert_eq!(event["offset"], 0, "{event}");
    assert_eq!(event["reason"], reason, "{event}");
}

const SMALL: u64 = 6 * MIB;
const FED: u64 = 3 * MIB + 123;

/// Issue 14: a `.part` altered on disk (one byte flipped) is caught: its change time no longer
/// matches its hash record, so it is hashed again from its real bytes, the sender's hash
/// differs, and both ends say so and start over.
#[test]
fn a_part_altered_on_disk_is_detected_and_starts_over() {
    let setup = Setup::new(Sends::Connector, "tcp");
    big_file(&setup.source, SMALL, 7);
    fed_and_killed(&setup, FED);
    let path = part(&setup.target);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let outcome = setup.completed();
    restarted(&outcome.receiver_resume, "mismatch");
    restarted(&outcome.sender_resume, "mismatch");
    assert_eq!(outcome.receiver_resume.as_ref().unwrap()["rehashed"], true);
    outcome.moved_all_again(SMALL);
}

/// A receiver stopped cleanly (SIGINT) leaves an exact hash record: the next run resumes from
/// it without reading its `.part` back.
#[test]
fn a_cleanly_stopped_receiver_resumes_without_reading_its_part_back() {
    let setup = Setup::new(Sends::Connector, "tcp");
    big_file(&setup.source, SMALL, 12);
    fed_and_stopped(&setup, FED, "INT");
    let kept = size(&part(&setup.target));
    let outcome = setup.completed();
    assert_eq!(outcome.resumed(SMALL), kept);
    assert_eq!(outcome.receiver_resume.as_ref().unwrap()["rehashed"], false);
}

/// A hash record cut short, grown, or claiming more than the `.part` holds is never trusted:
/// the `.part` is hashed again from its real bytes, and what it really holds is resumed.
#[test]
fn a_damaged_or_overclaiming_hash_record_is_never_trusted() {
    type Damage = fn(&Path, &Path);
    let cases: [(&str, Damage); 3] = [
        ("cut", |_, hash| {
            let record = std::fs::read(hash).unwrap();
            std::fs::write(hash, &record[..record.len() / 2]).unwrap();
        }),
        ("grown", |_, hash| {
            let mut file = std::fs::OpenOptions::new().append(true).open(hash).unwrap();
            file.write_all(&[0; 100]).unwrap();
        }),
        ("overclaiming", |part, _| {
            let file = std::fs::OpenOptions::new().write(true).open(part).unwrap();
            file.set_len(1000).unwrap();
        }),
    ];
    for (case, damage) in cases {
        let setup = Setup::new(Sends::Connector, "tcp");
        big_file(&setup.source, SMALL, 8);
        fed_and_killed(&setup, FED);
        damage(&part(&setup.target), &sidecar(&setup.target));
        let kept = size(&part(&setup.target));
        let outcome = setup.completed();
        assert_eq!(outcome.resumed(SMALL), kept, "{case}");
        let event = outcome.receiver_resume.as_ref().unwrap();
        assert_eq!(event["rehashed"], true, "{case}: {event}");
    }
}

/// Issue 14: stdin cannot be resumed. The receiver says so, starts over, and ends up with
/// exactly what stdin carried.
#[test]
fn a_stdin_sender_cannot_resume_and_the_receiver_starts_over() {
    let setup = Setup::new(Sends::Connector, "tcp");
    big_file(&setup.source, SMALL, 9);
    fed_and_killed(&setup, FED);
    let kept = size(&part(&setup.target));
    assert!(kept >= FED);

    let target = setup.target.to_str().unwrap();
    let mut receiver = setup
        .listener
        .listen(&["--recv", target], Stdio::null(), Stdio::null());
    let source = std::fs::File::open(&setup.source).unwrap();
    let mut sender = Running::spawn(
        setup
            .connector
            .command(&["connect", &receiver.addr])
            .stdin(Stdio::from(source))
            .stdout(Stdio::null()),
    );
    assert_eq!(
        sender.wait(Duration::from_secs(60)),
        0,
        "{}",
        sender.stderr()
    );
    assert_eq!(
        receiver.wait(Duration::from_secs(30)),
        0,
        "{}",
        receiver.stderr()
    );
    let event = receiver.wait_event("resume");
    restarted(&Some(event.clone()), "stream");
    assert_eq!(event["had"], kept, "{event}");
    assert_eq!(receiver.wait_event("done")["received"], SMALL);
    assert!(same_bytes(&setup.source, &setup.target));
    assert!(!part(&setup.target).exists() && !sidecar(&setup.target).exists());
}

/// One run of `setup` with both ends speaking to a person (no `--json`): their stderr lines.
fn human_run(setup: &Setup) -> (Vec<String>, Vec<String>) {
    let human = |node: &Node, args: &[&str]| {
        let mut cmd = std::process::Command::new(crate::support::BIN);
        cmd.arg("--home")
            .arg(node.home())
            .arg("--offline")
            .args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    };
    let target = setup.target.to_str().unwrap();
    let source = setup.source.to_str().unwrap();
    let mut listen = human(
        &setup.listener,
        &["listen", "--port", "0", "--recv", target],
    );
    let receiver = Running::spawn(&mut listen);
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let said = receiver.stderr();
        if let Some(line) = said.lines().find(|l| l.starts_with("  warpgate connect ")) {
            break line["  warpgate connect ".len()..].to_string();
        }
        assert!(Instant::now() < deadline, "no address: {said}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let sender = Running::spawn(&mut human(
        &setup.connector,
        &["connect", "--send", source, &addr],
    ));
    let [sender, receiver] = [sender, receiver].map(|end| {
        let finished = end.finish(Duration::from_secs(60));
        assert_eq!(finished.code, Some(0), "{:#?}", finished.stderr);
        finished.stderr
    });
    assert!(same_bytes(&setup.source, &setup.target));
    (sender, receiver)
}

/// The lines of `said` about resuming (one event each), or complaining.
fn resume_lines(said: &[String]) -> Vec<&str> {
    let lines: Vec<&str> = said
        .iter()
        .map(String::as_str)
        .filter(|l| l.contains("resum") || l.contains("starting over"))
        .collect();
    assert!(!said.iter().any(|l| l.contains("error")), "{said:#?}");
    lines
}

/// The human lines: one per side saying what happened, and the `done` line with the count.
#[test]
fn resuming_or_starting_over_says_so_in_one_line_each_side() {
    let setup = Setup::new(Sends::Connector, "tcp");
    big_file(&setup.source, SMALL, 10);
    fed_and_stopped(&setup, FED, "INT");
    let kept = size(&part(&setup.target));
    let (sender, receiver) = human_run(&setup);
    assert!(
        !receiver.iter().any(|l| l.contains("WARN")),
        "an exact record is taken as it is: {receiver:#?}"
    );
    let part_name = part(&setup.target).display().to_string();
    let source_name = setup.source.display().to_string();
    assert_eq!(
        resume_lines(&sender),
        [
            format!("warpgate: resuming {source_name} after {kept} bytes (the peer has them)"),
            format!(
                "warpgate: transfer complete: resumed after {kept} bytes; {} sent and 0 received now",
                SMALL - kept
            ),
        ]
    );
    assert_eq!(
        resume_lines(&receiver),
        [
            format!(
                "warpgate: resuming {part_name} after {kept} bytes (they match the sender's file)"
            ),
            format!(
                "warpgate: transfer complete: resumed after {kept} bytes; 0 sent and {} received now",
                SMALL - kept
            ),
        ]
    );

    // A byte flipped: both say they start over, and nothing claims a resume.
    fed_and_stopped(&setup, FED, "INT");
    let path = part(&setup.target);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    std::fs::remove_file(&setup.target).unwrap();
    let (sender, receiver) = human_run(&setup);
    assert_eq!(
        resume_lines(&sender),
        [format!(
            "warpgate: the peer's {FED} bytes do not match {source_name}: starting over"
        )]
    );
    assert!(
        receiver.iter().any(|l| l.contains(&format!(
            "{part_name} changed since its hash record was written: hashing its {FED} bytes again"
        ))),
        "the receiver says why it reads its .part back: {receiver:#?}"
    );
    let receiver = resume_lines(&receiver);
    assert_eq!(receiver.len(), 1, "{receiver:?}");
    assert_eq!(
        receiver[0],
        format!("warpgate: {part_name} does not match the sender's file ({FED} bytes compared): starting over")
    );
}

/// The resume exchange never reaches a stream spliced to stdio or a TCP port: `connect --send`
/// into a stdout listener delivers exactly the file, and a stdio connector through `listen
/// --forward` (ssh's ProxyCommand) sees exactly what the service says.
#[test]
fn stdio_and_forwarded_streams_carry_no_resume_bytes() {
    let (a, b) = (Node::new(), Node::new());
    let source = b.dir.path().join("source.bin");
    big_file(&source, 3 * MIB + 5, 11);
    let got = a.dir.path().join("stdout.bin");
    for via in ["direct,tcp", "direct,quic"] {
        let mut listener = a.listen(&[], Stdio::null(), file_out(&got));
        let out = b.connect_file(via, "--send", &source, &listener.addr);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            listener.wait(Duration::from_secs(30)),
            0,
            "{}",
            listener.stderr()
        );
        assert!(
            same_bytes(&source, &got),
            "{via}: stdout differs from the file"
        );
    }

    let (port, _) = echo_server();
    let port = port.to_string();
    let mut listener = a.listen(&["--forward", &port], Stdio::null(), Stdio::null());
    let line = b"SSH-2.0-OpenSSH_9.6\r\n".repeat(100);
    let mut connector = Running::spawn_with_input(
        &mut b.command(&["connect", "--via", "direct,quic", &listener.addr]),
        &line,
    );
    connector.wait_event("connected");
    let finished = connector.finish(Duration::from_secs(30));
    assert_eq!(finished.code, Some(0), "{:?}", finished.stderr);
    assert_eq!(
        finished.stdout_bytes, line,
        "the forwarded stream is byte-clean"
    );
    let _ = listener.child.kill();
}
