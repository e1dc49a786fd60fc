//! The UDP probing of one rendezvous, run once for every strategy that needs it: a
//! [`Prober`] on the kit's socket (towards the peer's candidates and its relayed address) and,
//! when this side has a relay, one on the relay (towards the peer's public candidates and its
//! relayed address). Each path the peer is heard on is published ([`Heard`]): `udp_punch` dials
//! the first direct one, `relay` the first relayed one, and the upgrade of a relayed link waits
//! for a direct one an answer confirmed.
//!
//! A peer heard through our relay gets a *virtual* address on the path socket (in 240.0.0.0/4,
//! which no real peer has), routed through the relay: quinn talks to it as to any address, and
//! the route can later move to the direct path without quinn noticing.
//!
//! Schedule: the punch window from the agreed instant; then, while `upgrade` is set and no
//! direct path is confirmed, on at a slower pace until [`UPGRADE_PROBING`] and a short burst
//! every [`UPGRADE_RETRY_EVERY`] after that. Probes are answered as long as the probing lives.
//! The task ends when [`Probing`] is dropped (with the rendezvous, or with the relayed link).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::kit::UdpSide;
use super::kit_relay::relayable;
use super::punch::random::{self, Counts, Spray};
use super::punch::udp::{Event, Prober};
use crate::link::paths::Route;
use crate::timing::{
    PUNCH_WINDOW, UPGRADE_PROBE_INTERVAL, UPGRADE_PROBING, UPGRADE_RETRY_EVERY,
    UPGRADE_RETRY_WINDOW,
};

/// Which of this side's sockets heard the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The kit's own UDP socket.
    Socket,
    /// This side's TURN allocation.
    Relay,
}

/// A path on which the peer was heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// Where the peer's datagrams came from (on our relay: its address as the relay saw it).
    pub from: SocketAddr,
    pub side: Side,
    /// An answer to one of our probes came back on this path: it works both ways.
    pub confirmed: bool,
    /// Whether the path runs through a relay (ours, or the peer's relayed address).
    pub relayed: bool,
    /// Where quinn sends for this path: `from`, or on our relay the virtual address routed to it.
    pub quic_addr: SocketAddr,
}

impl Heard {
    /// A path straight between the two sockets, confirmed both ways.
    pub fn is_direct_confirmed(&self) -> bool {
        !self.relayed && self.confirmed
    }
}

/// What to probe.
pub struct Plan {
    /// This side's probe token and the peer's ([`super::rendezvous::Role::token`]).
    pub own_token: String,
    pub peer_token: String,
    /// The peer's direct candidates (empty when only the relay is allowed).
    pub peer_direct: Vec<SocketAddr>,
    /// The peer's relayed addresses.
    pub peer_relayed: Vec<SocketAddr>,
    pub fire_at: Instant,
    /// Keep looking for a direct path after the punch window (a relayed link may move to it).
    pub upgrade: bool,
    /// `random_probe`'s easy side, when this side is it.
    pub spray: Option<Spray>,
}

/// What `random_probe`'s spray heard and sent so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sprayed {
    /// Every source the peer was heard from, first first.
    pub heard: Vec<SocketAddr>,
    pub counts: Counts,
}

/// The running probing of one rendezvous.
pub struct Probing {
    heard: watch::Receiver<Vec<Heard>>,
    sprayed: Option<watch::Receiver<Sprayed>>,
    _task: AbortOnDropHandle<()>,
}

impl Probing {
    pub fn start(udp: Arc<UdpSide>, plan: Plan) -> Self {
        let (tx, heard) = watch::channel(Vec::new());
        let (spray_tx, sprayed) = watch::channel(Sprayed::default());
        let sprayed = plan.spray.is_some().then_some(sprayed);
        let task = tokio::spawn(run(udp, plan, tx, spray_tx));
        Self {
            heard,
            sprayed,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// What the spray heard and sent, when there is one.
    pub fn sprayed(&self) -> Option<watch::Receiver<Sprayed>> {
        self.sprayed.clone()
    }

    /// Whether the spray heard the peer from `source`, waiting up to `within` for it to: a
    /// datagram that arrived just before may not have been read yet. `false` at once without
    /// a spray, or when the probing heard `source` itself.
    pub async fn sprayed_from(&self, source: SocketAddr, within: Duration) -> bool {
        let Some(mut sprayed) = self.sprayed.clone() else {
            return false;
        };
        if self.heard.borrow().iter().any(|h| h.from == source) {
            return false;
        }
        let found = async {
            sprayed
                .wait_for(|s| s.heard.contains(&source))
                .await
                .is_ok()
        };
        tokio::time::timeout(within, found).await.unwrap_or(false)
    }

    /// Every path heard so far, updated as more are.
    pub fn heard(&self) -> watch::Receiver<Vec<Heard>> {
        self.heard.clone()
    }

    /// The first path heard that `wanted` accepts, once there is one; `None` if the probing
    /// stopped (its socket closed).
    pub async fn first(&self, wanted: impl Fn(&Heard) -> bool) -> Option<Heard> {
        let mut heard = self.heard.clone();
        let found = heard.wait_for(|all| all.iter().any(&wanted)).await.ok()?;
        found.iter().find(|h| wanted(h)).copied()
    }
}

/// The virtual address of the `n`th peer heard through our relay.
fn virtual_addr(n: u16, port: u16) -> SocketAddr {
    let [hi, lo] = n.to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(240, 0, hi, lo), port))
}

