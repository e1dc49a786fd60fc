//! The lab's infrastructure works from behind every router: STUN binding with RFC 5780
//! OTHER-ADDRESS (coturn), TURN allocation and relaying with long-term credentials
//! (coturn's own turnutils_uclient), MQTT publish/subscribe (mosquitto and its clients),
//! and port mapping through miniupnpd by UPnP IGD and by NAT-PMP.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{
    lab, parallel, shared, Host, Lab, SRV6_A, SRV_A, SRV_B, TURN_PASS, TURN_USER,
};

fn fails(results: Vec<Option<String>>) {
    let failures: Vec<String> = results.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A binding over UDP shows the host's public address and names coturn's other address;
/// over TCP it works even through the UDP-blocking firewall; over IPv6 no NAT is seen.
#[test]
fn stun_binding_from_every_host() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    fails(parallel(&lab.hosts, 8, |h: &Host| {
        let udp = lab.probe(&h.name, &["stun", SRV_A, "3478"]);
        let tcp = lab.probe(&h.name, &["stun", SRV_A, "3478", "tcp"]);
        let alt = lab.probe(&h.name, &["stun", SRV_B, "3479", "tcp"]);
        let v6 = lab.probe(&h.name, &["stun", SRV6_A, "3478", "tcp"]);
        let public = |r: &serde_json::Value| {
            r["ok"] == true
                && r["mapped"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&format!("{}:", h.public4)))
        };
        let mut bad = Vec::new();
        if h.nat == "udpblock" {
            if udp["ok"] == true {
                bad.push(format!("UDP STUN through a UDP-blocking firewall: {udp}"));
            }
        } else if !public(&udp) || udp["other"] != format!("{SRV_B}:3479") {
            bad.push(format!("UDP binding {udp}"));
        }
        if !public(&tcp) {
            bad.push(format!("TCP binding {tcp}"));
        }
        if !public(&alt) || alt["origin"] != format!("{SRV_B}:3479") {
            bad.push(format!("binding on the alternate address {alt}"));
        }
        if v6["ok"] != true
            || !v6["mapped"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("[{}]:", h.ipv6))
        {
            bad.push(format!("IPv6 binding {v6}"));
        }
        (!bad.is_empty()).then(|| format!("{} ({}): {}", h.name, h.nat, bad.join("; ")))
    }));
}

/// Runs coturn's test client: two allocations relaying to each other (`-y`). Returns
/// (messages sent, messages received, output).
fn turn_client(lab: &Lab, host: &str, tcp: bool, pass: &str) -> (u64, u64, String) {
    let mut args = vec![
        "turnutils_uclient",
        "-y",
        "-n",
        "5",
        "-l",
        "64",
        "-u",
        TURN_USER,
        "-w",
        pass,
    ];
    if tcp {
        args.push("-t");
    }
    args.push(SRV_A);
    let mut cmd = lab.command(host, args[0]);
    cmd.args(&args[1..]).stdin(Stdio::null());
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    let counts = out
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.split("start_mclient: ").nth(1)?;
            let sent = l
                .strip_prefix("tot_send_msgs=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            let recv = l.split("tot_recv_msgs=").nth(1)?.trim().parse().ok()?;
            Some((sent, recv))
        })
        .unwrap_or((0, 0));
    (counts.0, counts.1, out)
}

fn run_with_timeout(mut cmd: std::process::Command, timeout: Duration) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every host allocates on coturn with the lab credentials and relays data through it
/// (over TCP from behind the UDP-blocking firewall); a wrong password allocates nothing.
#[test]
fn turn_allocation_from_every_host() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    fails(parallel(&lab.hosts, 16, |h: &Host| {
        let (sent, recv, out) = turn_client(lab, &h.name, h.nat == "udpblock", TURN_PASS);
        (sent == 0 || recv != sent || out.contains("ERROR")).then(|| {
            let tail: Vec<&str> = out.lines().rev().take(6).collect();
            format!(
                "{} ({}): sent {sent} received {recv}: {tail:?}",
                h.name, h.nat
            )
        })
    }));
    let (_, recv, out) = turn_client(lab, "pr1h", false, "not-the-password");
    assert!(
        recv == 0 && out.contains("Cannot complete Allocation"),
        "{out}"
    );
}

