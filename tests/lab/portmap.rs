//! Port mapping (issue 12): a listener behind the miniupnpd router up1 maps its port (PCP
//! first, NAT-PMP where PCP is blocked, UPnP IGD where both are), puts the mapping in its
//! address as a `mapped` candidate, and is reached there by an `--offline` connector (direct,
//! no signalling); it opens a PCP pinhole for the port on the router's IPv6 firewall, through
//! which the same connector gets in over IPv6 alone; mapping and pinhole are gone from the
//! router after a normal exit and after SIGINT; `--no-portmap` maps nothing, and then the same
//! connector cannot get in.

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

/// The router's IPv6 pinholes to `host`'s `port` (miniupnpd's nftables rules matching the
/// host's address as the destination).
fn pinholes_of(lab: &Lab, host: &str, port: u16) -> Vec<String> {
    let ip: std::net::Ipv6Addr = lab.host(host).ipv6.parse().expect("the host's IPv6");
    rules_to(lab, host, port, &format!("0x{:032x}", u128::from(ip)))
}

/// The router's IPv4 forwards to `host`'s `port`, as miniupnpd's nftables rules (what
/// `upnpc -l` lists, read where UPnP itself is blocked).
fn forwards_of(lab: &Lab, host: &str, port: u16) -> Vec<String> {
    let ip: std::net::Ipv4Addr = lab.host(host).ipv4.parse().expect("the host's IPv4");
    rules_to(lab, host, port, &format!("0x{:08x}", u32::from(ip)))
}

