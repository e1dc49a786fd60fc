//! The lab proves its own routers: probes from every host show that each router maps and
//! filters the way its NAT type promises, over IPv4 and IPv6, and that packet loss can be
//! switched on and off. The reflector in the internet namespace reports the source it sees
//! and can answer from another port or address (tests/lab/probe.py).

use serde_json::Value;

use crate::harness::{exclusive, lab, parallel, shared, Host, SRV6_A, SRV6_B, SRV_A, SRV_B};

/// Which reflector sockets may answer a socket that has only talked to A:4000, in the order
/// A:4000, A:4001 (same address, other port), B:4000, B:4001 (other address), and whether a
/// port that never sent anything is reachable. `None`: the router passes no UDP at all.
fn expected_filtering(nat: &str, ipv6: bool) -> Option<([bool; 4], bool)> {
    Some(match nat {
        "public" => ([true; 4], true),
        "fullcone" => ([true; 4], false),
        "addrrestricted" => ([true, true, false, false], false),
        "portrestricted" | "symmetric" | "cgnat" | "upnp" => ([true, false, false, false], false),
        "udpblock" => return None,
        other => panic!("unknown NAT type {other} (ipv6 {ipv6})"),
    })
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

fn port_of(seen: &Value) -> Option<u16> {
    seen.as_str()?.rsplit(':').next()?.parse().ok()
}

fn ip_of(seen: &Value) -> Option<String> {
    let s = seen.as_str()?;
    Some(
        s[..s.rfind(':')?]
            .trim_matches(|c| c == '[' || c == ']')
            .to_string(),
    )
}

/// One UDP socket talks to A:4000, A:4001 and B:4000: endpoint-independent mapping shows
/// one public port to all three, the symmetric NAT a different port to each.
#[test]
fn udp_mapping_matches_router_type() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let failures = parallel(&lab.hosts, 8, |h: &Host| {
        let r = lab.probe(&h.name, &["map", SRV_A, SRV_B]);
        let seen: Vec<&Value> = r["seen"].as_object().unwrap().values().collect();
        if h.nat == "udpblock" {
            return seen
                .iter()
                .any(|s| !s.is_null())
                .then(|| format!("{}: UDP got through a UDP-blocking firewall: {r}", h.name));
        }
        if seen
            .iter()
            .any(|s| ip_of(s).as_deref() != Some(h.public4.as_str()))
        {
            return Some(format!(
                "{}: expected to be seen from {}: {r}",
                h.name, h.public4
            ));
        }
        let ports: Vec<u16> = seen.iter().filter_map(|s| port_of(s)).collect();
        let distinct = {
            let mut p = ports.clone();
            p.sort_unstable();
            p.dedup();
            p.len()
        };
        let ok = match h.nat.as_str() {
            "symmetric" => distinct == 3,
            "public" => distinct == 1 && ports[0] == r["local_port"].as_u64().unwrap() as u16,
            _ => distinct == 1,
        };
        (!ok).then(|| format!("{} ({}): mapping not as promised: {r}", h.name, h.nat))
    });
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

fn check_filtering(ipv6: bool) {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let (a, b) = if ipv6 {
        (SRV6_A, SRV6_B)
    } else {
        (SRV_A, SRV_B)
    };
    let failures = parallel(&lab.hosts, 8, |h: &Host| {
        let r = lab.probe(&h.name, &["filter", a, b]);
        let Some((from, unsolicited)) = expected_filtering(&h.nat, ipv6) else {
            return (!r["mapped"].is_null())
                .then(|| format!("{}: UDP got through a UDP-blocking firewall: {r}", h.name));
        };
        let own = if ipv6 { &h.ipv6 } else { &h.public4 };
        if ip_of(&r["mapped"]).as_deref() != Some(own.as_str()) {
            return Some(format!("{}: mapped address should be {own}: {r}", h.name));
        }
        let keys = [(a, 4000), (a, 4001), (b, 4000), (b, 4001)];
        let got: Vec<bool> = keys
            .iter()
            .map(|(ip, port)| r["from"][format!("{}:{port}", bracket(ip))] == true)
            .collect();
        (got != from || r["unsolicited"] != unsolicited).then(|| {
            format!(
                "{} ({}): filtering should pass {from:?} unsolicited={unsolicited}, got {r}",
                h.name, h.nat
            )
        })
    });
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Full cone passes every source, address-restricted any port of a contacted address,
/// the others only the contacted endpoint; only public hosts take unsolicited traffic.
#[test]
fn udp_filtering_matches_router_type_ipv4() {
    check_filtering(false);
}

/// IPv6 is not translated, but each router applies the same filtering type to it.
#[test]
fn udp_filtering_matches_router_type_ipv6() {
    check_filtering(true);
}

/// TCP leaves every host, the UDP-blocking firewall included, from its public address.
#[test]
fn tcp_reaches_the_internet_from_every_host() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let failures = parallel(&lab.hosts, 8, |h: &Host| {
        let v4 = lab.probe(&h.name, &["tcp", SRV_B, "4001"]);
        let v6 = lab.probe(&h.name, &["tcp", SRV6_A, "4000"]);
        let ok = ip_of(&v4["seen"]).as_deref() == Some(h.public4.as_str())
            && ip_of(&v6["seen"]).as_deref() == Some(h.ipv6.as_str());
        (!ok).then(|| format!("{}: {v4} {v6}", h.name))
    });
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Private addresses of other sites are unreachable: the internet routes none of them.
#[test]
fn private_addresses_do_not_route_between_sites() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let target = lab.host("pr2h").ipv4.clone();
    let r = lab.probe("pr1h", &["tcp", &target, "4000"]);
    assert!(
        r["seen"].is_null(),
        "pr1h reached pr2h's private address {target}: {r}"
    );
}

/// `scripts/lab loss ROUTER PCT` drops that share of forwarded packets in both directions
/// (a round trip survives with probability (1-p)^2), and 0 switches it off.
#[test]
fn loss_can_be_switched_on_and_off() {
    let Some(lab) = lab() else { return };
    let _g = exclusive();
    let h = lab.host("pr2h");
    lab.loss(&h.router, 30);
    let lossy = lab.probe(&h.name, &["rate", SRV_A, "300"]);
    lab.loss(&h.router, 0);
    let clean = lab.probe(&h.name, &["rate", SRV_A, "300"]);
    let got = lossy["received"].as_u64().unwrap();
    // expected 0.49 * 300 = 147 with a standard deviation of 8.7: 100..=200 is over 5 of them
    assert!(
        (100..=200).contains(&got),
        "30% loss each way let {got}/300 through"
    );
    assert!(
        clean["received"].as_u64().unwrap() >= 297,
        "no loss: {clean}"
    );
}
