//! Port mapping (issue 12): a listener behind the miniupnpd router up1 maps its port, puts the
//! mapping in its address as a `mapped` candidate, and is reached there by an `--offline`
//! connector (direct, no signalling); the mapping is gone from the router after a normal exit
//! and after SIGINT; `--no-portmap` maps nothing, and then the same connector cannot get in.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{infra, lab, shared, Lab};
use crate::process::Running;

const HOST: &str = "up1h";

/// The router's port mappings to `HOST`'s `port`, as `upnpc -l` lists them (UDP/TCP lines).
fn mappings(lab: &Lab, port: u16) -> Vec<String> {
    mappings_of(lab, HOST, port)
}

fn mappings_of(lab: &Lab, host: &str, port: u16) -> Vec<String> {
    let h = lab.host(host);
    let url = format!("http://{}:5000/rootDesc.xml", h.gateway4);
    let out = lab.exec(host, &["upnpc", "-u", &url, "-l"]);
    let needle = format!("->{}:{port} ", h.ipv4);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Starts a listener in `HOST` with the lab's servers and `extra` global flags; returns it, its
/// `listening` event, and how long that took from the spawn.
fn listen(lab: &Lab, extra: &[&str], args: &[&str], input: &[u8]) -> (Running, Value, Duration) {
    listen_in(lab, HOST, extra, args, input)
}

fn listen_in(
    lab: &Lab,
    host: &str,
    extra: &[&str],
    args: &[&str],
    input: &[u8],
) -> (Running, Value, Duration) {
    let infra = infra();
    let mut global: Vec<&str> = infra.iter().map(String::as_str).collect();
    global.extend_from_slice(extra);
    let mut all = vec!["listen", "--port", "0"];
    all.extend_from_slice(args);
    let started = Instant::now();
    let mut l = lab.spawn(host, &global, &all, input);
    let listening = l
        .wait_event_within("listening", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no listening event: {}", l.stderr()));
    (l, listening, started.elapsed())
}

fn mapped_candidates(listening: &Value) -> Vec<String> {
    let text = listening["addr"].as_str().unwrap_or_default();
    let addr = warpgate::addr::Address::parse(text).expect("the listener's address parses");
    addr.candidates
        .iter()
        .filter(|c| c.kind == warpgate::addr::CandidateKind::Mapped)
        .map(|c| c.addr.to_string())
        .collect()
}

fn port_of(listening: &Value) -> u16 {
    listening["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("listening port")
}

/// The `setup_ms` the keeper logged (at -v) when the port was mapped, with its method.
fn setup_logged(stderr: &str) -> Option<(String, u64)> {
    stderr.lines().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        let f = &v["fields"];
        let ms = f["setup_ms"].as_u64()?;
        Some((f["method"].as_str()?.to_string(), ms))
    })
}

/// Waits up to `within` for the router's list for `port` to be empty.
fn gone(lab: &Lab, port: u16, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = mappings(lab, port);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn portmap_listener_is_reached_offline_at_its_mapped_candidate_and_unmaps_on_exit() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let h = lab.host(HOST);
    let (l, listening, took) = listen(lab, &["-v"], &[], b"hello from the listener\n");
    let port = port_of(&listening);
    let mapped = mapped_candidates(&listening);
    assert_eq!(mapped.len(), 1, "{listening}\n{}", l.stderr());
    assert!(
        mapped[0].starts_with(&format!("{}:", h.public4)),
        "{mapped:?}"
    );
    let on_router = mappings(lab, port);
    assert!(
        on_router.iter().any(|m| m.contains("UDP")) && on_router.iter().any(|m| m.contains("TCP")),
        "router lists {on_router:?}"
    );
    let setup = setup_logged(&l.stderr());
    let started = Instant::now();
    let c = lab
        .spawn(
            "pub1h",
            &["--offline"],
            &[
                "connect",
                listening["addr"].as_str().unwrap_or_default(),
                "--timeout",
                "10",
            ],
            b"hello from the connector\n",
        )
        .finish(Duration::from_secs(20));
    let connect_took = started.elapsed();
    let l = l.finish(Duration::from_secs(10));
    assert_eq!(c.code, Some(0), "{:?}", c.stderr);
    assert_eq!(l.code, Some(0), "{:?}", l.stderr);
    assert!(
        c.stdout.contains("hello from the listener"),
        "{:?}",
        c.stdout
    );
    assert!(
        l.stdout.contains("hello from the connector"),
        "{:?}",
        l.stdout
    );
    let ev = c.event("connected").expect("connected");
    assert_eq!(ev["method"], "direct", "{ev}");
    assert_eq!(ev["remote"], mapped[0].as_str(), "{ev}");
    let left = gone(lab, port, Duration::from_secs(2));
    assert!(left.is_empty(), "still mapped after exit: {left:?}");
    eprintln!(
        "portmap: listening after {} ms, mapping {setup:?} (method, setup_ms), connector's \
         setup {} ms ({} ms wall) via {} {}",
        took.as_millis(),
        ev["setup_ms"],
        connect_took.as_millis(),
        ev["transport"],
        ev["remote"]
    );
}

#[test]
fn portmap_mapping_is_deleted_on_sigint() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let (mut l, listening, _) = listen(lab, &[], &["-k"], b"");
    let port = port_of(&listening);
    assert_eq!(mapped_candidates(&listening).len(), 1, "{listening}");
    assert_eq!(mappings(lab, port).len(), 2, "{:?}", mappings(lab, port));
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &l.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = l.wait(Duration::from_secs(5));
    let exit_ms = signalled.elapsed().as_millis();
    assert_eq!(code, 0, "{}", l.stderr());
    let left = mappings(lab, port);
    assert!(left.is_empty(), "still mapped after SIGINT: {left:?}");
    eprintln!("portmap: SIGINT to exit with the mapping deleted: {exit_ms} ms");
}

