//! `warpgate nat-info`: runs [`crate::discovery`] against the configured STUN servers and prints
//! the report on stdout, a readable table or (with `--json`) one JSON document whose schema
//! README.md documents. Exit codes: 0 when some server answered, 1 when none did (the report is
//! still printed, so scripts see why), 2 when there is nothing to ask (`--offline`, or an empty
//! STUN server list).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use super::args::NatInfoArgs;
use super::{usage, Node};
use crate::discovery::{self, Report};
use crate::nat::{AllocationKind, Family};
use crate::report::Reporter;

pub async fn run(node: &Node, args: NatInfoArgs, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    if node.settings.offline {
        return Err(usage(
            "nat-info asks STUN servers what they see, and --offline forbids contacting any",
        ));
    }
    if node.settings.stun.is_empty() {
        return Err(usage(
            "nat-info needs at least one STUN server: pass --stun HOST:PORT or set stun in the config",
        ));
    }
    let limit = Duration::from_secs(args.timeout);
    let report = tokio::time::timeout(
        limit,
        discovery::discover(
            &node.settings.stun,
            discovery::Infrastructure {
                turn: &node.settings.turn,
                brokers: &node.settings.brokers,
                registries: &node.settings.registries,
            },
        ),
    )
    .await
    .map_err(|_| anyhow::anyhow!("nat-info did not finish within {} s", args.timeout))?;
    // Kept for the address while this network stays the same.
    let facts = discovery::cache::facts_of(&report);
    if !facts.is_empty() {
        if let Ok(fingerprint) = discovery::cache::fingerprint() {
            discovery::cache::store(&node.settings.home, &fingerprint, &facts);
        }
    }
    tracing::info!(
        "nat-info took {} ms and sent {} STUN packets",
        report.elapsed_ms,
        report.stun_packets
    );
    let text = if reporter.json {
        serde_json::to_string(&report)?
    } else {
        table(&report)
    };
    match writeln!(std::io::stdout().lock(), "{}", text.trim_end()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    let answered = report.servers.iter().any(|s| s.reachable);
    Ok(if answered {
        ExitCode::SUCCESS
    } else {
        if !reporter.json {
            reporter.error("no STUN server answered");
        }
        ExitCode::from(1)
    })
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn list(addrs: &[std::net::SocketAddr]) -> String {
    if addrs.is_empty() {
        "-".into()
    } else {
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The human form: one block per interface, then one line per server.
fn table(r: &Report) -> String {
    let mut out = String::new();
    for i in &r.interfaces {
        let family = match i.family {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        };
        let alloc = match (i.port_allocation.kind, i.port_allocation.delta) {
            (AllocationKind::Sequential, Some(d)) => format!("sequential (delta {d:+})"),
            (kind, _) => serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        };
        let rows = [
            ("public", list(&i.public)),
            ("public (tcp)", list(&i.public_tcp)),
            ("mapping", i.mapping.as_str().to_string()),
            ("filtering", i.filtering.as_str().to_string()),
            ("port allocation", alloc),
            ("hairpinning", yes_no(i.hairpinning).to_string()),
            ("udp blocked", yes_no(i.udp_blocked).to_string()),
            (
                "rfc 5780 tests",
                if i.rfc5780 {
                    "yes"
                } else {
                    "no (no server offered OTHER-ADDRESS)"
                }
                .into(),
            ),
        ];
        let mapper = |m: &Option<crate::portmap::PortMapper>| match m {
            Some(m) if m.available => format!(
                "yes, external {}",
                m.external
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "-".into())
            ),
            Some(m) => format!("no ({})", m.error.as_deref().unwrap_or("no answer")),
            None => "-".into(),
        };
        let mut rows = rows.to_vec();
        if let Some(gw) = i.gateway {
            rows.push(("gateway", gw.to_string()));
            rows.push(("upnp igd", mapper(&i.upnp)));
            rows.push(("nat-pmp", mapper(&i.nat_pmp)));
        }
        let _ = writeln!(out, "{family} via {}", i.local);
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<16} {v}");
        }
    }
    let _ = writeln!(out, "servers");
    for s in &r.servers {
        let addr = s.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        let state = match (&s.error, s.rtt_ms, s.mapped, s.relayed) {
            (Some(e), ..) => format!("unreachable: {e}"),
            (None, rtt, _, Some(relayed)) => {
                format!("ok {:.1} ms, relay {relayed}", rtt.unwrap_or_default())
            }
            (None, rtt, Some(mapped), None) => {
                format!("ok {:.1} ms, sees {mapped}", rtt.unwrap_or_default())
            }
            (None, rtt, None, None) => format!("ok {:.1} ms", rtt.unwrap_or_default()),
        };
        let _ = writeln!(
            out,
            "  {:<5} {:<24} {:<24} {:<4} {state}",
            s.kind, s.name, addr, s.transport
        );
    }
    let _ = writeln!(
        out,
        "{} ms, {} STUN packets sent",
        r.elapsed_ms, r.stun_packets
    );
    out
}