/// Probes until dropped; see the module comment.
async fn run(
    udp: Arc<UdpSide>,
    mut plan: Plan,
    heard: watch::Sender<Vec<Heard>>,
    sprayed: watch::Sender<Sprayed>,
) {
    let mut spray = plan.spray.take();
    let mut spray_reported = false;
    let mut stun = udp.stun.lock().await;
    let relay = udp.relay.as_ref();
    let mut relay_probes = match relay {
        Some(r) => Some(r.probes.lock().await),
        None => None,
    };
    let new_prober = |peers: Vec<SocketAddr>| {
        Prober::new(
            plan.own_token.clone(),
            plan.peer_token.clone(),
            peers,
            plan.fire_at.into_std(),
            PUNCH_WINDOW,
        )
    };
    let mut socket_peers = plan.peer_direct.clone();
    socket_peers.extend(&plan.peer_relayed);
    let mut direct = new_prober(socket_peers);
    let relay_peers: Vec<SocketAddr> = plan
        .peer_direct
        .iter()
        .chain(&plan.peer_relayed)
        .copied()
        .filter(|a| relayable(a.ip()))
        .collect();
    let mut via_relay = relay.map(|_| new_prober(relay_peers.clone()));
    // Permissions for the peer's addresses take a round trip to the TURN server; probes
    // through the relay before then are dropped there and repeated.
    let permits = async {
        if let Some(relay) = relay {
            let mut ips: Vec<_> = relay_peers.iter().map(|a| a.ip()).collect();
            ips.sort();
            ips.dedup();
            relay.permit(ips).await;
        }
    };
    tokio::pin!(permits);
    let mut permitted = relay.is_none();
    let mut virtuals: u16 = 0;
    let mut next_burst: Option<Instant> = None;
    tokio::time::sleep_until(plan.fire_at).await;
    loop {
        let now = Instant::now();
        direct.handle_timeout(now.into_std());
        while let Some(t) = direct.poll_transmit() {
            if let Err(e) = stun.send(t.to, &t.bytes) {
                tracing::trace!(to = %t.to, "probe not sent: {e}");
            }
        }
        if let (Some(prober), Some(relay)) = (via_relay.as_mut(), relay) {
            prober.handle_timeout(now.into_std());
            while let Some(t) = prober.poll_transmit() {
                if relay.sender.try_send_to(t.to, &t.bytes).is_err() {
                    break;
                }
            }
        }
        while let Some(Event::Heard { from, confirmed }) = direct.poll_event() {
            let relayed = plan.peer_relayed.contains(&from);
            publish(&heard, Side::Socket, from, confirmed, relayed, from);
        }
        if let Some(spray) = spray.as_mut() {
            drive_spray(spray, &stun, &sprayed, now, &mut spray_reported);
        }
        if let (Some(prober), Some(relay)) = (via_relay.as_mut(), relay) {
            while let Some(Event::Heard { from, confirmed }) = prober.poll_event() {
                let known = heard
                    .borrow()
                    .iter()
                    .find(|h| h.side == Side::Relay && h.from == from)
                    .map(|h| h.quic_addr);
                let quic_addr = known.unwrap_or_else(|| {
                    virtuals = virtuals.wrapping_add(1);
                    let addr = virtual_addr(virtuals, from.port());
                    let route = Route::Relayed {
                        relay: Arc::new(relay.sender.clone()),
                        peer: from,
                    };
                    udp.paths.switch(addr, route);
                    addr
                });
                publish(&heard, Side::Relay, from, confirmed, true, quic_addr);
                if confirmed {
                    // One confirmed path through the relay is all it is needed for.
                    prober.rearm(now.into_std(), Duration::ZERO, UPGRADE_PROBE_INTERVAL);
                }
            }
        }
        let direct_found = heard.borrow().iter().any(Heard::is_direct_confirmed);
        if plan.upgrade && !direct_found && direct.poll_timeout().is_none() {
            let since = now.saturating_duration_since(plan.fire_at);
            if since < UPGRADE_PROBING {
                direct.rearm(
                    now.into_std(),
                    UPGRADE_PROBING - since,
                    UPGRADE_PROBE_INTERVAL,
                );
            } else {
                match next_burst {
                    Some(at) if at <= now => {
                        next_burst = None;
                        direct.rearm(
                            now.into_std(),
                            UPGRADE_RETRY_WINDOW,
                            crate::timing::PROBE_INTERVAL,
                        );
                    }
                    Some(_) => {}
                    None => next_burst = Some(now + UPGRADE_RETRY_EVERY),
                }
            }
        }
        let wake = [
            direct.poll_timeout().map(Instant::from_std),
            via_relay
                .as_ref()
                .and_then(|p| p.poll_timeout())
                .map(Instant::from_std),
            next_burst,
            spray
                .as_ref()
                .and_then(Spray::poll_timeout)
                .map(Instant::from_std),
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            () = sleep_until(wake) => {}
            datagram = stun.incoming.recv() => {
                let Some((data, from)) = datagram else {
                    tracing::debug!("probing: the punching socket closed");
                    return;
                };
                direct.handle_datagram(Instant::now().into_std(), from, &data);
                if let Some(spray) = spray.as_mut() {
                    spray.handle_datagram(from, &data);
                }
            }
            Some((from, data)) = async {
                match relay_probes.as_mut() {
                    Some(probes) => probes.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(prober) = via_relay.as_mut() {
                    prober.handle_datagram(Instant::now().into_std(), from, &data);
                }
            }
            () = &mut permits, if !permitted => permitted = true,
        }
    }
}

/// Sends the spray's due probes and answers, publishes what it heard, and says once what it
/// sent when it stops probing (heard the peer, or spent its budget).
fn drive_spray(
    spray: &mut Spray,
    stun: &crate::link::demux::StunSide,
    sprayed: &watch::Sender<Sprayed>,
    now: Instant,
    reported: &mut bool,
) {
    spray.handle_timeout(now.into_std());
    while let Some(t) = spray.poll_transmit() {
        if let Err(e) = stun.send(t.to, &t.bytes) {
            tracing::trace!(to = %t.to, "random probe not sent: {e}");
        }
    }
    let mut new = Vec::new();
    while let Some(random::Event::Heard { from, .. }) = spray.poll_event() {
        new.push(from);
    }
    let counts = spray.counts();
    sprayed.send_if_modified(|s| {
        let before = s.clone();
        for from in new {
            if !s.heard.contains(&from) {
                tracing::debug!(%from, "random_probe: the spray heard the peer");
                s.heard.push(from);
            }
        }
        s.counts = counts;
        *s != before
    });
    if spray.poll_timeout().is_none() && !*reported {
        *reported = true;
        tracing::debug!(
            sockets = counts.sockets,
            probes = counts.probes,
            answers = counts.answers,
            heard = !sprayed.borrow().heard.is_empty(),
            "random_probe: easy side done probing"
        );
    }
}

/// Adds a heard path, or marks a known one confirmed.
fn publish(
    heard: &watch::Sender<Vec<Heard>>,
    side: Side,
    from: SocketAddr,
    confirmed: bool,
    relayed: bool,
    quic_addr: SocketAddr,
) {
    tracing::debug!(%from, ?side, confirmed, relayed, "probing: peer heard");
    heard.send_modify(
        |all| match all.iter_mut().find(|h| h.side == side && h.from == from) {
            Some(known) => known.confirmed |= confirmed,
            None => all.push(Heard {
                from,
                side,
                confirmed,
                relayed,
                quic_addr,
            }),
        },
    );
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_addresses_are_distinct_and_never_real() {
        let a = virtual_addr(1, 4000);
        let b = virtual_addr(2, 4000);
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "240.0.0.1:4000");
        assert_eq!(virtual_addr(0x1234, 9).to_string(), "240.0.18.52:9");
    }
}
