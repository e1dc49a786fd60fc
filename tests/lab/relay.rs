//! The TURN relay through the lab (issue 11): a transfer killed midway resumes through the
//! relay (issue 14); 1 GiB each way through a relayed link between
//! two symmetric NATs; a relayed link that moves to the direct path when a blocking rule is
//! lifted mid-transfer and then outlives its TURN server; a TURN server killed while the link
//! still needs it; wrong credentials, an unreachable server, and only one side configured.
//!
//! Tests that kill a TURN server start their own coturn in the internet namespace (on
//! 198.51.100.2, a port of their own), so the lab's STUN/TURN server stays up for the rest.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    arg, exclusive, infra, lab, random_file, sha256, shared, strs, Lab, Pair, SRV_A, SRV_B,
    TURN_PASS, TURN_USER,
};

/// The lab's TURN server, as `--turn` takes it.
pub fn lab_turn() -> String {
    format!("turn://{TURN_USER}:{TURN_PASS}@{SRV_A}:3478")
}

/// The lab's infrastructure plus `turn` (a `turn://` URL) as global flags.
fn with_turn(turn: &str) -> Vec<String> {
    let mut flags = infra();
    flags.extend(["--turn".to_string(), turn.to_string()]);
    flags
}

/// A coturn of a test's own in the internet namespace, killed when dropped.
struct OwnTurn {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl OwnTurn {
    /// Starts coturn on `SRV_B:port`, relaying on ports `port*10 ..+100` (distinct per test).
    fn start(lab: &Lab, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let relay_ports = u32::from(port) * 10;
        let conf = format!(
            "listening-port={port}\nlistening-ip={SRV_B}\nrelay-ip={SRV_B}\n\
             min-port={relay_ports}\nmax-port={}\nlt-cred-mech\nuser={TURN_USER}:{TURN_PASS}\n\
             realm=lab.warpgate\nfingerprint\nno-tls\nno-dtls\nno-cli\nno-multicast-peers\n\
             denied-peer-ip=0.0.0.0-255.255.255.255\n\
             allowed-peer-ip=203.0.113.0-203.0.113.255\n\
             allowed-peer-ip=198.51.100.0-198.51.100.255\n\
             pidfile={}/turn.pid\nlog-file=stdout\nsimple-log\n",
            relay_ports + 99,
            dir.path().display()
        );
        let path = dir.path().join("turnserver.conf");
        std::fs::write(&path, conf).expect("write turnserver.conf");
        let child = lab
            .command("inet", "turnserver")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        let turn = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !turn.listening(lab) {
            assert!(Instant::now() < deadline, "coturn did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        turn
    }

    fn listening(&self, lab: &Lab) -> bool {
        let filter = format!("sport = :{}", self.port);
        let out = lab.exec("inet", &["ss", "-Hltn", &filter]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }

    fn url(&self) -> String {
        format!("turn://{TURN_USER}:{TURN_PASS}@{SRV_B}:{}", self.port)
    }

    /// SIGKILL: no deallocation, no goodbye.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnTurn {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An nftables table on `router` dropping everything between it and `peer_ips` (IPv4 or IPv6),
/// deleted when dropped (the lab's NAT tables are left alone). Each block has a table of its
/// own: tests running side by side may block the same router.
pub struct Block<'a> {
    lab: &'a Lab,
    router: String,
    table: String,
}

impl<'a> Block<'a> {
    pub fn new(lab: &'a Lab, router: &str, peer_ips: &[&str]) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let table = format!(
            "wgblock{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut rules = vec![
            format!("add table inet {table}"),
            format!("add chain inet {table} gate {{ type filter hook forward priority -10 ; }}"),
        ];
        for ip in peer_ips {
            let family = if ip.contains(':') { "ip6" } else { "ip" };
            rules.push(format!(
                "add rule inet {table} gate {family} daddr {ip} drop"
            ));
            rules.push(format!(
                "add rule inet {table} gate {family} saddr {ip} drop"
            ));
        }
        let block = Self {
            lab,
            router: router.to_string(),
            table,
        };
        for rule in rules {
            let out = lab.exec(router, &["nft", &rule]);
            assert!(out.status.success(), "nft {rule} on {router}: {out:?}");
        }
        block
    }

    /// No IPv6 between the two symmetric sites: over IPv4 alone, the relay is their only way
    /// (dual-stack, they punch each other directly over IPv6).
    pub fn ipv6_between_the_symmetric_sites(lab: &'a Lab) -> Self {
        Self::new(lab, "sym1", &[&lab.host("sym2h").ipv6])
    }

    fn lift(&self) {
        let _ = self.lab.exec(
            &self.router,
            &["nft", "delete", "table", "inet", &self.table],
        );
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        self.lift();
    }
}

#[test]
fn a_gibibyte_each_way_through_a_relay_between_symmetric_nats() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let _no_v6 = Block::ipv6_between_the_symmetric_sites(lab);
    let dir = tempfile::tempdir().expect("tempdir");
    let (up, down) = (dir.path().join("up"), dir.path().join("down"));
    random_file(&up, 1024);
    random_file(&down, 1024);
    let (up_got, down_got) = (dir.path().join("up.got"), dir.path().join("down.got"));
    let flags = with_turn(&lab_turn());
    let started = Instant::now();
    let p = Pair::run(
        lab,
        "sym2h",
        "sym1h",
        &strs(&flags),
        &["--send", arg(&down), "--recv", arg(&up_got)],
        &["--send", arg(&up), "--recv", arg(&down_got)],
        b"",
        b"",
        Duration::from_secs(300),
    )
    .expect("sym2h listens");
    let took = started.elapsed();
    assert_eq!(p.connector.code, Some(0), "{:?}", p.connector.stderr);
    assert_eq!(p.listener.code, Some(0), "{:?}", p.listener.stderr);
    for side in [&p.connector, &p.listener] {
        let connected = side.event("connected").expect("connected event");
        assert_eq!(connected["path"], "relayed", "{connected}");
        assert_eq!(connected["method"], "relay", "{connected}");
    }
    assert_eq!(sha256(&up), sha256(&up_got), "connector → listener");
    assert_eq!(sha256(&down), sha256(&down_got), "listener → connector");
    eprintln!("2 GiB through the relay (1 GiB each way at once) in {took:?}");
}

/// Two full-cone hosts whose direct path is blocked connect relayed; the block is lifted while
/// 1 GiB runs; the path becomes direct within 15 s, then the TURN server is killed and the
/// transfer still completes byte-identical.
#[test]
fn a_relayed_link_moves_to_direct_and_outlives_its_relay() {
    let Some(lab) = lab() else { return };
    let _g = exclusive();
    let mut turn = OwnTurn::start(lab, 3490);
    let block = Block::new(
        lab,
        "fc1",
        &[&lab.host("fc2h").public4, &lab.host("fc2h").ipv6],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, got) = (dir.path().join("file"), dir.path().join("got"));
    random_file(&file, 1024);
    let flags = with_turn(&turn.url());
    let mut l = lab.spawn(
        "fc2h",
        &strs(&flags),
        &["listen", "--port", "0", "--recv", arg(&got)],
        b"",
    );
    let listening = l.wait_event("listening");
    let addr = listening["addr"].as_str().expect("addr").to_string();
    let mut c = lab.spawn(
        "fc1h",
        &strs(&flags),
        &["connect", &addr, "--send", arg(&file)],
        b"",
    );
    let connected = c.wait_event("connected");
    assert_eq!(connected["path"], "relayed", "{connected}");
    std::thread::sleep(Duration::from_secs(1));
    block.lift();
    let lifted = Instant::now();
    let moved = c
        .wait_event_within("path", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no path event within 15 s:\n{}", c.stderr()));
    let upgrade = lifted.elapsed();
    assert_eq!(moved["path"], "direct", "{moved}");
    assert_eq!(moved["method"], "udp_punch", "{moved}");
    turn.kill();
    let c = c.finish(Duration::from_secs(120));
    let l = l.finish(Duration::from_secs(10));
    assert_eq!(c.code, Some(0), "{:?}", c.stderr);
    assert_eq!(l.code, Some(0), "{:?}", l.stderr);
    assert!(
        l.event("path").is_some(),
        "the listener moved too: {:?}",
        l.stderr
    );
    assert_eq!(sha256(&file), sha256(&got));
    eprintln!("direct {upgrade:?} after the block was lifted");
}

/// The TURN server dies while the link still runs through it: both ends stop within seconds
/// with a one-line reason and exit 1; the receiver keeps its `.part`.
#[test]
fn a_relay_killed_under_a_relayed_link_ends_both_sides() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let _no_v6 = Block::ipv6_between_the_symmetric_sites(lab);
    let mut turn = OwnTurn::start(lab, 3491);
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, got) = (dir.path().join("file"), dir.path().join("got"));
    random_file(&file, 1024);
    let flags = with_turn(&turn.url());
    let mut l = lab.spawn(
        "sym2h",
        &strs(&flags),
        &["listen", "--port", "0", "--recv", arg(&got)],
        b"",
    );
    let addr = l.wait_event("listening")["addr"]
        .as_str()
        .expect("addr")
        .to_string();
    let mut c = lab.spawn(
        "sym1h",
        &strs(&flags),
        &["connect", &addr, "--send", arg(&file)],
        b"",
    );
    assert_eq!(c.wait_event("connected")["path"], "relayed");
    std::thread::sleep(Duration::from_millis(500));
    turn.kill();
    let killed = Instant::now();
    let c = c.finish(Duration::from_secs(30));
    let c_took = killed.elapsed();
    let l = l.finish(Duration::from_secs(30));
    let l_took = killed.elapsed();
    assert_eq!(c.code, Some(1), "{:?}", c.stderr);
    assert_eq!(l.code, Some(1), "{:?}", l.stderr);
    assert!(c_took < Duration::from_secs(15) && l_took < Duration::from_secs(15));
    for side in [&c, &l] {
        let error = side.event("error").expect("an error event");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "{message:?}"
        );
    }
    let part = dir.path().join("got.part");
    assert!(part.exists(), "the .part is kept");
    eprintln!("connector ended {c_took:?}, listener {l_took:?} after the TURN server died");
}

