//! `random_probe`: a direct path between a symmetric NAT that allocates ports at random (the
//! *hard* side) and one with endpoint-independent mapping (the *easy* side: port- or
//! address-restricted, full cone, CGNAT, UPnP), by the birthday paradox ([`super::punch::random`]
//! has the arithmetic and the two handshakes, sans-IO).
//!
//! Roles come from the NAT facts in the offer and the answer ([`half`]): a side whose punching
//! socket's mapping was random while the other's was kept is hard. Anything else is left to
//! the others: two symmetric NATs to the relay, sequential allocation to `udp_punch`'s port
//! prediction, unknown mappings to whatever gets through.
//!
//! - The hard side opens up to 256 sockets of its own and probes the easy side's mapped address
//!   (its kit socket's public mapping) from each ([`fan_out`]). On the first socket the peer is
//!   heard on, every other socket is closed at once and QUIC is dialled from that one to where
//!   the peer was heard, whichever side is the connector: the pair is the hard side's choice,
//!   so the two never disagree on it.
//! - The easy side sprays probes at random ports of the hard side's public IP from its kit
//!   socket (the [`super::probing`] task drives the spray there) and accepts the QUIC
//!   connection on its kit endpoint.
//!
//! What each side sent is logged at debug level (`random_probe: … sockets, probes, answers`).
//! The relay waits [`RELAY_GRACE_RANDOM_PROBE`] for it ([`super::relay`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::punch::random::{self, Counts, Fan, Spray, MAX_PROBES};
use super::rendezvous::{Agreed, Rendezvous, Role};
use super::{Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{quic, Link, LinkError, Transport};
use crate::nat::SocketMapping;
use crate::timing::{HANDSHAKE_TIMEOUT, PUNCH_WINDOW};

pub struct RandomProbe;

/// Which half of `random_probe` a side plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    /// Behind the symmetric NAT: many sockets, one destination.
    Hard,
    /// Behind the endpoint-independent one: one socket, random ports.
    Easy,
}

/// This side's half, from what its NAT did with its punching socket (`own`) and what the peer's
/// did (`peer`): only random against kept.
pub fn half(own: SocketMapping, peer: SocketMapping) -> Option<Half> {
    match (own, peer) {
        (SocketMapping::Random, SocketMapping::Kept) => Some(Half::Hard),
        (SocketMapping::Kept, SocketMapping::Random) => Some(Half::Easy),
        _ => None,
    }
}

/// This side's half in `r`, when `random_probe` was asked for and the peer's public address is
/// known (the easy side's is what the hard side probes, the hard side's IP what the easy side
/// sprays).
fn planned(
    strategies: &[String],
    own: SocketMapping,
    peer: SocketMapping,
    peer_public: &[SocketAddr],
) -> Option<Half> {
    let asked = strategies.iter().any(|s| s == "random_probe");
    (asked && !peer_public.is_empty())
        .then(|| half(own, peer))
        .flatten()
}

/// This side's half of a rendezvous, when `random_probe` is tried in it.
pub fn half_in(r: &Rendezvous) -> Option<Half> {
    planned(&r.strategies, r.kit.mapping, r.peer_mapping, &r.peer_public)
}

/// The probe token of `role` in `random_probe`: distinct from `udp_punch`'s, so neither
/// answers the other's probes on the kit socket.
pub fn token(role: Role, nonce: &[u8; 16]) -> String {
    format!("r{}", role.token(nonce))
}

/// The easy side's spray for a rendezvous being agreed, when this side is the easy side.
pub(super) fn spray(a: &Agreed) -> Option<Spray> {
    let planned = planned(&a.strategies, a.kit.mapping, a.peer_mapping, &a.peer_public);
    if planned != Some(Half::Easy) {
        return None;
    }
    let ip = a.peer_public.first()?.ip();
    let ports = random::random_ports(MAX_PROBES, || {
        rand_core::RngCore::next_u64(&mut rand_core::OsRng)
    });
    Some(Spray::new(
        token(a.role, &a.nonce),
        token(a.role.other(), &a.nonce),
        ip,
        ports,
        a.fire_at.into_std(),
    ))
}

