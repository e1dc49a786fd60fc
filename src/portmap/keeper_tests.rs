//! Tests of [`super`]: the candidate list, and the keeper end to end against NAT-PMP and PCP
//! doubles on loopback addresses (mapping, renewal, deletion, refusal, silence, IPv6
//! pinholes).

use super::*;
use tokio_util::task::AbortOnDropHandle;

#[test]
fn only_public_outside_addresses_are_advertised() {
    for (ip, want) in [
        ("203.0.113.17", true),
        ("198.51.100.3", true),
        ("192.168.1.1", false),
        ("10.1.2.3", false),
        ("100.64.0.2", false),
        ("0.0.0.0", false),
        ("2001:db8::1", false),
    ] {
        assert_eq!(advertisable(ip.parse().unwrap()), want, "{ip}");
    }
}

#[test]
fn one_candidate_per_external_port_while_the_lease_holds() {
    let now = Instant::now();
    let ip: IpAddr = "203.0.113.17".parse().unwrap();
    let udp = Mapping::new(Protocol::Udp, 4000, (4000, 3600));
    let tcp = Mapping::new(Protocol::Tcp, 4000, (4000, 3600));
    let got = candidates(ip, &[udp.clone(), tcp.clone()], now);
    assert_eq!(
        got,
        vec![Candidate {
            kind: CandidateKind::Mapped,
            addr: "203.0.113.17:4000".parse().unwrap(),
        }]
    );
    let moved = Mapping::new(Protocol::Tcp, 4000, (4001, 3600));
    assert_eq!(candidates(ip, &[udp.clone(), moved], now).len(), 2);
    // An expired lease is no candidate; a permanent mapping always is.
    let later = now + Duration::from_secs(3601);
    assert!(candidates(ip, &[udp], later).is_empty());
    let permanent = Mapping::new(Protocol::Udp, 4000, (4000, 0));
    assert_eq!(candidates(ip, &[permanent], later).len(), 1);
}

/// A "gateway" on loopback refuses both protocols (nothing listens on 5351 or 1900): the
/// keeper settles at once instead of holding the listener for the whole wait.
#[tokio::test]
async fn a_gateway_refusing_both_protocols_holds_nothing_up() {
    let stop = CancellationToken::new();
    let mut map = PortMap::start_with(40123, Some(Ipv4Addr::LOCALHOST), None, &stop);
    let started = std::time::Instant::now();
    let wait = Duration::from_secs(3);
    assert!(map.first(wait, wait).await.is_empty());
    assert!(map.state.borrow().settled);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    map.close().await;
    // A silent gateway (both ports bound on another loopback address, never answering):
    // the listener waits `silent`, and closing mid-search returns at once.
    let gw = Ipv4Addr::new(127, 0, 0, 3);
    let _natpmp = tokio::net::UdpSocket::bind((gw, NATPMP_PORT))
        .await
        .unwrap();
    let _ssdp = tokio::net::UdpSocket::bind((gw, 1900)).await.unwrap();
    let mut silent = PortMap::start_with(40123, Some(gw), None, &stop);
    let started = std::time::Instant::now();
    let quiet = Duration::from_millis(200);
    assert!(silent.first(quiet, wait).await.is_empty());
    assert!(!silent.state.borrow().settled);
    assert!(started.elapsed() < quiet * 2, "{:?}", started.elapsed());
    let started = std::time::Instant::now();
    silent.close().await;
    assert!(started.elapsed() < Duration::from_millis(200));
    // No gateway at all: settled at once.
    let mut none = PortMap::start_with(40123, None, None, &stop);
    let wait = Duration::from_secs(5);
    assert!(none.first(wait, wait).await.is_empty());
    assert!(none.state.borrow().settled);
    none.close().await;
}

type Requests = std::sync::Arc<std::sync::Mutex<Vec<(u8, u16, u32)>>>;

/// A NAT-PMP "gateway" on `gw`:5351 that grants two-second leases at external port 41000
/// and logs each map request (opcode, suggested port, lifetime); with `renews` false it
/// ignores renewals (requests for a port it granted already) but still answers deletions.
async fn natpmp_double(gw: Ipv4Addr, renews: bool) -> (Requests, AbortOnDropHandle<()>) {
    let server = tokio::net::UdpSocket::bind((gw, NATPMP_PORT))
        .await
        .unwrap();
    let seen = Requests::default();
    let log = seen.clone();
    let fake = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            let Ok((n, from)) = server.recv_from(&mut buf).await else {
                return;
            };
            let answer: Vec<u8> = match &buf[..n] {
                [0, 0] => vec![0, 128, 0, 0, 0, 0, 0, 1, 203, 0, 113, 9],
                // RFC 6886 §3.5: any other version (PCP's 2) is "unsupported version".
                [v, op, ..] if *v != 0 => vec![0, 128 | op, 0, 1, 0, 0, 0, 1],
                [0, op @ (1 | 2), 0, 0, i0, i1, s0, s1, l0, l1, l2, l3] => {
                    let lifetime = u32::from_be_bytes([*l0, *l1, *l2, *l3]);
                    let suggested = u16::from_be_bytes([*s0, *s1]);
                    log.lock().unwrap().push((*op, suggested, lifetime));
                    if !renews && lifetime != 0 && suggested == 41000 && *op == 1 {
                        continue;
                    }
                    let (ext, granted) = if lifetime == 0 {
                        ([0, 0], 0u32)
                    } else {
                        (41000u16.to_be_bytes(), 2)
                    };
                    let mut a = vec![0, 128 + op, 0, 0, 0, 0, 0, 1, *i0, *i1, ext[0], ext[1]];
                    a.extend_from_slice(&granted.to_be_bytes());
                    a
                }
                _ => continue,
            };
            let _ = server.send_to(&answer, from).await;
        }
    });
    (seen, AbortOnDropHandle::new(fake))
}