#[test]
fn portmap_none_with_no_portmap_and_then_the_offline_connector_is_filtered() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let (l, listening, took) = listen(lab, &["--no-portmap"], &[], b"hello\n");
    let port = port_of(&listening);
    assert!(mapped_candidates(&listening).is_empty(), "{listening}");
    assert!(mappings(lab, port).is_empty(), "{:?}", mappings(lab, port));
    // Without the mapping, up1 (port-restricted) filters what nobody inside asked for.
    let c = lab
        .spawn(
            "pub1h",
            &["--offline"],
            &[
                "connect",
                listening["addr"].as_str().unwrap_or_default(),
                "--timeout",
                "3",
            ],
            b"",
        )
        .finish(Duration::from_secs(15));
    drop(l);
    assert_eq!(c.code, Some(1), "{:?}", c.stderr);
    eprintln!(
        "portmap: --no-portmap listening after {} ms",
        took.as_millis()
    );
}

/// Drops NAT-PMP on a router while held (a table of its own, deleted on drop).
struct NoNatPmp<'a> {
    lab: &'a Lab,
    router: &'a str,
}

impl<'a> NoNatPmp<'a> {
    fn on(lab: &'a Lab, router: &'a str) -> Self {
        for cmd in [
            "add table inet nonatpmp",
            "add chain inet nonatpmp input { type filter hook input priority -10; }",
            "add rule inet nonatpmp input udp dport 5351 drop",
        ] {
            let out = lab.exec(router, &["nft", cmd]);
            assert!(out.status.success(), "nft {cmd}: {out:?}");
        }
        NoNatPmp { lab, router }
    }
}

impl Drop for NoNatPmp<'_> {
    fn drop(&mut self) {
        let _ = self
            .lab
            .exec(self.router, &["nft", "delete", "table", "inet", "nonatpmp"]);
    }
}

/// With NAT-PMP silent, UPnP IGD maps the port: the same offline reach, the same clean exit.
#[test]
fn portmap_by_upnp_when_natpmp_is_silent() {
    let Some(lab) = lab() else { return };
    // The router's NAT-PMP is switched off for this test: nobody else may use it meanwhile.
    let _g = crate::harness::exclusive();
    let host = "up2h";
    let h = lab.host(host);
    let _blocked = NoNatPmp::on(lab, &h.router);
    let (l, listening, took) = listen_in(lab, host, &["-v"], &[], b"hello from the listener\n");
    let port = port_of(&listening);
    let mapped = mapped_candidates(&listening);
    let setup = setup_logged(&l.stderr());
    assert_eq!(mapped.len(), 1, "{listening}\n{}", l.stderr());
    assert!(
        mapped[0].starts_with(&format!("{}:", h.public4)),
        "{mapped:?}"
    );
    assert_eq!(
        setup.as_ref().map(|s| s.0.as_str()),
        Some("UPnP"),
        "{setup:?}"
    );
    let on_router = mappings_of(lab, host, port);
    assert!(
        on_router.iter().all(|m| m.contains("'warpgate'")) && on_router.len() == 2,
        "router lists {on_router:?}"
    );
    let c = lab
        .spawn(
            "fc1h",
            &["--offline"],
            &[
                "connect",
                listening["addr"].as_str().unwrap_or_default(),
                "--timeout",
                "10",
            ],
            b"hello from the connector\n",
        )
        .finish(Duration::from_secs(20));
    let l = l.finish(Duration::from_secs(10));
    assert_eq!(c.code, Some(0), "{:?}", c.stderr);
    assert!(
        c.stdout.contains("hello from the listener"),
        "{:?}",
        c.stdout
    );
    assert!(
        l.stdout.contains("hello from the connector"),
        "{:?}",
        l.stdout
    );
    let ev = c.event("connected").expect("connected");
    assert_eq!(ev["remote"], mapped[0].as_str(), "{ev}");
    let left = mappings_of(lab, host, port);
    assert!(left.is_empty(), "still mapped after exit: {left:?}");
    eprintln!(
        "portmap by UPnP: listening after {} ms, mapping {setup:?}, connector's setup {} ms",
        took.as_millis(),
        ev["setup_ms"]
    );
}
