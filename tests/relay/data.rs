//! Datagrams between two allocations through the relay, and refreshes keeping them alive.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::support::{allocate, pair, recv, Coturn, WAIT};

#[tokio::test]
async fn two_allocations_exchange_datagrams_both_ways() {
    let server = Coturn::start();
    // One over UDP, one over TCP: both framings of the server connection.
    let mut a = allocate(&server, false).await;
    let mut b = allocate(&server, true).await;
    pair(&a, &b).await;
    a.send_to(b.relayed_addr(), b"hello from a").await.unwrap();
    let (from, data) = recv(&mut b).await;
    assert_eq!(
        (from, data.as_slice()),
        (a.relayed_addr(), &b"hello from a"[..])
    );
    b.send_to(a.relayed_addr(), b"and from b").await.unwrap();
    let (from, data) = recv(&mut a).await;
    assert_eq!(
        (from, data.as_slice()),
        (b.relayed_addr(), &b"and from b"[..])
    );
    // Both went as ChannelData (4 bytes of framing), not as Send indications.
    for x in [&a, &b] {
        assert_eq!(x.stats().via_channel.load(Relaxed), 1);
    }
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_thousand_datagrams_through_the_relay() {
    let server = Coturn::start();
    let a = allocate(&server, false).await;
    let mut b = allocate(&server, false).await;
    pair(&a, &b).await;
    let target = b.relayed_addr();
    const COUNT: u32 = 1000;
    const SIZE: usize = 1200;
    const WINDOW: u32 = 32;
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = arrived.clone();
    let receiver = tokio::spawn(async move {
        let mut got = 0u32;
        let mut intact = true;
        let mut last = Instant::now();
        while let Ok(Ok((_, data))) =
            tokio::time::timeout(Duration::from_millis(500), b.recv_from()).await
        {
            got += 1;
            counter.store(got, Relaxed);
            last = Instant::now();
            intact &= data.len() == SIZE && data[4..].iter().all(|&x| x == data[0]);
            if got == COUNT {
                break;
            }
        }
        let dropped = b.stats().dropped.load(Relaxed);
        (got, intact, last, dropped)
    });
    let started = Instant::now();
    for i in 0..COUNT {
        let mut data = vec![(i % 251) as u8; SIZE];
        data[..4].copy_from_slice(&i.to_be_bytes());
        data[0] = (i % 251) as u8;
        a.send_to(target, &data).await.unwrap();
        // At most WINDOW in flight, as a congestion-controlled sender would keep: a burst of
        // 1000 only measures the loopback socket buffers. A lost datagram holds it 20 ms.
        let deadline = Instant::now() + Duration::from_millis(20);
        while i + 1 - arrived.load(Relaxed) > WINDOW && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let (got, intact, last, dropped) = tokio::time::timeout(WAIT, receiver).await.unwrap().unwrap();
    let took = last - started;
    eprintln!(
        "relay: {got}/{COUNT} datagrams of {SIZE} bytes arrived in {:.0} ms ({:.0} datagrams/s, \
         window {WINDOW}, {dropped} dropped by a full queue, {} unsendable)",
        took.as_secs_f64() * 1000.0,
        f64::from(got) / took.as_secs_f64(),
        a.stats().unsendable.load(Relaxed)
    );
    assert!(intact, "contents intact");
    assert!(got >= COUNT * 9 / 10, "only {got}/{COUNT} arrived");
}

#[tokio::test]
async fn refreshes_keep_the_allocation_past_its_lifetime() {
    // coturn grants the 1800 s the client asks for (and turn-client-proto 0.7 ignores a
    // refresh granting less than 600 s, so a short server lifetime cannot stand in). The
    // clients' clocks are moved forward 30 s at a time to 2100 s, so every refresh
    // (allocation, permissions at 240 s, channels at 540 s) falls due and must be answered on
    // the way, or the client drops what expired.
    let server = Coturn::start();
    let mut a = allocate(&server, false).await;
    let mut b = allocate(&server, true).await;
    pair(&a, &b).await;
    let before = (
        a.stats().refreshes.load(Relaxed),
        b.stats().refreshes.load(Relaxed),
    );
    for _ in 0..70 {
        a.skew_clock(Duration::from_secs(30)).await;
        b.skew_clock(Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = (
        a.stats().refreshes.load(Relaxed),
        b.stats().refreshes.load(Relaxed),
    );
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "{before:?} -> {after:?}"
    );
    a.send_to(b.relayed_addr(), b"still here").await.unwrap();
    let (from, data) = recv(&mut b).await;
    assert_eq!(
        (from, data.as_slice()),
        (a.relayed_addr(), &b"still here"[..])
    );
    b.send_to(a.relayed_addr(), b"me too").await.unwrap();
    let (from, data) = recv(&mut a).await;
    assert_eq!((from, data.as_slice()), (b.relayed_addr(), &b"me too"[..]));
}