impl Strategy for RandomProbe {
    fn name(&self) -> &'static str {
        "random_probe"
    }

    fn phase(&self) -> Phase {
        Phase::Punch
    }

    fn signalled(&self) -> bool {
        true
    }

    /// Planned from the punch instant, beside `udp_punch`, only when the facts make this side
    /// hard or easy: a pair `udp_punch` can serve is not slowed down by it (it costs packets,
    /// not time), and no other pair sees it.
    fn plan(&self, _: &Address, rendezvous: Option<&Rendezvous>, _: &LocalFacts) -> Vec<Attempt> {
        match rendezvous.and_then(half_in) {
            Some(_) => vec![Attempt {
                strategy: self.name(),
                transport: Transport::Quic,
                remote: None,
                delay: Duration::ZERO,
            }],
            None => Vec::new(),
        }
    }

    fn run(&self, _: Attempt, ctx: Arc<Context>) -> LinkFuture {
        async move { probe(ctx.rendezvous()?).await }.boxed()
    }

    fn respond(&self, rendezvous: &Arc<Rendezvous>) -> Vec<LinkFuture> {
        match half_in(rendezvous) {
            Some(_) => vec![probe(rendezvous.clone()).boxed()],
            None => Vec::new(),
        }
    }
}

/// Either side's half: see the module comment.
async fn probe(r: Arc<Rendezvous>) -> Result<Link, LinkError> {
    match half_in(&r).ok_or(LinkError::Protocol("random_probe does not fit this pair"))? {
        Half::Hard => hard(&r).await,
        Half::Easy => easy(&r).await,
    }
}

/// The hard side: fans out, then dials QUIC from the winning socket.
async fn hard(r: &Rendezvous) -> Result<Link, LinkError> {
    let target = *r
        .peer_public
        .first()
        .ok_or(LinkError::Protocol("no public address of the peer"))?;
    let fan = Fan::new(
        token(r.role, &r.nonce),
        token(r.role.other(), &r.nonce),
        target,
        r.fire_at.into_std(),
    );
    let won = fan_out(fan, open_socket, r.fire_at + PUNCH_WINDOW).await?;
    let started = r.fire_at.elapsed().as_millis() as u64;
    tracing::debug!(remote = %won.peer, after_ms = started, "random_probe: starting QUIC on the winning socket");
    let endpoint = quic::endpoint(won.socket.into_std()?, None)?;
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        quic::connect(endpoint, true, won.peer, &r.creds, r.peer),
    )
    .await
    .map_err(|_| LinkError::Timeout("QUIC handshake"))?
}

/// The easy side: the spray runs in the probing; the peer dials from its winning socket.
async fn easy(r: &Rendezvous) -> Result<Link, LinkError> {
    let deadline = r.fire_at + PUNCH_WINDOW + HANDSHAKE_TIMEOUT;
    let link = tokio::time::timeout_at(deadline, r.accept_sprayed())
        .await
        .map_err(|_| LinkError::Timeout("random_probe: the peer never connected"))??;
    if let Some(sprayed) = r.probing.as_ref().and_then(|p| p.sprayed()) {
        let counts = sprayed.borrow().counts;
        tracing::debug!(
            sockets = counts.sockets,
            probes = counts.probes,
            answers = counts.answers,
            remote = %link.info().remote,
            "random_probe: easy side connected"
        );
    }
    Ok(link)
}

/// The socket the hard side kept, where it heard the peer from, and what it sent.
pub struct Won {
    pub socket: UdpSocket,
    pub peer: SocketAddr,
    pub counts: Counts,
}

