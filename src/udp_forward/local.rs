//! The connector's side of UDP forwarding (`connect --local-udp`): one local UDP socket; each
//! source address that sends to it is a flow ([`super::flows`]); its datagrams go to the peer
//! tagged with the flow's id, and the peer's replies for that id go back to that source.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::carrier::{Carrier, Ending, Received, Sent};
use super::flows::{Flows, Outbound};
use super::{Counters, Report, UdpError, RECV_BUFFER};
use crate::link::limits::MAX_UDP_FLOWS;
use crate::link::Link;

/// Forwards datagrams between `socket` and the peer of `link` until the link ends (an error)
/// or `stop` is cancelled (then the session is abandoned with the shutdown reason; close the
/// link with it next). Flows idle for `idle` are forgotten.
pub async fn serve(
    link: &Link,
    socket: &UdpSocket,
    idle: Duration,
    stop: &CancellationToken,
) -> Report {
    let counters = Counters::default();
    let opened = tokio::select! {
        opened = Carrier::open(link) => opened,
        () = stop.cancelled() => return Report { totals: counters.totals(), ended: Ok(()) },
    };
    let mut carrier = match opened {
        Ok(carrier) => carrier,
        Err(e) => {
            return Report {
                totals: counters.totals(),
                ended: Err(e),
            }
        }
    };
    tracing::debug!(mode = ?carrier.mode(), "udp session open");
    let mut side = Local {
        socket,
        flows: Flows::new(MAX_UDP_FLOWS, idle),
        counters: &counters,
        warned_full: false,
    };
    let mut buf = Vec::with_capacity(RECV_BUFFER);
    let ended = loop {
        let timer = side.flows.poll_timeout();
        tokio::select! {
            got = socket.recv_buf_from(&mut buf) => {
                match got {
                    Ok((_, from)) => side.outbound(&carrier, &buf, from),
                    // ICMP errors about earlier sends, say: nothing to do but go on.
                    Err(e) => tracing::debug!("local udp receive: {e}"),
                }
                buf.clear();
            }
            got = carrier.recv() => match got {
                Received::Datagram(flow, payload) => side.inbound(flow, &payload),
                Received::Malformed => Counters::add(&counters.dropped),
                Received::Ended(Ending::PeerClosed(why) | Ending::Lost(why)) => {
                    break Err(UdpError::Ended(why));
                }
            },
            () = sleep_until(timer), if timer.is_some() => {
                for (flow, from) in side.flows.handle_timeout(Instant::now()) {
                    tracing::debug!(flow, %from, "udp flow idle: forgotten");
                }
            }
            () = stop.cancelled() => {
                carrier.shutdown().await;
                break Ok(());
            }
        }
    };
    counters.settle(&carrier);
    Report {
        totals: counters.totals(),
        ended,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The connector's flows and counters around its one socket.
struct Local<'a> {
    socket: &'a UdpSocket,
    flows: Flows<SocketAddr>,
    counters: &'a Counters,
    /// Whether the full flow table was warned about already.
    warned_full: bool,
}

impl Local<'_> {
    /// A datagram from a local source: to the peer under its flow's id.
    fn outbound(&mut self, carrier: &Carrier, payload: &[u8], from: SocketAddr) {
        let flow = match self.flows.outbound(&from, Instant::now()) {
            Outbound::Flow { id, new } => {
                if new {
                    Counters::add(&self.counters.flows);
                    tracing::debug!(flow = id, %from, "udp flow started");
                }
                id
            }
            Outbound::Full => {
                Counters::add(&self.counters.refused);
                if !std::mem::replace(&mut self.warned_full, true) {
                    tracing::warn!(
                        "{MAX_UDP_FLOWS} UDP flows are open: datagrams from new sources (such as \
                         {from}) are dropped until a flow has been idle long enough to be forgotten"
                    );
                }
                return;
            }
        };
        if payload.len() >= RECV_BUFFER {
            // Filled the buffer: it may have been cut, so it is not sent.
            self.oversized(flow, from, payload.len(), RECV_BUFFER - 1);
            return;
        }
        match carrier.outlet.send(flow, payload) {
            Sent::Sent => self.counters.sent(payload.len()),
            Sent::TooLarge { max } => self.oversized(flow, from, payload.len(), max),
            Sent::Full => Counters::add(&self.counters.dropped),
            // The session is ending; the carrier says why next.
            Sent::Closed => {}
        }
    }

    fn oversized(&mut self, flow: u64, from: SocketAddr, len: usize, max: usize) {
        Counters::add(&self.counters.oversized);
        if self.flows.warn_once(flow) {
            tracing::warn!(
                flow,
                %from,
                "a {len}-byte UDP datagram does not fit the link (at most {max} bytes now): \
                 dropped whole, never truncated; more on this flow are only counted"
            );
        }
    }

    /// A datagram from the peer: to the local source of its flow, if the flow is still known.
    fn inbound(&mut self, flow: u64, payload: &[u8]) {
        self.counters.received(payload.len());
        let Some(&to) = self.flows.inbound(flow, Instant::now()) else {
            Counters::add(&self.counters.dropped);
            return;
        };
        // Not tokio's `try_send_to`, which waits on the reactor's word that the socket is
        // writable (see target::send_now).
        match socket2::SockRef::from(self.socket).send_to(payload, &to.into()) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                Counters::add(&self.counters.dropped);
            }
            Err(e) => {
                Counters::add(&self.counters.dropped);
                tracing::debug!(flow, %to, "local udp send: {e}");
            }
        }
    }
}