/// The keeper maps UDP then TCP (asking for UDP's external port), renews each at half the
/// lease, and on close deletes both (lifetime 0, suggested port 0).
#[tokio::test]
async fn maps_renews_at_half_the_lease_and_deletes_on_close() {
    let gw = Ipv4Addr::new(127, 0, 0, 4);
    let (seen, _fake) = natpmp_double(gw, true).await;
    let stop = CancellationToken::new();
    let mut map = PortMap::start_with(40000, Some(gw), None, &stop);
    let wait = Duration::from_secs(2);
    let mapped = map.first(wait, wait).await;
    assert_eq!(
        mapped,
        vec![Candidate {
            kind: CandidateKind::Mapped,
            addr: "203.0.113.9:41000".parse().unwrap(),
        }]
    );
    // Asked for: UDP at the listen port, then TCP at UDP's external port, for the lease.
    let lease = u32::try_from(PORTMAP_LEASE.as_secs()).unwrap();
    assert_eq!(
        seen.lock().unwrap()[..2],
        [(1, 40000, lease), (2, 41000, lease)]
    );
    // Granted 2 s: renewed after 1 s, keeping the external port.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        seen.lock().unwrap()[2..4],
        [(1, 41000, lease), (2, 41000, lease)]
    );
    assert_eq!(map.candidates(), mapped);
    map.close().await;
    let seen = seen.lock().unwrap();
    let deletions: Vec<_> = seen.iter().filter(|r| r.2 == 0).collect();
    assert_eq!(deletions, [&(1, 0, 0), &(2, 0, 0)], "{seen:?}");
}

/// Told to stop while a renewal waits for a gateway that does not answer it, the keeper
/// drops the renewal and deletes at once (else the deletion would be cut off by `close`'s
/// bound while the renewal still retransmits).
#[tokio::test]
async fn a_renewal_in_flight_does_not_keep_the_deletion_waiting() {
    let gw = Ipv4Addr::new(127, 0, 0, 5);
    let (seen, _fake) = natpmp_double(gw, false).await;
    let stop = CancellationToken::new();
    let mut map = PortMap::start_with(40000, Some(gw), None, &stop);
    let wait = Duration::from_secs(2);
    assert_eq!(map.first(wait, wait).await.len(), 1);
    // The UDP renewal goes out after 1 s and is not answered; stop 300 ms into it.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    stop.cancel();
    map.close().await;
    let seen = seen.lock().unwrap();
    assert!(
        seen.contains(&(1, 41000, 3600)),
        "no renewal was tried: {seen:?}"
    );
    let deletions: Vec<_> = seen.iter().filter(|r| r.2 == 0).collect();
    assert_eq!(deletions, [&(1, 0, 0), &(2, 0, 0)], "{seen:?}");
}

/// What a PCP double saw of a MAP request: (protocol number, suggested port, lifetime,
/// client address, nonce).
type PcpRequests = std::sync::Arc<std::sync::Mutex<Vec<(u8, u16, u32, IpAddr, Vec<u8>)>>>;

/// A PCP "gateway" on `at`: answers ANNOUNCE, grants two-second leases, at 203.0.113.9:41000 to an IPv4 client
/// and at the client's own address and suggested port to an IPv6 one (a pinhole).
async fn pcp_double(at: SocketAddr) -> (PcpRequests, AbortOnDropHandle<()>) {
    let server = tokio::net::UdpSocket::bind(at).await.unwrap();
    let seen = PcpRequests::default();
    let log = seen.clone();
    let fake = tokio::spawn(async move {
        let mut buf = [0u8; 1100];
        loop {
            let Ok((n, from)) = server.recv_from(&mut buf).await else {
                return;
            };
            if n == 24 && buf[0] == 2 && buf[1] == 0 {
                // ANNOUNCE: the header back, as a success.
                let mut answer = buf[..24].to_vec();
                answer[1] = 0x80;
                answer[8..].fill(0);
                let _ = server.send_to(&answer, from).await;
                continue;
            }
            let Ok(request) = <[u8; 60]>::try_from(&buf[..n]) else {
                continue;
            };
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&request[8..24]);
            let client = std::net::Ipv6Addr::from(ip).to_canonical();
            let lifetime = u32::from_be_bytes(request[4..8].try_into().unwrap());
            let suggested = u16::from_be_bytes([request[42], request[43]]);
            let nonce = request[24..36].to_vec();
            log.lock()
                .unwrap()
                .push((request[36], suggested, lifetime, client, nonce));
            let (outside, granted): (SocketAddr, u32) = match (client, lifetime) {
                (_, 0) => (SocketAddr::new(client, 0), 0),
                (IpAddr::V4(_), _) => ("203.0.113.9:41000".parse().unwrap(), 2),
                (IpAddr::V6(_), _) => (SocketAddr::new(client, suggested), 2),
            };
            let mut answer = request;
            answer[1] = 0x81;
            answer[4..8].copy_from_slice(&granted.to_be_bytes());
            answer[8..24].fill(0);
            answer[42..44].copy_from_slice(&outside.port().to_be_bytes());
            let wire = match outside.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            answer[44..60].copy_from_slice(&wire.octets());
            let _ = server.send_to(&answer, from).await;
        }
    });
    (seen, AbortOnDropHandle::new(fake))
}

