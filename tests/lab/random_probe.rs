//! `random_probe` through the lab (issue 12): the symmetric hosts (`masquerade random`: a random
//! port from 1024–65535 per destination, kernel ≥ 5.x) against every kind of host whose NAT keeps
//! its mapping — port-restricted, CGNAT, UPnP (port-restricted to us: warpgate asks no mapping of
//! miniupnpd yet) and address-restricted — 20 runs per pair type, roles and hosts alternating,
//! 256 KiB each way compared byte for byte.
//!
//! IPv4 only: `--via random_probe` leaves no strategy that could use the hosts' IPv6 addresses
//! (the probe is IPv4: IPv6 has no NAT to defeat), and the tests of the whole cascade make the
//! lab IPv4-only (dual-stack, `tcp_punch` goes direct over IPv6 first). The TURN server is *absent* (the lab's `infra()` names none) and
//! `--via` excludes the relay too: a relayed fallback must not hide a probe that failed, and
//! with TURN present the relay would run only 4 s after the punch anyway. The interplay with the
//! relay has tests of its own below: with TURN allowed and the default cascade, random_probe
//! still wins; with the direct path blocked, the relay still connects.
//!
//! The processes run with `-vv`, so each side's debug line with its sockets opened, probes and
//! answers sent is on stderr (JSON): the bounds (256 sockets, 2048 probes) are checked there.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{exclusive, infra, lab, random_bytes, sha, shared, strs, Lab, Pair};
use crate::process::Finished;
use crate::relay::{lab_turn, Block};

/// The symmetric hosts and, per pair type, the two hosts of that type.
const SYMMETRIC: [&str; 2] = ["sym1h", "sym2h"];
const EASY: &[(&str, [&str; 2])] = &[
    ("portrestricted", ["pr1h", "pr2h"]),
    ("cgnat", ["cg1h", "cg2h"]),
    ("upnp", ["up1h", "up2h"]),
    ("addrrestricted", ["ar1h", "ar2h"]),
];
const RUNS: usize = 20;
const PAYLOAD: usize = 256 << 10;

/// The debug lines `random_probe` logs with its counts (`-vv --json`).
fn count_lines(f: &Finished) -> Vec<Value> {
    f.stderr
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("random_probe:") && v["fields"]["probes"].is_u64())
        })
        .collect()
}

/// Every count a side logged is within the bounds; returns the largest (sockets, probes).
fn within_bounds(f: &Finished, who: &str) -> (u64, u64) {
    let mut most = (0, 0);
    for line in count_lines(f) {
        let (sockets, probes) = (
            line["fields"]["sockets"].as_u64().unwrap_or(u64::MAX),
            line["fields"]["probes"].as_u64().unwrap_or(u64::MAX),
        );
        assert!(sockets <= 256, "{who} opened {sockets} sockets: {line}");
        assert!(probes <= 2048, "{who} sent {probes} probes: {line}");
        most = (most.0.max(sockets), most.1.max(probes));
    }
    most
}

struct Run {
    pair: Pair,
    sent_to_listener: Vec<u8>,
    sent_to_connector: Vec<u8>,
}

impl Run {
    fn intact(&self) -> bool {
        let p = &self.pair;
        p.connector.code == Some(0)
            && p.listener.code == Some(0)
            && sha(&p.listener.stdout_bytes) == sha(&self.sent_to_listener)
            && sha(&p.connector.stdout_bytes) == sha(&self.sent_to_connector)
    }

    fn connected(&self) -> Value {
        self.pair
            .connector
            .event("connected")
            .cloned()
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        let p = &self.pair;
        format!(
            "connector exit {:?}: {:?}\nlistener exit {:?}: {:?}",
            p.connector.code,
            p.connector.stderr.iter().rev().take(8).collect::<Vec<_>>(),
            p.listener.code,
            p.listener.stderr.iter().rev().take(8).collect::<Vec<_>>()
        )
    }
}

fn run(lab: &Lab, listener: &str, connector: &str, global: &[&str], via: &[&str], n: u64) -> Run {
    let sent_to_listener = random_bytes(PAYLOAD, 2 * n + 1);
    let sent_to_connector = random_bytes(PAYLOAD, 2 * n + 2);
    let mut connect_args = vec!["--timeout", "15"];
    connect_args.extend_from_slice(via);
    let pair = Pair::run(
        lab,
        listener,
        connector,
        global,
        &[],
        &connect_args,
        &sent_to_connector,
        &sent_to_listener,
        Duration::from_secs(40),
    )
    .unwrap_or_else(|e| panic!("{listener} did not listen: {e}"));
    Run {
        pair,
        sent_to_listener,
        sent_to_connector,
    }
}

