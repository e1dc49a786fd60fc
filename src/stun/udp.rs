//! The tokio driver for STUN over UDP: runs any number of binding transactions at once on the
//! caller's socket (so the mapping measured is the one the caller keeps using), with
//! stun-proto's agent owning the transaction table and the retransmission timers.
//!
//! Every wait is bounded by the [`Timing`] schedule. Datagrams that are not STUN, or answer no
//! transaction of ours, are dropped as RFC 8489 says; a transaction that then times out says
//! what its server sent instead, so a garbage-answering server is told from a silent one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use stun_proto::agent::{StunAgent, StunAgentPollRet};
use stun_proto::types::message::TransactionId;
use stun_proto::types::TransportType;
use stun_proto::Instant;
use tokio::net::UdpSocket;

use super::codec::{self, Binding, Change};
use super::{Counter, StunError, Timing};

/// Largest datagram read; STUN answers are far smaller.
const RECV_BUFFER: usize = 2048;

/// One binding transaction to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub to: SocketAddr,
    pub change: Change,
}

/// What became of a [`Probe`]: the binding and the time from first transmission to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub probe: Probe,
    pub outcome: Result<Binding, StunError>,
    pub rtt: Option<Duration>,
    /// Where the answer came from (RFC 5780 tests check the server really changed it).
    pub from: Option<SocketAddr>,
}

/// A finished transaction's outcome and round-trip time, by probe index.
type Outcome = Option<(
    Result<Binding, StunError>,
    Option<Duration>,
    Option<SocketAddr>,
)>;

struct Pending {
    index: usize,
    started: std::time::Instant,
}

/// Runs every probe on `socket` at once and returns their results in the same order, after at
/// most `timing.total()` (plus scheduling slack).
pub async fn run(
    socket: &UdpSocket,
    probes: &[Probe],
    timing: Timing,
    counter: &Counter,
) -> Vec<ProbeResult> {
    let mut outcomes: Vec<Outcome> = vec![None; probes.len()];
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            return finish(probes, outcomes, Some(StunError::io(&e)));
        }
    };
    let base = std::time::Instant::now();
    let now = || Instant::from_std(base);
    let mut agent = StunAgent::builder(TransportType::Udp, local)
        .request_retransmits(
            timing.initial_rto,
            Duration::MAX,
            timing.transmissions,
            timing.final_wait,
        )
        .build();
    let mut pending: HashMap<TransactionId, Pending> = HashMap::new();
    let mut garbage: HashMap<SocketAddr, StunError> = HashMap::new();

    for (index, probe) in probes.iter().enumerate() {
        let sent = match codec::binding_request(probe.change) {
            Ok((id, bytes)) => match agent.send_request(bytes, probe.to, now()) {
                Ok(t) => {
                    let data = t.data.to_vec();
                    send(socket, &data, probe.to, counter)
                        .await
                        .map(|()| id)
                        .inspect_err(|_| {
                            if let Some(mut r) = agent.mut_request_transaction(id) {
                                r.cancel();
                            }
                        })
                }
                Err(e) => Err(StunError::Encode(e.to_string())),
            },
            Err(e) => Err(e),
        };
        match sent {
            Ok(id) => {
                pending.insert(
                    id,
                    Pending {
                        index,
                        started: std::time::Instant::now(),
                    },
                );
            }
            Err(e) => outcomes[index] = Some((Err(e), None, None)),
        }
    }

    let mut buf = vec![0u8; RECV_BUFFER];
    // A hard stop in case the agent's timers misbehave: never wait past the schedule.
    let hard_stop = tokio::time::Instant::now() + timing.total() + Duration::from_millis(100);
    while !pending.is_empty() {
        // Retransmissions that are due.
        let mut due = Vec::new();
        while let Some(t) = agent.poll_transmit(now()) {
            due.push((t.data.to_vec(), t.to));
        }
        for (data, to) in due {
            // A failed retransmission is not final: the timer still decides.
            let _ = send(socket, &data, to, counter).await;
        }
        let wait_until = loop {
            match agent.poll(now()) {
                StunAgentPollRet::TransactionTimedOut(id)
                | StunAgentPollRet::TransactionCancelled(id) => {
                    if let Some(p) = pending.remove(&id) {
                        let to = probes[p.index].to;
                        let err = garbage
                            .get(&to)
                            .cloned()
                            .unwrap_or(StunError::Timeout(p.started.elapsed().as_millis() as u64));
                        outcomes[p.index] = Some((Err(err), None, None));
                    }
                }
                StunAgentPollRet::WaitUntil(at) => break at.to_std(base),
            }
        };
        if pending.is_empty() {
            break;
        }
        let wait_until = tokio::time::Instant::from_std(wait_until).min(hard_stop);
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                let Ok(msg) = codec::parse(&buf[..n]) else {
                    garbage.insert(from, codec::parse(&buf[..n]).err().unwrap_or(
                        StunError::Garbage("unreadable".into())));
                    continue;
                };
                if !msg.is_response() {
                    continue;
                }
                let Some(p) = pending.remove(&msg.transaction_id()) else { continue };
                agent.handle_stun_message_with_time(&msg, from, now());
                let outcome = codec::read_response(&msg);
                outcomes[p.index] = Some((outcome, Some(p.started.elapsed()), Some(from)));
            }
            _ = tokio::time::sleep_until(wait_until) => {
                if tokio::time::Instant::now() >= hard_stop {
                    for (_, p) in pending.drain() {
                        outcomes[p.index] = Some((Err(StunError::Timeout(
                            p.started.elapsed().as_millis() as u64)), None, None));
                    }
                }
            }
        }
    }
    finish(probes, outcomes, None)
}

