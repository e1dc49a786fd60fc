//! Signalled traversal through the lab's NATs (issue 5): port-restricted pairs again and again,
//! 64 MiB through a punched QUIC link and a punched TCP link, a dead broker beside a live one,
//! and a listener that is not there.

use std::time::{Duration, Instant};

use crate::harness::{infra, lab, random_bytes, sha, shared, Pair, SRV_A};

fn global(infra: &[String]) -> Vec<&str> {
    infra.iter().map(String::as_str).collect()
}

/// A line each way between two hosts; returns the pair and whether both lines arrived.
fn hello(lab: &crate::harness::Lab, listener: &str, connector: &str, extra: &[&str]) -> Pair {
    let infra = infra();
    let mut connect_args = vec!["--timeout", "10"];
    connect_args.extend_from_slice(extra);
    Pair::run(
        lab,
        listener,
        connector,
        &global(&infra),
        &[],
        &connect_args,
        b"hello from the listener\n",
        b"hello from the connector\n",
        Duration::from_secs(25),
    )
    .unwrap_or_else(|e| panic!("{listener} did not listen: {e}"))
}

fn exchanged(p: &Pair) -> bool {
    p.connector.code == Some(0)
        && p.listener.code == Some(0)
        && p.connector.stdout.contains("hello from the listener")
        && p.listener.stdout.contains("hello from the connector")
}

fn describe(p: &Pair) -> String {
    format!(
        "connector exit {:?}: {:?}\nlistener exit {:?}: {:?}",
        p.connector.code,
        p.connector.stderr.iter().rev().take(6).collect::<Vec<_>>(),
        p.listener.code,
        p.listener.stderr.iter().rev().take(6).collect::<Vec<_>>()
    )
}

#[test]
fn port_restricted_pair_connects_19_of_20_times() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let mut failures = Vec::new();
    let mut methods = Vec::new();
    for run in 0..20 {
        let (l, c) = if run % 2 == 0 {
            ("pr1h", "pr2h")
        } else {
            ("pr2h", "pr1h")
        };
        let p = hello(lab, l, c, &[]);
        if exchanged(&p) {
            let ev = p.connector.event("connected").cloned().unwrap_or_default();
            assert_eq!(ev["path"], "direct", "{ev}");
            methods.push(format!("{}/{}", ev["method"], ev["setup_ms"]));
        } else {
            failures.push(format!("run {run} {c}->{l}: {}", describe(&p)));
        }
    }
    eprintln!("pr<->pr methods/setup_ms: {methods:?}");
    assert!(
        failures.len() <= 1,
        "{} of 20 failed:\n{failures:#?}",
        failures.len()
    );
}

/// 64 MiB each way through a link that only punching can make, sha256-equal.
fn bulk_through(via: &str, transport: &str) {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let to_listener = random_bytes(64 << 20, 1);
    let to_connector = random_bytes(64 << 20, 2);
    let infra = infra();
    let p = Pair::run(
        lab,
        "pr1h",
        "pr2h",
        &global(&infra),
        &[],
        &["--timeout", "10", "--via", via],
        &to_connector,
        &to_listener,
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("pr1h did not listen: {e}"));
    let ev = p.connector.event("connected").cloned().unwrap_or_default();
    assert_eq!(ev["method"], via, "{}", describe(&p));
    assert_eq!(ev["transport"], transport);
    assert_eq!(p.connector.code, Some(0), "{}", describe(&p));
    assert_eq!(p.listener.code, Some(0), "{}", describe(&p));
    assert_eq!(sha(&p.listener.stdout_bytes), sha(&to_listener));
    assert_eq!(sha(&p.connector.stdout_bytes), sha(&to_connector));
}

#[test]
fn bulk_through_a_punched_quic_link() {
    bulk_through("udp_punch", "quic");
}

#[test]
fn bulk_through_a_punched_tcp_link() {
    bulk_through("tcp_punch", "tcp");
}

#[test]
fn udp_blocked_firewall_and_port_restricted_connect_over_tcp() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    for (l, c) in [("fw1h", "pr1h"), ("pr1h", "fw1h")] {
        let p = hello(lab, l, c, &[]);
        assert!(exchanged(&p), "{c}->{l}: {}", describe(&p));
        let ev = p.connector.event("connected").cloned().unwrap_or_default();
        assert_eq!(ev["transport"], "tcp", "{ev}");
        assert!(
            ev["method"] == "tcp_punch" || ev["method"] == "reverse",
            "{ev}"
        );
    }
}

#[test]
fn one_of_two_brokers_down_still_connects() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    // Nothing listens on 1884: a broker that is down from the start.
    let dead = format!("{SRV_A}:1884");
    let live = format!("{SRV_A}:1883");
    let stun = format!("{SRV_A}:3478");
    let global = ["--broker", &dead, "--broker", &live, "--stun", &stun];
    let p = Pair::run(
        lab,
        "pr1h",
        "pr2h",
        &global,
        &[],
        &["--timeout", "10", "--via", "udp_punch"],
        b"hello from the listener\n",
        b"hello from the connector\n",
        Duration::from_secs(25),
    )
    .unwrap_or_else(|e| panic!("pr1h did not listen: {e}"));
    assert!(exchanged(&p), "{}", describe(&p));
}

#[test]
fn a_listener_that_is_not_running_fails_within_the_timeout() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let infra = infra();
    // A real address of a node on pr1h that never listens.
    let out = lab
        .spawn("pr1h", &global(&infra), &["addr"], b"")
        .finish(Duration::from_secs(10));
    let address: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).expect("addr --json is JSON");
    let text = address["text"].as_str().expect("text").to_string();
    let started = Instant::now();
    let c = lab
        .spawn(
            "pr2h",
            &global(&infra),
            &["connect", &text, "--timeout", "6"],
            b"",
        )
        .finish(Duration::from_secs(30));
    let took = started.elapsed();
    assert_eq!(c.code, Some(1), "{:?}", c.stderr);
    assert!(took < Duration::from_secs(9), "took {took:?}");
    let error = c.event("error").expect("an error event");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(!message.contains('\n'), "{message}");
    assert!(message.contains("no path"), "{message}");
    eprintln!("not running: {took:?}: {message}");
}