/// Runs `RUNS` pairs between the symmetric hosts and `easy`'s hosts, the symmetric side
/// listening every other run; returns the failures and the setup times (ms) of the successes.
fn pair_type(lab: &Lab, kind: &str, easy: [&str; 2], global: &[&str]) -> (Vec<String>, Vec<u64>) {
    let mut failures = Vec::new();
    let mut setup = Vec::new();
    let mut most = (0, 0);
    for n in 0..RUNS {
        let (hard, soft) = (SYMMETRIC[n % 2], easy[(n / 2) % 2]);
        let (listener, connector) = if n % 2 == 0 {
            (hard, soft)
        } else {
            (soft, hard)
        };
        let r = run(
            lab,
            listener,
            connector,
            global,
            &["--via", "random_probe"],
            n as u64,
        );
        for (f, who) in [(&r.pair.connector, connector), (&r.pair.listener, listener)] {
            let (s, p) = within_bounds(f, who);
            most = (most.0.max(s), most.1.max(p));
        }
        let ev = r.connected();
        if r.intact() && ev["method"] == "random_probe" && ev["path"] == "direct" {
            setup.push(ev["setup_ms"].as_u64().unwrap_or_default());
        } else {
            failures.push(format!(
                "{kind} run {n} {connector}->{listener}: {ev}\n{}",
                r.describe()
            ));
        }
    }
    setup.sort_unstable();
    eprintln!(
        "symmetric<->{kind}: {}/{RUNS} direct by random_probe; setup ms {setup:?} (median {}); \
         most sockets {} and probes {} on one side",
        setup.len(),
        setup.get(setup.len() / 2).copied().unwrap_or_default(),
        most.0,
        most.1
    );
    (failures, setup)
}

/// Symmetric ↔ port-restricted, CGNAT, UPnP and address-restricted: at least 19 of 20 direct
/// by random_probe per pair type, data intact, within the bounds.
#[test]
fn symmetric_meets_every_kept_mapping_directly_by_random_probe() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let mut global = infra();
    global.push("-vv".into());
    let mut report = Vec::new();
    for (kind, hosts) in EASY {
        let (failures, _) = pair_type(lab, kind, *hosts, &strs(&global));
        if failures.len() > RUNS / 20 {
            report.push(format!(
                "symmetric<->{kind}: {} of {RUNS} failed:\n{failures:#?}",
                failures.len()
            ));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// IPv4-only, with TURN allowed and nothing restricted, the relay waits for the probe: symmetric ↔
/// port-restricted still goes direct by random_probe at least 19 of 20 times, and every run
/// connects.
#[test]
fn with_the_relay_in_the_cascade_random_probe_still_wins() {
    let Some(lab) = lab() else { return };
    let _g = exclusive();
    let _v4 = lab.ipv4_only();
    let mut global = infra();
    global.extend(["--turn".to_string(), lab_turn(), "-vv".to_string()]);
    let mut direct = 0;
    let mut failures = Vec::new();
    for n in 0..RUNS {
        let (listener, connector) = if n % 2 == 0 {
            ("sym1h", "pr1h")
        } else {
            ("pr2h", "sym2h")
        };
        let r = run(lab, listener, connector, &strs(&global), &[], n as u64);
        let ev = r.connected();
        if !r.intact() {
            failures.push(format!("run {n} {connector}->{listener}: {}", r.describe()));
        } else if ev["method"] == "random_probe" && ev["path"] == "direct" {
            direct += 1;
        } else {
            eprintln!("run {n} {connector}->{listener} connected by {ev}");
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        direct >= RUNS - 1,
        "only {direct} of {RUNS} direct by random_probe"
    );
}

/// The probe cannot get through (everything between the two sites dropped): the relay still
/// connects, a few seconds later.
#[test]
fn when_the_probe_cannot_work_the_relay_connects() {
    let Some(lab) = lab() else { return };
    let _g = exclusive();
    let _v4 = lab.ipv4_only();
    let _block = Block::new(lab, "sym1", &[&lab.host("pr1h").public4]);
    let mut global = infra();
    global.extend(["--turn".to_string(), lab_turn(), "-vv".to_string()]);
    for (n, (listener, connector)) in [("sym1h", "pr1h"), ("pr1h", "sym1h")].iter().enumerate() {
        let r = run(lab, listener, connector, &strs(&global), &[], n as u64);
        assert!(r.intact(), "{connector}->{listener}: {}", r.describe());
        let ev = r.connected();
        assert_eq!(ev["path"], "relayed", "{ev}");
        assert_eq!(ev["method"], "relay", "{ev}");
        let (_, probes) = within_bounds(&r.pair.connector, connector);
        eprintln!(
            "{connector}->{listener}: relayed after {} ms ({probes} probes)",
            ev["setup_ms"]
        );
    }
}
