//! Making and releasing allocations (UDP, TCP, and TCP when UDP is refused or silent), and
//! the ways it fails.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use warpgate::relay::{Allocation, RelayError, RelayTransport};

use crate::support::{allocate, free_port, Coturn, PASSWORD};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test]
async fn allocates_over_udp_and_tcp() {
    let server = Coturn::start();
    for tcp in [false, true] {
        let a = allocate(&server, tcp).await;
        let want = if tcp {
            RelayTransport::Tcp
        } else {
            RelayTransport::Udp
        };
        assert_eq!(a.transport(), want);
        assert_eq!(a.relayed_addr().ip(), LOOPBACK);
        assert_ne!(a.relayed_addr().port(), 0);
        let mapped = a.mapped_addr().expect("coturn says XOR-MAPPED-ADDRESS");
        assert_eq!(mapped.ip(), LOOPBACK);
        assert_ne!(mapped.port(), server.port);
        a.close().await;
    }
}

#[tokio::test]
async fn falls_back_to_tcp_when_udp_is_refused_or_silent() {
    // coturn listening on TCP only: UDP gets a port unreachable, TCP is tried at once.
    let base = free_port().clamp(1024, 65000);
    let server = Coturn::start_with((base, base + 50), &["--no-udp"]);
    let started = Instant::now();
    let a = allocate(&server, false).await;
    assert_eq!(a.transport(), RelayTransport::Tcp);
    assert!(started.elapsed() < warpgate::timing::TURN_UDP_SILENCE);
    a.close().await;
    // A silent UDP socket on the same port: TCP joins in after its head start and wins, long
    // before the UDP silence bound.
    let _silent = std::net::UdpSocket::bind(("127.0.0.1", server.port)).expect("bind udp");
    let started = Instant::now();
    let a = allocate(&server, false).await;
    let took = started.elapsed();
    assert_eq!(a.transport(), RelayTransport::Tcp);
    assert!(took >= warpgate::timing::TURN_TCP_HEAD_START, "{took:?}");
    assert!(took < warpgate::timing::TURN_UDP_SILENCE, "{took:?}");
    assert_eq!(a.relayed_addr().ip(), LOOPBACK);
    a.close().await;
}

#[tokio::test]
async fn close_releases_the_relayed_port() {
    // One relay port: a second allocation is refused until the first is released.
    let port = free_port();
    let server = Coturn::start_with((port, port), &[]);
    let first = allocate(&server, false).await;
    assert_eq!(first.relayed_addr().port(), port);
    let second = Allocation::connect(&server.url(PASSWORD, false)).await;
    assert!(
        matches!(second, Err(RelayError::Refused(508, _))),
        "no port left: {:?}",
        second.as_ref().map(|a| a.relayed_addr())
    );
    let started = Instant::now();
    first.close().await;
    eprintln!("close() took {} ms", started.elapsed().as_millis());
    assert!(started.elapsed() < Duration::from_secs(2));
    let (third, took) = allocate_when_free(&server, true).await;
    eprintln!(
        "relay port free again {} ms after close()",
        took.as_millis()
    );
    assert_eq!(third.relayed_addr().port(), port, "the port came back");
    // Drop deallocates too (one best-effort request, no wait).
    drop(third);
    let (fourth, took) = allocate_when_free(&server, false).await;
    eprintln!("relay port free again {} ms after drop", took.as_millis());
    assert_eq!(fourth.relayed_addr().port(), port);
}

/// An allocation once the server has a relay port free again (coturn may release a
/// deallocated one a moment later), within 5 s, and how long that took.
async fn allocate_when_free(server: &Coturn, tcp: bool) -> (Allocation, Duration) {
    let started = Instant::now();
    loop {
        match Allocation::connect(&server.url(PASSWORD, tcp)).await {
            Ok(a) => return (a, started.elapsed()),
            Err(RelayError::Refused(508, _)) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("port not released: {e}"),
        }
    }
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_within_seconds() {
    let server = Coturn::start();
    for tcp in [false, true] {
        let started = Instant::now();
        let r = Allocation::connect(&server.url("not-the-password", tcp)).await;
        assert!(
            matches!(r, Err(RelayError::Auth)),
            "tcp={tcp}: {:?}",
            r.err()
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn unreachable_server_fails_within_the_bound() {
    let port = free_port();
    let url =
        warpgate::config::TurnServer::parse(&format!("turn://u:p@127.0.0.1:{port}")).expect("url");
    let started = Instant::now();
    let r = Allocation::connect(&url).await;
    assert!(
        matches!(r, Err(RelayError::Unreachable(_) | RelayError::Timeout)),
        "{:?}",
        r.err()
    );
    assert!(
        started.elapsed() <= warpgate::timing::TURN_ALLOCATE_TIMEOUT + Duration::from_millis(500)
    );
    // A UDP server that never answers (and no TCP listener): the UDP silence, then TCP refused.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let url =
        warpgate::config::TurnServer::parse(&format!("turn://u:p@127.0.0.1:{port}")).expect("url");
    let started = Instant::now();
    let r = Allocation::connect(&url).await;
    assert!(
        matches!(r, Err(RelayError::Unreachable(_))),
        "{:?}",
        r.err()
    );
    let took = started.elapsed();
    // TCP is refused after its head start; UDP may still answer, so it has its silence bound.
    assert!(took >= warpgate::timing::TURN_UDP_SILENCE, "{took:?}");
    assert!(took < warpgate::timing::TURN_ALLOCATE_TIMEOUT, "{took:?}");
}

#[tokio::test]
async fn a_dead_server_closes_the_allocation() {
    // Over TCP the connection says so at once: recv_from and send_to answer Closed.
    let mut server = Coturn::start();
    let mut a = allocate(&server, true).await;
    server.kill();
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), a.recv_from()).await;
    assert!(matches!(r, Ok(Err(RelayError::Closed))), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let peer = "127.0.0.1:9".parse().unwrap();
    assert_eq!(a.send_to(peer, b"x").await, Err(RelayError::Closed));
    assert_eq!(a.permit(LOOPBACK).await, Err(RelayError::Closed));
    a.close().await;
}

#[tokio::test]
async fn a_dead_server_closes_a_udp_allocation_on_the_next_send() {
    // Over UDP the server's host answers the next datagram with a port unreachable.
    let mut server = Coturn::start();
    let mut a = allocate(&server, false).await;
    let peer = "127.0.0.1:9".parse().unwrap();
    a.permit(LOOPBACK).await.expect("permission");
    server.kill();
    let started = Instant::now();
    let sender = a.sender();
    let closed = async {
        loop {
            let _ = sender.try_send_to(peer, b"still there?");
            tokio::select! {
                r = a.recv_from() => return r,
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    };
    let r = tokio::time::timeout(Duration::from_secs(5), closed).await;
    assert!(matches!(r, Ok(Err(RelayError::Closed))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(sender.is_closed());
}

#[tokio::test]
async fn an_allocation_takes_round_trips_not_the_crates_request_cadence() {
    // turn-client-proto spaces requests 50 ms apart; the driver does not wait for that, so a
    // loopback allocation (two round trips: the 401, then the authenticated request) is quick.
    let server = Coturn::start();
    let started = Instant::now();
    let a = allocate(&server, false).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(40), "{took:?}");
    // A permission and a channel binding right after: each one round trip.
    let started = Instant::now();
    a.permit(LOOPBACK).await.expect("permission");
    a.bind_channel("127.0.0.1:9".parse().unwrap())
        .await
        .expect("channel");
    assert!(
        started.elapsed() < Duration::from_millis(40),
        "{:?}",
        started.elapsed()
    );
    a.close().await;
}