/// A fresh socket for the fan (IPv4, any port).
fn open_socket() -> std::io::Result<UdpSocket> {
    let socket = crate::net::bind_udp((Ipv4Addr::UNSPECIFIED, 0).into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Drives `fan` over sockets made by `open` until the peer is heard on one, then closes the
/// others at once and returns that one. Gives up at `deadline`.
pub async fn fan_out(
    mut fan: Fan,
    open: impl Fn() -> std::io::Result<UdpSocket>,
    deadline: Instant,
) -> Result<Won, LinkError> {
    let mut sockets: Vec<UdpSocket> = Vec::new();
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(t) = fan.poll_transmit() {
            if t.socket >= sockets.len() {
                match open() {
                    Ok(socket) => sockets.push(socket),
                    Err(e) => {
                        tracing::debug!(
                            opened = sockets.len(),
                            "random_probe: no more sockets: {e}"
                        );
                        fan.open_failed(t.socket);
                        continue;
                    }
                }
            }
            let Some(socket) = sockets.get(t.socket) else {
                continue;
            };
            // Straight to the kernel: tokio's `try_send_to` on a socket its reactor has not yet
            // seen writable (every fresh one) drops the datagram with WouldBlock unsent.
            match socket2::SockRef::from(socket).send_to(&t.bytes, &t.to.into()) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => tracing::trace!(to = %t.to, "random probe not sent: {e}"),
            }
        }
        if let Some(random::Event::Heard { socket, from, .. }) = fan.poll_event() {
            let counts = fan.counts();
            let opened = sockets.len();
            // Every other socket closes here, before anything else is sent or read.
            let won = sockets.swap_remove(socket);
            drop(sockets);
            tracing::debug!(
                sockets = counts.sockets,
                probes = counts.probes,
                answers = counts.answers,
                closed = opened - 1,
                %from,
                "random_probe: hard side heard the peer"
            );
            return Ok(Won {
                socket: won,
                peer: from,
                counts,
            });
        }
        let wake = fan
            .poll_timeout()
            .map(Instant::from_std)
            .map_or(deadline, |at| at.min(deadline));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    let counts = fan.counts();
                    tracing::debug!(
                        sockets = counts.sockets,
                        probes = counts.probes,
                        answers = counts.answers,
                        "random_probe: hard side heard nothing"
                    );
                    return Err(LinkError::Timeout("random_probe: no probe got through"));
                }
                fan.handle_timeout(Instant::now().into_std());
            }
            (socket, received) = recv_any(&sockets, &mut buf) => match received {
                Ok((len, from)) => fan.handle_datagram(socket, from, &buf[..len]),
                Err(e) => tracing::trace!(socket, "random_probe: receive failed: {e}"),
            },
        }
    }
}