/// miniupnpd's rules letting `port` through to `host`, its address written `hex`.
fn rules_to(lab: &Lab, host: &str, port: u16, hex: &str) -> Vec<String> {
    let h = lab.host(host);
    let out = lab.exec(
        &h.router,
        &["nft", "list", "chain", "inet", "lab", "miniupnpd"],
    );
    let dport = format!("th dport {port} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&dport) && l.contains(hex))
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

/// An `--offline` connector in `from` dials the address `listening` announced; both lines
/// must cross and both ends exit 0. Returns the connector's `connected` event.
fn hello_offline(lab: &Lab, from: &str, l: Running, listening: &Value) -> Value {
    let c = lab
        .spawn(
            from,
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
    c.event("connected").expect("connected").clone()
}

/// The port the keeper logged (at -v) as "port N mapped on the gateway".
fn port_mapped(stderr: &[String]) -> Option<u16> {
    stderr.iter().find_map(|line| {
        let v: Value = serde_json::from_str(line).ok()?;
        let message = v["fields"]["message"].as_str()?;
        let port = message
            .strip_prefix("port ")?
            .strip_suffix(" mapped on the gateway")?;
        port.parse().ok()
    })
}

/// Waits up to `within` for the router to hold nothing for `port` (`upnpc -l` and its rules).
fn gone(lab: &Lab, port: u16, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let mut left = mappings(lab, port);
        left.extend(forwards_of(lab, HOST, port));
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
    // miniupnpd's own rules (upnpc -l lists by index, and other tests' listeners on this
    // host add and delete mappings meanwhile, so a listing can skip an entry).
    let on_router = forwards_of(lab, HOST, port);
    assert_eq!(on_router.len(), 2, "UDP and TCP: {on_router:?}");
    let setup = setup_logged(&l.stderr());
    let started = Instant::now();
    let ev = hello_offline(lab, "pub1h", l, &listening);
    let connect_took = started.elapsed();
    assert_eq!(ev["method"], "direct", "{ev}");
    // The mapping and the IPv6 pinhole are both open: either may carry the link.
    let pinholed = format!("[{}]:{port}", h.ipv6);
    assert!(
        ev["remote"] == mapped[0].as_str() || ev["remote"] == pinholed.as_str(),
        "{ev}"
    );
    let left = gone(lab, port, Duration::from_secs(2));
    assert!(left.is_empty(), "still mapped after exit: {left:?}");
    let left = pinholes_of(lab, HOST, port);
    assert!(left.is_empty(), "pinholes left after exit: {left:?}");
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
    let on_router = forwards_of(lab, HOST, port);
    assert_eq!(on_router.len(), 2, "UDP and TCP: {on_router:?}");
    let open = pinholes_of(lab, HOST, port);
    assert_eq!(open.len(), 2, "{open:?}");
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &l.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = l.wait(Duration::from_secs(5));
    let exit_ms = signalled.elapsed().as_millis();
    assert_eq!(code, 0, "{}", l.stderr());
    let left = gone(lab, port, Duration::ZERO);
    assert!(left.is_empty(), "still mapped after SIGINT: {left:?}");
    let left = pinholes_of(lab, HOST, port);
    assert!(left.is_empty(), "pinholes left after SIGINT: {left:?}");
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

/// Drops NAT-PMP and PCP (port 5351), or PCP alone (version 2 in the payload's first byte)
/// and UPnP (SSDP and HTTP), on a router while held (a table of its own, deleted on drop).
struct NoNatPmp<'a> {
    lab: &'a Lab,
    router: &'a str,
}

impl<'a> NoNatPmp<'a> {
    fn on(lab: &'a Lab, router: &'a str) -> Self {
        Self::with(lab, router, &["udp dport 5351 drop"])
    }

    fn all_but_natpmp(lab: &'a Lab, router: &'a str) -> Self {
        let rules = [
            "udp dport 5351 @th,64,8 2 drop",
            "udp dport 1900 drop",
            "tcp dport 5000 drop",
        ];
        Self::with(lab, router, &rules)
    }

    fn with(lab: &'a Lab, router: &'a str, rules: &[&str]) -> Self {
        let mut cmds = vec![
            "add table inet nonatpmp".to_string(),
            "add chain inet nonatpmp input { type filter hook input priority -10; }".to_string(),
        ];
        cmds.extend(
            rules
                .iter()
                .map(|r| format!("add rule inet nonatpmp input {r}")),
        );
        for cmd in &cmds {
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
    let ev = hello_offline(lab, "fc1h", l, &listening);
    assert_eq!(ev["remote"], mapped[0].as_str(), "{ev}");
    let left = mappings_of(lab, host, port);
    assert!(left.is_empty(), "still mapped after exit: {left:?}");
    eprintln!(
        "portmap by UPnP: listening after {} ms, mapping {setup:?}, connector's setup {} ms",
        took.as_millis(),
        ev["setup_ms"]
    );
}

/// With PCP (and so the IPv6 pinhole) and UPnP blocked, NAT-PMP maps the port once PCP's
/// two tries went unanswered: the mapping is logged as NAT-PMP's, listed by the router, and
/// gone after exit. (A PCP-silent gateway costs 750 ms, so the mapping comes after
/// `listening`; a NAT-PMP-only one answers PCP at once with "unsupported version", which the
/// keeper's unit tests cover.)
#[test]
fn portmap_by_natpmp_when_pcp_and_upnp_are_blocked() {
    let Some(lab) = lab() else { return };
    // The router's PCP and UPnP are switched off for this test: nobody else may use them.
    let _g = crate::harness::exclusive();
    let host = "up2h";
    let _blocked = NoNatPmp::all_but_natpmp(lab, &lab.host(host).router);
    let (l, listening, took) = listen_in(lab, host, &["-v"], &["-k"], b"");
    let port = port_of(&listening);
    let deadline = Instant::now() + Duration::from_secs(5);
    let setup = loop {
        let setup = setup_logged(&l.stderr());
        if setup.is_some() || Instant::now() > deadline {
            break setup;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        setup.as_ref().map(|s| s.0.as_str()),
        Some("NAT-PMP"),
        "{setup:?}"
    );
    let forwards = forwards_of(lab, host, port);
    assert_eq!(forwards.len(), 2, "UDP and TCP: {forwards:?}");
    assert!(pinholes_of(lab, host, port).is_empty());
    let mut l = l;
    let status = Command::new("kill")
        .args(["-INT", &l.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = l.wait(Duration::from_secs(5));
    assert_eq!(code, 0, "exit {code}: {}", l.stderr());
    let left = forwards_of(lab, host, port);
    assert!(left.is_empty(), "still mapped after exit: {left:?}");
    eprintln!(
        "portmap by NAT-PMP: listening after {} ms, mapping {setup:?}",
        took.as_millis()
    );
}

/// The listener's port reached over IPv6 alone (the IPv4 path between the sites blocked)
/// through the pinhole it opened with PCP on the router's IPv6 firewall; the pinhole is gone
/// after exit. Without it the firewall drops the connector (the `--no-portmap` test).
#[test]
fn portmap_ipv6_pinhole_lets_an_offline_connector_in() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let h = lab.host(HOST);
    let _v4 = crate::relay::Block::new(lab, "pub1", &[&h.public4]);
    let (l, listening, took) = listen(lab, &["-v"], &[], b"hello from the listener\n");
    let port = port_of(&listening);
    let open = pinholes_of(lab, HOST, port);
    assert_eq!(open.len(), 2, "UDP and TCP: {open:?}\n{}", l.stderr());
    let ev = hello_offline(lab, "pub1h", l, &listening);
    assert_eq!(ev["method"], "direct", "{ev}");
    assert_eq!(
        ev["remote"],
        format!("[{}]:{port}", h.ipv6).as_str(),
        "{ev}"
    );
    let left = pinholes_of(lab, HOST, port);
    assert!(left.is_empty(), "pinholes left after exit: {left:?}");
    eprintln!(
        "portmap: IPv6 pinhole: listening after {} ms, connector's setup {} ms over {} {}",
        took.as_millis(),
        ev["setup_ms"],
        ev["transport"],
        ev["remote"]
    );
}

/// The connector's punching kit asks its gateway for a mapping too (IPv4-only lab): a
/// connector on up1h dialling a listener behind the symmetric NAT sym1 gets a direct link
/// through its kit's mapping (by `reverse` or a punch) instead of `random_probe`'s spray, and
/// the mapping is gone from the router once the connector exits. With `--no-portmap` no
/// mapping is made.
#[test]
fn portmap_the_connectors_kit_is_mapped_and_deleted_after() {
    let Some(lab) = lab() else { return };
    let _g = crate::harness::exclusive();
    let _v4 = lab.ipv4_only();
    let infra = infra();
    let global: Vec<&str> = infra.iter().map(String::as_str).collect();
    let run = |extra: &[&str]| {
        let mut l = lab.spawn("sym1h", &global, &["listen", "--port", "0"], b"hi\n");
        let addr = l.wait_event("listening")["addr"]
            .as_str()
            .expect("addr")
            .to_string();
        let mut flags = global.clone();
        flags.extend_from_slice(extra);
        let c = lab
            .spawn(
                HOST,
                &flags,
                &["connect", &addr, "--timeout", "10"],
                b"ho\n",
            )
            .finish(Duration::from_secs(20));
        let l = l.finish(Duration::from_secs(10));
        assert_eq!(c.code, Some(0), "{:?}", c.stderr);
        assert!(c.stdout.contains("hi") && l.stdout.contains("ho"));
        let ev = c.event("connected").expect("connected").clone();
        (ev, port_mapped(&c.stderr))
    };
    let (ev, kit_port) = run(&["-v"]);
    let kit_port = kit_port.expect("the connector's kit was mapped");
    assert_eq!(ev["path"], "direct", "{ev}");
    assert_ne!(ev["method"], "random_probe", "{ev}");
    let left = forwards_of(lab, HOST, kit_port);
    assert!(
        left.is_empty(),
        "the kit's mapping outlived the connector: {left:?}"
    );
    let (without, none) = run(&["-v", "--no-portmap"]);
    assert_eq!(none, None, "--no-portmap mapped the kit");
    eprintln!(
        "portmap: kit mapped: {} in {} ms; --no-portmap: {} in {} ms",
        ev["method"], ev["setup_ms"], without["method"], without["setup_ms"]
    );
}