/// Misconfigured relays: a pair that needs the relay fails with the TURN server's reason; a
/// pair that can go direct still does. Only one side configured is enough.
#[test]
fn wrong_credentials_an_unreachable_server_and_one_side_configured() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let _no_v6 = Block::ipv6_between_the_symmetric_sites(lab);
    let run = |listener: &str, connector: &str, l_turn: Option<&str>, c_turn: Option<&str>| {
        let flags = |turn: Option<&str>| match turn {
            Some(t) => with_turn(t),
            None => infra(),
        };
        let (lf, cf) = (flags(l_turn), flags(c_turn));
        let mut l = lab.spawn(listener, &strs(&lf), &["listen", "--port", "0"], b"hi\n");
        let addr = l.wait_event("listening")["addr"]
            .as_str()
            .expect("addr")
            .to_string();
        let c = lab.spawn(
            connector,
            &strs(&cf),
            &["connect", &addr, "--timeout", "8"],
            b"ho\n",
        );
        let c = c.finish(Duration::from_secs(30));
        let grace = if c.code == Some(0) { 10 } else { 0 };
        (c, l.finish(Duration::from_secs(grace)))
    };
    let wrong = format!("turn://{TURN_USER}:nope@{SRV_A}:3478");
    let (c, _) = run("sym2h", "sym1h", Some(&wrong), Some(&wrong));
    assert_eq!(c.code, Some(1));
    let error = c.event("error").expect("error")["message"].to_string();
    assert!(
        error.contains("rejected the credentials"),
        "{error}\n{}",
        c.stderr.join("\n")
    );

    let nowhere = format!("turn://{TURN_USER}:{TURN_PASS}@{SRV_B}:3999");
    let (c, _) = run("sym2h", "sym1h", Some(&nowhere), Some(&nowhere));
    assert_eq!(c.code, Some(1));
    let error = c.event("error").expect("error")["message"].to_string();
    assert!(error.contains("TURN server unreachable"), "{error}");

    let (c, l) = run("fc2h", "fc1h", Some(&wrong), Some(&wrong));
    assert_eq!(c.code, Some(0), "direct still works: {:?}", c.stderr);
    assert_eq!(c.event("connected").expect("connected")["path"], "direct");
    assert!(l.stdout.contains("ho"));

    let turn = lab_turn();
    for (l_turn, c_turn) in [(Some(turn.as_str()), None), (None, Some(turn.as_str()))] {
        let (c, l) = run("sym2h", "sym1h", l_turn, c_turn);
        assert_eq!(c.code, Some(0), "{:?}", c.stderr);
        assert_eq!(c.event("connected").expect("connected")["path"], "relayed");
        assert!(c.stdout.contains("hi") && l.stdout.contains("ho"));
    }
}