/// The next datagram on any of `sockets`: (socket, (length, source)). Pending forever when
/// there are none.
async fn recv_any(
    sockets: &[UdpSocket],
    buf: &mut [u8],
) -> (usize, std::io::Result<(usize, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        for (i, socket) in sockets.iter().enumerate() {
            let mut read = ReadBuf::new(buf);
            match socket.poll_recv_from(cx, &mut read) {
                Poll::Ready(Ok(from)) => return Poll::Ready((i, Ok((read.filled().len(), from)))),
                Poll::Ready(Err(e)) => return Poll::Ready((i, Err(e))),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::codec::{self, Punch};
    use crate::timing::{RANDOM_PROBE_OPEN_INTERVAL, RELAY_GRACE_RANDOM_PROBE};
    use crate::traversal::punch::random::MAX_SOCKETS;
    use SocketMapping::{Kept, Random, Sequential, Unknown};

    #[test]
    fn only_random_against_kept_plays_it() {
        assert_eq!(half(Random, Kept), Some(Half::Hard));
        assert_eq!(half(Kept, Random), Some(Half::Easy));
        // Two symmetric NATs: the relay. Sequential allocation: port prediction.
        for (own, peer) in [
            (Random, Random),
            (Random, Sequential),
            (Sequential, Kept),
            (Kept, Sequential),
            (Kept, Kept),
            (Unknown, Random),
            (Random, Unknown),
        ] {
            assert_eq!(half(own, peer), None, "{own:?} against {peer:?}");
        }
    }

    #[test]
    fn it_is_planned_only_when_asked_for_and_the_peer_has_a_public_address() {
        let asked = vec!["udp_punch".to_string(), "random_probe".to_string()];
        let public: Vec<SocketAddr> = vec!["198.51.100.7:4000".parse().unwrap()];
        assert_eq!(planned(&asked, Kept, Random, &public), Some(Half::Easy));
        assert_eq!(planned(&asked, Random, Kept, &public), Some(Half::Hard));
        assert_eq!(planned(&asked[..1], Random, Kept, &public), None);
        assert_eq!(planned(&asked, Random, Kept, &[]), None);
        assert_eq!(planned(&asked, Random, Random, &public), None);
    }

    #[test]
    fn its_tokens_are_not_udp_punchs() {
        let nonce = [9; 16];
        for role in [Role::Connector, Role::Listener] {
            assert_ne!(token(role, &nonce), role.token(&nonce));
            assert_ne!(token(role, &nonce), token(role.other(), &nonce));
        }
    }

    #[test]
    fn both_budgets_fit_the_punch_window_and_the_relay_waits_long_enough() {
        let (hard, easy) = random::sending_time();
        assert!(
            hard < PUNCH_WINDOW && easy < PUNCH_WINDOW,
            "{hard:?} {easy:?}"
        );
        // The model: after the fan is open, each easy probe hits one of 256 mappings among
        // 64 512 ports. By the relay's grace the probe has hit in ≥ 99 % of tries.
        let opened = RANDOM_PROBE_OPEN_INTERVAL * MAX_SOCKETS as u32;
        let probes = (RELAY_GRACE_RANDOM_PROBE - opened).as_millis()
            / crate::timing::RANDOM_PROBE_INTERVAL.as_millis();
        let size = f64::from(random::PORTS.end() - random::PORTS.start() + 1);
        let miss = (1.0 - MAX_SOCKETS as f64 / size).powi(probes as i32);
        assert!(miss < 0.01, "{probes} probes miss with p = {miss}");
    }

    fn loopback() -> std::io::Result<UdpSocket> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket)
    }

    /// Answers the fan's probes only once `nth` distinct sockets have probed, and then only
    /// the `nth` one's (its first probe, or `again`: its second): as if the easy side's spray
    /// had hit that socket's mapping.
    async fn answer_the_nth(easy: UdpSocket, nth: usize, again: bool) {
        let mut probes = std::collections::HashMap::new();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1500];
        loop {
            let Ok((len, from)) = easy.recv_from(&mut buf).await else {
                return;
            };
            if !seen.contains(&from) {
                seen.push(from);
            }
            let count = probes.entry(from).or_insert(0);
            *count += 1;
            if seen.len() >= nth && from == seen[nth - 1] && (!again || *count > 1) {
                if let Some(Punch::Request { .. }) = codec::read_punch(&buf[..len]) {
                    let answer = codec::punch_response(&buf[..len], from).unwrap();
                    let _ = easy.send_to(&answer, from).await;
                }
            }
        }
    }

    fn fan(target: SocketAddr) -> Fan {
        let nonce = [3; 16];
        Fan::new(
            token(Role::Listener, &nonce),
            token(Role::Connector, &nonce),
            target,
            Instant::now().into_std(),
        )
    }

    #[tokio::test]
    async fn the_fan_keeps_the_socket_that_was_answered_and_closes_the_rest_at_once() {
        let easy = loopback().unwrap();
        let target = easy.local_addr().unwrap();
        let answering = tokio::spawn(answer_the_nth(easy, 40, false));
        let opened = std::sync::Mutex::new(Vec::new());
        let open = || {
            let socket = loopback()?;
            opened.lock().unwrap().push(socket.local_addr()?);
            Ok(socket)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let won = fan_out(fan(target), open, deadline).await.unwrap();
        answering.abort();
        let opened = opened.into_inner().unwrap();
        let kept = won.socket.local_addr().unwrap();
        assert_eq!(won.peer, target);
        assert_eq!(kept, opened[39], "the 40th socket was answered");
        assert!(won.counts.sockets >= 40 && won.counts.sockets <= MAX_SOCKETS);
        assert!(won.counts.probes <= MAX_PROBES);
        assert_eq!(won.counts.sockets, opened.len());
        // Every other socket is closed by now: its port can be bound again; the kept one not.
        for addr in &opened {
            let rebound = std::net::UdpSocket::bind(addr);
            assert_eq!(rebound.is_ok(), *addr != kept, "{addr}");
        }
    }

    /// Every socket's first probe leaves at once: the peer sees each of the first sockets
    /// before any of them probes a second time.
    #[tokio::test]
    async fn a_fresh_sockets_first_probe_is_sent() {
        let easy = loopback().unwrap();
        let target = easy.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_millis(60);
        let fanning = fan_out(fan(target), loopback, deadline);
        let mut sources = Vec::new();
        let mut buf = [0u8; 1500];
        let listening = async {
            while let Ok((_, from)) = easy.recv_from(&mut buf).await {
                if sources.contains(&from) {
                    break;
                }
                sources.push(from);
                if sources.len() == 20 {
                    break;
                }
            }
        };
        let (_, within) = tokio::join!(
            fanning,
            tokio::time::timeout(Duration::from_secs(2), listening)
        );
        assert!(within.is_ok());
        assert_eq!(
            sources.len(),
            20,
            "a socket probed twice before 20 were heard"
        );
    }

    #[tokio::test]
    async fn a_fan_nobody_answers_gives_up_at_its_deadline_within_its_budget() {
        let easy = loopback().unwrap();
        let target = easy.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_millis(400);
        let outcome = fan_out(fan(target), loopback, deadline).await;
        assert!(matches!(outcome, Err(LinkError::Timeout(_))));
        assert!(Instant::now() >= deadline);
        drop(easy);
    }

    #[tokio::test]
    async fn a_fan_out_of_sockets_goes_on_with_those_it_has() {
        let easy = loopback().unwrap();
        let target = easy.local_addr().unwrap();
        // Socket 4 is answered when it probes again: once the 8 sockets there are are open.
        let answering = tokio::spawn(answer_the_nth(easy, 5, true));
        let count = std::sync::atomic::AtomicUsize::new(0);
        let open = || {
            if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 8 {
                return Err(std::io::Error::other("too many open files"));
            }
            loopback()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let won = fan_out(fan(target), open, deadline).await.unwrap();
        answering.abort();
        assert_eq!(won.counts.sockets, 8);
        assert_eq!(won.peer, target);
    }

    /// Two kits on loopback told that one side's NAT maps at random and the other's keeps its
    /// mapping: the whole strategy (the spray in the probing, the fan, the hard side dialling,
    /// the easy side's accept) makes a link, whichever side connects. The easy side fires
    /// late, so its spray finds the fan's probes waiting and sends next to nothing to random
    /// loopback ports.
    async fn link_between(hard_role: Role) -> (Link, Link, Rendezvous, Rendezvous) {
        use crate::identity::Identity;
        use crate::link::pin::Credentials;
        use crate::traversal::kit::Kit;
        let ids = [Identity::generate(), Identity::generate()];
        let creds = [
            Credentials::new(&ids[0]).unwrap(),
            Credentials::new(&ids[1]).unwrap(),
        ];
        let keys = [ids[0].public_key(), ids[1].public_key()];
        let mut kits = Vec::new();
        for i in 0..2 {
            let kit = Kit::prepare(&creds[i], &keys[1 - i], &[], async { None }, false)
                .await
                .unwrap();
            kits.push(kit);
        }
        let kit_addr = |kit: &Kit| {
            let port = kit.socket.endpoint.local_addr().unwrap().port();
            SocketAddr::from(([127, 0, 0, 1], port))
        };
        let public = [kit_addr(&kits[0]), kit_addr(&kits[1])];
        let nonce = [5; 16];
        let now = Instant::now();
        let mut agreed = Vec::new();
        for (i, mut kit) in kits.into_iter().enumerate() {
            let role = if i == 0 {
                Role::Connector
            } else {
                Role::Listener
            };
            let hard = role == hard_role;
            kit.mapping = if hard { Random } else { Kept };
            agreed.push(Agreed {
                role,
                peer: keys[1 - i],
                creds: creds[i].clone(),
                nonce,
                kit,
                peer_udp: Vec::new(),
                peer_tcp: Vec::new(),
                peer_relayed: Vec::new(),
                peer_public: vec![public[1 - i]],
                peer_mapping: if hard { Kept } else { Random },
                strategies: vec!["random_probe".into()],
                fire_at: now + Duration::from_millis(if hard { 20 } else { 300 }),
                signal: None,
            });
        }
        let agreed_listener = agreed.pop().unwrap();
        let sprayed = spray(&agreed_listener);
        let listener = Arc::new(Rendezvous::new(agreed_listener, sprayed));
        let agreed_connector = agreed.pop().unwrap();
        let sprayed = spray(&agreed_connector);
        let connector = Arc::new(Rendezvous::new(agreed_connector, sprayed));
        let mut responses = RandomProbe.respond(&listener);
        assert_eq!(responses.len(), 1);
        let attempts = RandomProbe.plan(
            &Address::new(keys[1], vec![]),
            Some(&connector),
            &LocalFacts::default(),
        );
        assert_eq!(attempts.len(), 1);
        let within = Duration::from_secs(5);
        let (c, l) = tokio::join!(
            tokio::time::timeout(within, probe(connector.clone())),
            tokio::time::timeout(within, responses.remove(0))
        );
        let (c, l) = (c.unwrap().unwrap(), l.unwrap().unwrap());
        let select = async { c.verify().await?.select(&[]).await };
        let take = async { l.answer().await?.confirm(&[]).await };
        let (selected, taken) = tokio::join!(select, take);
        selected.unwrap();
        taken.unwrap();
        let (connector, listener) = (
            Arc::try_unwrap(connector).ok().unwrap(),
            Arc::try_unwrap(listener).ok().unwrap(),
        );
        (c, l, connector, listener)
    }

    /// The easy side's link comes from the fan's socket, not the hard side's kit; its spray
    /// stopped at once and answered the fan's probes.
    fn assert_through_the_fan(easy_link: &Link, hard: &Rendezvous, easy: &Rendezvous) {
        let hard_kit = hard.kit.socket.endpoint.local_addr().unwrap().port();
        assert_ne!(easy_link.info().remote.port(), hard_kit);
        assert_eq!(easy_link.info().path, crate::link::Path::Direct);
        let sprayed = easy.probing.as_ref().and_then(|p| p.sprayed()).unwrap();
        let sprayed = sprayed.borrow().clone();
        assert_eq!(sprayed.heard.first(), Some(&easy_link.info().remote));
        assert!(
            sprayed.counts.probes < 10,
            "a few probes, not the budget: {sprayed:?}"
        );
        assert!(sprayed.counts.answers >= 1, "{sprayed:?}");
        assert!(hard.probing.is_none(), "the hard side sprays nothing");
    }

    #[tokio::test]
    async fn a_hard_connector_dials_an_easy_listener_from_its_winning_socket() {
        let (_c, l, connector, listener) = link_between(Role::Connector).await;
        assert_through_the_fan(&l, &connector, &listener);
    }

    #[tokio::test]
    async fn a_hard_listener_dials_the_easy_connector_from_its_winning_socket() {
        let (c, _l, connector, listener) = link_between(Role::Listener).await;
        assert_through_the_fan(&c, &listener, &connector);
    }
}
