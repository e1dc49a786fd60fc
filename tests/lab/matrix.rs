//! The connectivity matrix: `warpgate listen` in one lab host, `warpgate connect` in
//! another, for every ordered pair of hosts, each exchanging a line both ways. Prints a
//! table (pair, outcome, winning method, transport, direct/relayed, setup ms) and writes
//! it to $CARGO_TARGET_TMPDIR/lab-matrix.txt (scripts/matrix shows it).
//!
//! It runs twice: with the hosts IPv4-only (`scripts/lab ipv6 off`) and dual-stack.
//! Both ends use the lab's broker, STUN servers and TURN server. It asserts what must work:
//! every ordered pair connects with the data intact (the relay gets the rest through), and
//! every pair gets a direct link (over TCP where a side blocks UDP). IPv4-only, a symmetric
//! host with another symmetric host or with the UDP-blocking firewall may be relayed
//! (`random_probe` makes symmetric ↔ the endpoint-independent NATs direct); dual-stack, those
//! pairs must be direct too, over IPv6, which the lab routes without NAT through stateful
//! firewalls.
//! Env: LAB_MATRIX_HOSTS="pub1h pr1h ..." limits the hosts, LAB_MATRIX_TIMEOUT the
//! connect timeout in seconds (default 8), LAB_MATRIX_OFFLINE=1 runs `--offline` (direct only;
//! only what must be direct to a public host is asserted), LAB_MATRIX_NO_TURN=1 leaves the relay
//! out (only what must be direct is asserted).

use std::fmt::Write as _;
use std::time::Duration;

use crate::harness::{exclusive, infra, lab, parallel, Host, Lab};

/// Whether the hosts have IPv6 beside IPv4.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Ipv4Only,
    DualStack,
}

/// Whether the pair (connector, listener) must connect directly, and over TCP only.
fn must_connect(connector: &Host, listener: &Host, family: Family) -> Option<bool> {
    let fw = |h: &Host| h.nat == "udpblock";
    if family == Family::Ipv4Only
        && listener.nat != "public"
        && (ipv4_hopeless(connector, listener) || ipv4_hopeless(listener, connector))
    {
        None
    } else {
        Some(fw(connector) || fw(listener))
    }
}

/// A symmetric NAT meets another, or a firewall without UDP, over IPv4 only through the relay.
fn ipv4_hopeless(a: &Host, b: &Host) -> bool {
    a.nat == "symmetric" && (b.nat == "symmetric" || b.nat == "udpblock")
}

#[derive(Debug)]
struct Cell {
    connector: String,
    listener: String,
    outcome: String,
    method: String,
    transport: String,
    path: String,
    remote: String,
    setup_ms: String,
    detail: String,
}

fn run_pair(lab: &Lab, connector: &Host, listener: &Host, timeout: u64, global: &[&str]) -> Cell {
    let mut cell = Cell {
        connector: connector.name.clone(),
        listener: listener.name.clone(),
        outcome: String::new(),
        method: "-".into(),
        transport: "-".into(),
        path: "-".into(),
        remote: "-".into(),
        setup_ms: "-".into(),
        detail: String::new(),
    };
    let hello = format!("hello from {}\n", listener.name);
    let hi = format!("hi from {}\n", connector.name);
    let mut l = lab.spawn(
        &listener.name,
        global,
        &["listen", "--port", "0"],
        hello.as_bytes(),
    );
    let Some(listening) = l.wait_event_within("listening", Duration::from_secs(15)) else {
        let f = l.finish(Duration::from_secs(1));
        cell.outcome = "no-listener".into();
        cell.detail = format!("listener exit {:?}: {:?}", f.code, f.stderr);
        return cell;
    };
    let Some(addr) = listening["addr"].as_str() else {
        cell.outcome = "no-listener".into();
        cell.detail = format!("listening event without addr: {listening}");
        return cell;
    };
    let t = timeout.to_string();
    let c = lab.spawn(
        &connector.name,
        global,
        &["connect", addr, "--timeout", &t],
        hi.as_bytes(),
    );
    let c = c.finish(Duration::from_secs(timeout + 10));
    let l = l.finish(Duration::from_secs(if c.code == Some(0) { 10 } else { 0 }));
    if let Some(ev) = c.event("connected") {
        let text = |k: &str| match &ev[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            v => v.to_string(),
        };
        cell.method = text("method");
        cell.transport = text("transport");
        cell.path = text("path");
        cell.remote = text("remote");
        cell.setup_ms = text("setup_ms");
    }
    let exchanged = c.stdout.contains(hello.trim()) && l.stdout.contains(hi.trim());
    cell.outcome = match (c.code, exchanged) {
        (Some(0), true) => "ok".into(),
        (Some(0), false) => "ok-no-data".into(),
        (Some(1), _) => "fail".into(),
        (None, _) => "hang".into(),
        (Some(code), _) => format!("exit-{code}"),
    };
    if cell.outcome != "ok" {
        let msg = c.event("error").map(|e| e["message"].to_string());
        cell.detail = msg.unwrap_or_else(|| c.stderr.last().cloned().unwrap_or_default());
    }
    cell
}