/// Each host subscribes while the next host in the list publishes to it, alternating
/// the broker's IPv4 and IPv6 address.
#[test]
fn mqtt_publish_subscribe_from_every_host() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let n = lab.hosts.len();
    let pairs: Vec<(usize, usize)> = (0..n).map(|i| (i, (i + 1) % n)).collect();
    fails(parallel(&pairs, 16, |&(s, p)| {
        let (sub, publ) = (&lab.hosts[s], &lab.hosts[p]);
        let broker = if s % 2 == 0 { SRV_A } else { SRV6_A };
        let topic = format!("lab/{}/{}", std::process::id(), sub.name);
        let message = format!("from {} to {}", publ.name, sub.name);
        let mut child = lab
            .command(&sub.name, "mosquitto_sub")
            .args(["-h", broker, "-t", &topic, "-C", "1", "-W", "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        // QoS 0 messages sent before the subscription exists are dropped: publish until
        // the subscriber has its message and exits.
        for _ in 0..30 {
            let _ = lab.exec(
                &publ.name,
                &["mosquitto_pub", "-h", broker, "-t", &topic, "-m", &message],
            );
            std::thread::sleep(Duration::from_millis(300));
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        let got = String::from_utf8_lossy(&out.stdout);
        (got.trim() != message).then(|| {
            format!(
                "{} -> {} via {broker}: got {got:?}, stderr {}",
                publ.name,
                sub.name,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }));
}

/// UPnP IGD (unicast to the gateway's description URL, no multicast discovery): a mapping
/// lets unsolicited traffic in; the same port without a mapping stays closed.
#[test]
fn upnp_mapping_opens_a_port() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let h = lab.host("up1h");
    let port = "35001";
    let before = lab.probe(&h.name, &["expect", port, &h.public4, port, SRV_A, SRV_B]);
    assert_eq!(
        before["received"], false,
        "port open before mapping: {before}"
    );
    let url = format!("http://{}:5000/rootDesc.xml", h.gateway4);
    let add = lab.exec(
        &h.name,
        &["upnpc", "-u", &url, "-a", &h.ipv4, port, port, "UDP"],
    );
    let text = String::from_utf8_lossy(&add.stdout);
    assert!(
        text.contains(&format!("ExternalIPAddress = {}", h.public4)),
        "{text}"
    );
    let after = lab.probe(&h.name, &["expect", port, &h.public4, port, SRV_A, SRV_B]);
    let del = lab.exec(&h.name, &["upnpc", "-u", &url, "-d", port, "UDP"]);
    assert_eq!(
        after["received"], true,
        "mapping did not let traffic in: {after} ({text})"
    );
    assert!(del.status.success(), "{del:?}");
}

/// NAT-PMP on a miniupnpd router maps a port and reports the public address; a router
/// without miniupnpd answers nothing.
#[test]
fn natpmp_mapping_opens_a_port() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let h = lab.host("up2h");
    let r = lab.probe(&h.name, &["natpmp", &h.gateway4, "35002"]);
    assert_eq!(r["external_ip"], h.public4.as_str(), "{r}");
    assert_eq!(r["result"], 0, "{r}");
    let eport = r["external_port"].to_string();
    let inbound = lab.probe(
        &h.name,
        &["expect", "35002", &h.public4, &eport, SRV_A, SRV_B],
    );
    assert_eq!(inbound["received"], true, "{inbound}");
    let pr = lab.host("pr1h");
    let none = lab.probe(&pr.name, &["natpmp", &pr.gateway4, "35002"]);
    assert!(
        none.get("external_ip").is_none(),
        "NAT-PMP on a plain router: {none}"
    );
}