fn finish(
    probes: &[Probe],
    outcomes: Vec<Outcome>,
    fallback: Option<StunError>,
) -> Vec<ProbeResult> {
    probes
        .iter()
        .zip(outcomes)
        .map(|(probe, o)| {
            let (outcome, rtt, from) = o.unwrap_or_else(|| {
                (
                    Err(fallback
                        .clone()
                        .unwrap_or_else(|| StunError::Io("not run".into()))),
                    None,
                    None,
                )
            });
            ProbeResult {
                probe: *probe,
                outcome,
                rtt,
                from,
            }
        })
        .collect()
}

async fn send(
    socket: &UdpSocket,
    data: &[u8],
    to: SocketAddr,
    counter: &Counter,
) -> Result<(), StunError> {
    counter.add(1);
    socket
        .send_to(data, to)
        .await
        .map(|_| ())
        .map_err(|e| StunError::io(&e))
}

/// Whether a packet sent from `from` to `target` (the public mapping of `socket`) comes back in
/// on `socket`: the NAT hairpins. Sends a binding request a few times within `wait`.
pub async fn hairpin(
    socket: &UdpSocket,
    from: &UdpSocket,
    target: SocketAddr,
    wait: Duration,
    counter: &Counter,
) -> Result<bool, StunError> {
    let (id, bytes) = codec::binding_request(Change::NONE)?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut next_send = tokio::time::Instant::now();
    let resend = wait / 3;
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        if tokio::time::Instant::now() >= next_send {
            send(from, &bytes, target, counter).await?;
            next_send += resend;
        }
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, _)) = received else { continue };
                if codec::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == id) {
                    return Ok(true);
                }
            }
            _ = tokio::time::sleep_until(next_send.min(deadline)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against tiny servers on loopback: an answering one, a silent one, a garbage one.
    use super::*;
    use stun_proto::types::attribute::XorMappedAddress;
    use stun_proto::types::message::{Message, MessageWriteVec};
    use stun_proto::types::prelude::*;

    async fn server(kind: &'static str) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let mut seen = 0;
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                seen += 1;
                let reply = match kind {
                    "garbage" => b"\x01\x01\x00".to_vec(),
                    // Answers only the second transmission: exercises retransmission.
                    "lossy" if seen == 1 => continue,
                    "silent" => continue,
                    _ => {
                        let req = Message::from_bytes(&buf[..n]).unwrap();
                        let mut r = Message::builder_success(&req, MessageWriteVec::new());
                        r.add_attribute(&XorMappedAddress::new(from, req.transaction_id()))
                            .unwrap();
                        r.finish()
                    }
                };
                let _ = s.send_to(&reply, from).await;
            }
        });
        addr
    }

    const FAST: Timing = Timing {
        initial_rto: Duration::from_millis(50),
        transmissions: 3,
        final_wait: Duration::from_millis(100),
    };

    #[tokio::test]
    async fn several_servers_at_once_each_reported() {
        let good = server("good").await;
        let lossy = server("lossy").await;
        let silent = server("silent").await;
        let garbage = server("garbage").await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = socket.local_addr().unwrap();
        let probes: Vec<Probe> = [good, lossy, silent, garbage]
            .iter()
            .map(|to| Probe {
                to: *to,
                change: Change::NONE,
            })
            .collect();
        let counter = Counter::default();
        let started = std::time::Instant::now();
        let r = run(&socket, &probes, FAST, &counter).await;
        assert!(started.elapsed() < FAST.total() + Duration::from_millis(200));
        assert_eq!(r[0].outcome.as_ref().unwrap().mapped, local);
        assert_eq!(r[1].outcome.as_ref().unwrap().mapped, local);
        assert!(matches!(r[2].outcome, Err(StunError::Timeout(_))), "{r:?}");
        assert!(matches!(r[3].outcome, Err(StunError::Garbage(_))), "{r:?}");
        // good 1, lossy 2, silent 3, garbage 3.
        assert_eq!(counter.get(), 9);
    }

    #[tokio::test]
    async fn unsendable_destination_is_an_error_not_a_hang() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let probes = [Probe {
            to: "[::1]:9".parse().unwrap(),
            change: Change::NONE,
        }];
        let r = run(&socket, &probes, FAST, &Counter::default()).await;
        assert!(matches!(r[0].outcome, Err(StunError::Io(_))), "{r:?}");
    }

    #[tokio::test]
    async fn hairpin_on_loopback_arrives() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = a.local_addr().unwrap();
        let c = Counter::default();
        assert!(hairpin(&a, &b, target, Duration::from_millis(300), &c)
            .await
            .unwrap());
    }
}