fn render(cells: &[Cell], hosts: &[&Host]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<14} {:<11} {:<12} {:<9} {:<8} {:>8}  {:<24} detail",
        "connect->listen", "outcome", "method", "transport", "path", "setup_ms", "remote"
    );
    for c in cells {
        let pair = format!("{}->{}", c.connector, c.listener);
        let detail: String = c.detail.chars().take(160).collect();
        let _ = writeln!(
            s,
            "{pair:<14} {:<11} {:<12} {:<9} {:<8} {:>8}  {:<24} {detail}",
            c.outcome, c.method, c.transport, c.path, c.setup_ms, c.remote
        );
    }
    // The same as a grid: rows connect, columns listen; T/Q = tcp/quic, 6 = over IPv6,
    // r = relayed.
    let _ = write!(s, "\n{:<7}", "c\\l");
    for h in hosts {
        let _ = write!(s, "{:>6}", h.name.trim_end_matches('h'));
    }
    let _ = writeln!(s);
    for row in hosts {
        let _ = write!(s, "{:<7}", row.name);
        for col in hosts {
            let mark = cells
                .iter()
                .find(|c| c.connector == row.name && c.listener == col.name)
                .map(
                    |c| match (c.outcome.as_str(), c.transport.as_str(), c.path.as_str()) {
                        ("ok", t, p) => format!(
                            "{}{}{}",
                            if t == "quic" { "Q" } else { "T" },
                            if c.remote.starts_with('[') { "6" } else { "" },
                            if p == "relayed" { "r" } else { "" }
                        ),
                        ("fail", _, _) => ".".into(),
                        (o, _, _) => o.chars().take(4).collect(),
                    },
                )
                .unwrap_or_else(|| "".into());
            let _ = write!(s, "{mark:>6}");
        }
        let _ = writeln!(s);
    }
    let ok = cells.iter().filter(|c| c.outcome == "ok").count();
    let relayed = cells
        .iter()
        .filter(|c| c.outcome == "ok" && c.path == "relayed")
        .count();
    let _ = writeln!(
        s,
        "\n{ok} of {} ordered pairs connected: {} direct, {relayed} relayed",
        cells.len(),
        ok - relayed
    );
    s
}

/// Every ordered pair of lab hosts, IPv4 only.
#[test]
fn connectivity_matrix_ipv4_only() {
    let Some(lab) = lab() else { return };
    // Alone: 24 pairs at once load both cores, which would skew the self-tests and setup_ms.
    let _g = exclusive();
    let _v4 = lab.ipv4_only();
    matrix(lab, Family::Ipv4Only);
}

/// Every ordered pair of lab hosts, dual-stack.
#[test]
fn connectivity_matrix_dual_stack() {
    let Some(lab) = lab() else { return };
    let _g = exclusive();
    matrix(lab, Family::DualStack);
}