/// Resume through the relay (issue 14): 512 MiB from sym1h to a receiver on sym2h, relayed;
/// the receiver is killed with SIGKILL once its `.part` holds 128 MiB, started again with the
/// same `--recv`, and the sender sent again: both ends say they resumed at the same offset,
/// only the rest moves, and the file is byte-identical.
#[test]
fn a_transfer_killed_midway_resumes_through_the_relay() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let _no_v6 = Block::ipv6_between_the_symmetric_sites(lab);
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, got) = (dir.path().join("file"), dir.path().join("got"));
    random_file(&file, 512);
    let len = std::fs::metadata(&file).expect("file").len();
    let part = dir.path().join("got.part");
    let flags = with_turn(&lab_turn());
    let listen = ["listen", "--port", "0", "--recv", arg(&got)];
    let mut l = lab.spawn("sym2h", &strs(&flags), &listen, b"");
    let addr = l.wait_event("listening")["addr"]
        .as_str()
        .expect("addr")
        .to_string();
    let mut c = lab.spawn(
        "sym1h",
        &strs(&flags),
        &["connect", &addr, "--send", arg(&file)],
        b"",
    );
    assert_eq!(c.wait_event("connected")["path"], "relayed");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 128 << 20 {
        assert!(Instant::now() < deadline, "the .part never reached 128 MiB");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = l.child.kill();
    let _ = l.child.wait();
    assert_eq!(c.finish(Duration::from_secs(30)).code, Some(1));

    let mut l = lab.spawn("sym2h", &strs(&flags), &listen, b"");
    let addr = l.wait_event("listening")["addr"]
        .as_str()
        .expect("addr")
        .to_string();
    let c = lab
        .spawn(
            "sym1h",
            &strs(&flags),
            &["connect", &addr, "--send", arg(&file)],
            b"",
        )
        .finish(Duration::from_secs(300));
    let l = l.finish(Duration::from_secs(20));
    assert_eq!(c.code, Some(0), "{:?}", c.stderr);
    assert_eq!(l.code, Some(0), "{:?}", l.stderr);
    assert_eq!(c.event("connected").expect("connected")["path"], "relayed");
    let (sent, received) = (
        c.event("done").expect("done"),
        l.event("done").expect("done"),
    );
    let at = received["resumed"]["received"]
        .as_u64()
        .expect("resumed offset");
    assert!(at >= 128 << 20 && at < len, "resumed at {at}");
    assert_eq!(sent["resumed"]["sent"], at, "{sent}");
    assert_eq!(received["received"], len - at, "{received}");
    assert_eq!(sent["sent"], len - at, "{sent}");
    assert_eq!(
        sha256(&file),
        sha256(&got),
        "byte-identical after the resume"
    );
    eprintln!(
        "resumed through the relay at {at} of {len} bytes; {} moved the second time",
        len - at
    );
}