/// A gateway speaking PCP is mapped by PCP (UDP, then TCP at UDP's external port), and each
/// mapping is deleted with the nonce it was made with.
#[tokio::test]
async fn pcp_maps_and_deletes_with_each_mappings_nonce() {
    let gw = Ipv4Addr::new(127, 0, 0, 6);
    let (seen, _fake) = pcp_double(SocketAddr::new(gw.into(), NATPMP_PORT)).await;
    let stop = CancellationToken::new();
    let mut map = PortMap::start_with(40000, Some(gw), None, &stop);
    let wait = Duration::from_secs(2);
    assert_eq!(
        map.first(wait, wait).await,
        vec![Candidate {
            kind: CandidateKind::Mapped,
            addr: "203.0.113.9:41000".parse().unwrap(),
        }]
    );
    map.close().await;
    let seen = seen.lock().unwrap();
    let asked: Vec<(u8, u16, u32)> = seen.iter().map(|r| (r.0, r.1, r.2)).collect();
    let lease = u32::try_from(PORTMAP_LEASE.as_secs()).unwrap();
    // The UDP probe-and-map, UDP again in the mapping round, TCP; then both deletions.
    assert_eq!(
        asked,
        [
            (17, 40000, lease),
            (17, 40000, lease),
            (6, 41000, lease),
            (17, 0, 0),
            (6, 0, 0)
        ]
    );
    assert!(seen
        .iter()
        .all(|r| r.3 == IpAddr::from(Ipv4Addr::LOCALHOST)));
    let nonce = |protocol: u8| {
        let of: Vec<&Vec<u8>> = seen
            .iter()
            .filter(|r| r.0 == protocol)
            .map(|r| &r.4)
            .collect();
        assert!(of.windows(2).all(|w| w[0] == w[1]), "{protocol}: {of:?}");
        of[0].clone()
    };
    assert_ne!(nonce(17), nonce(6));
}

/// A NAT-PMP-only gateway answers PCP with "unsupported version": NAT-PMP maps at once.
#[tokio::test]
async fn a_natpmp_only_gateway_is_asked_natpmp_at_once() {
    let gw = Ipv4Addr::new(127, 0, 0, 7);
    let (seen, _fake) = natpmp_double(gw, true).await;
    let stop = CancellationToken::new();
    let started = std::time::Instant::now();
    let mut map = PortMap::start_with(40000, Some(gw), None, &stop);
    let wait = Duration::from_secs(2);
    assert_eq!(map.first(wait, wait).await.len(), 1);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
    map.close().await;
}

/// An IPv6 gateway speaking PCP opens a pinhole for the port at this host's own address (UDP
/// and TCP), publishes no candidate, and closes it on close.
#[tokio::test]
async fn ipv6_pinholes_open_and_close() {
    let Ok(probe) = std::net::UdpSocket::bind("[::1]:0") else {
        return; // no IPv6 on this machine
    };
    let at = probe.local_addr().unwrap();
    drop(probe);
    let (seen, _fake) = pcp_double(at).await;
    let stop = CancellationToken::new();
    let local = std::net::Ipv6Addr::LOCALHOST;
    let mut map = PortMap::start_with(40000, None, Some((at, local)), &stop);
    let wait = Duration::from_secs(2);
    assert!(map.first(wait, wait).await.is_empty());
    assert!(map.pinholes.borrow().settled);
    map.close().await;
    let seen = seen.lock().unwrap();
    let asked: Vec<(u8, u16, u32, IpAddr)> = seen.iter().map(|r| (r.0, r.1, r.2, r.3)).collect();
    let lease = u32::try_from(PORTMAP_LEASE.as_secs()).unwrap();
    let me = IpAddr::from(local);
    assert_eq!(
        asked,
        [
            (17, 40000, lease, me),
            (6, 40000, lease, me),
            (17, 0, 0, me),
            (6, 0, 0, me)
        ]
    );
}