/// Runs every ordered pair; asserts the pairs that must connect today.
fn matrix(lab: &Lab, family: Family) {
    let only: Option<Vec<String>> = std::env::var("LAB_MATRIX_HOSTS")
        .ok()
        .map(|v| v.split_whitespace().map(str::to_string).collect());
    let hosts: Vec<&Host> = lab
        .hosts
        .iter()
        .filter(|h| only.as_ref().map_or(true, |o| o.contains(&h.name)))
        .collect();
    let timeout: u64 = std::env::var("LAB_MATRIX_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let offline = std::env::var("LAB_MATRIX_OFFLINE").is_ok_and(|v| v == "1");
    let relay = !offline && !std::env::var("LAB_MATRIX_NO_TURN").is_ok_and(|v| v == "1");
    let mut infra = infra();
    if relay {
        infra.extend(["--turn".to_string(), crate::relay::lab_turn()]);
    }
    let global: Vec<&str> = if offline {
        vec!["--offline"]
    } else {
        infra.iter().map(String::as_str).collect()
    };
    let pairs: Vec<(&Host, &Host)> = hosts
        .iter()
        .flat_map(|c| {
            hosts
                .iter()
                .filter(move |l| l.name != c.name)
                .map(move |l| (*c, *l))
        })
        .collect();
    let started = std::time::Instant::now();
    // 8 pairs at once: each runs two processes with signalling, STUN and punching on 2 cores.
    let mut cells = parallel(&pairs, 8, |(c, l)| run_pair(lab, c, l, timeout, &global));
    // random_probe meets within the relay's grace in 19 of 20 runs, not always
    // (tests/lab/random_probe.rs): a symmetric pair that the relay won gets one more run.
    let mut second_runs = Vec::new();
    for (cell, (c, l)) in cells.iter_mut().zip(&pairs) {
        let probed = c.nat == "symmetric" || l.nat == "symmetric";
        if probed && cell.path == "relayed" && must_connect(c, l, family).is_some() {
            second_runs.push(format!("{}->{}", c.name, l.name));
            *cell = run_pair(lab, c, l, timeout, &global);
        }
    }
    let name = match family {
        Family::Ipv4Only => "ipv4",
        Family::DualStack => "dual",
    };
    let table = format!("hosts {name}\n{}", render(&cells, &hosts));
    eprintln!("{table}");
    eprintln!(
        "matrix: {} pairs in {:.1} s; relayed where random_probe should win, run again: {}",
        cells.len(),
        started.elapsed().as_secs_f64(),
        if second_runs.is_empty() {
            "none".to_string()
        } else {
            second_runs.join(" ")
        }
    );
    let file =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lab-matrix-{name}.txt"));
    let _ = std::fs::write(&file, &table);

    let mut missing = Vec::new();
    for c in &cells {
        let listener = lab.host(&c.listener);
        let connector = lab.host(&c.connector);
        let direct = must_connect(connector, listener, family)
            .filter(|_| !offline || listener.nat == "public");
        let over_v6 = c.remote.starts_with('[');
        // IPv4-only means no IPv6 at all; dual-stack, what IPv4 cannot do goes over IPv6.
        let family_ok = match family {
            Family::Ipv4Only => !over_v6,
            Family::DualStack => {
                over_v6
                    || !(ipv4_hopeless(connector, listener) || ipv4_hopeless(listener, connector))
            }
        };
        let good = match direct {
            Some(tcp_only) => {
                c.outcome == "ok"
                    && c.path == "direct"
                    && (!tcp_only || c.transport == "tcp")
                    && (family_ok || offline)
            }
            None if relay => c.outcome == "ok" && family_ok,
            None => continue,
        };
        if !good {
            missing.push(format!(
                "{}->{}: {} {} {} {}",
                c.connector, c.listener, c.outcome, c.path, c.remote, c.detail
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "pairs that must connect did not:\n{missing:#?}"
    );
}
