//! Traversal: how a connector gets a verified link to a peer.
//!
//! Each way of getting through is a [`Strategy`] (one file each, see [`registry`]). A strategy
//! turns what the connector knows into planned [`Attempt`]s: plain data saying what will be
//! tried, over which transport, to where and when. Strategies that need the peer's cooperation
//! are *signalled*: they are planned once a [`Rendezvous`] was agreed over signalling, and
//! the listener runs their other half ([`Strategy::respond`], driven by [`respond`]).
//! [`plan`] merges the enabled strategies' attempts into one schedule, phase by phase on a short
//! stagger; [`cascade::run`] launches them, verifies the first link that comes up end to end,
//! selects it and cancels the rest.
//!
//! Adding a strategy: implement [`Strategy`] in a new file and add it to [`registry`].

pub mod cascade;
pub mod direct;
pub mod kit;
pub mod kit_relay;
pub mod offer;
pub mod probing;
pub mod punch;
pub mod random_probe;
pub mod relay;
pub mod rendezvous;
pub mod respond;
pub mod reverse;
pub mod tcp_punch;
pub mod udp_punch;
pub mod upgrade;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::addr::Address;
use crate::link::{pin::Credentials, Link, LinkError, Transport};
use rendezvous::Rendezvous;

/// Strategies start phase by phase; a later phase starts after a short stagger rather than
/// waiting for the earlier one to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Dial the peer's own addresses.
    Direct,
    /// Coordinated hole punching through NATs.
    Punch,
    /// Through a TURN relay, the last resort.
    Relay,
}

impl Phase {
    /// When the phase starts, counted from the start of the cascade.
    pub fn offset(self) -> Duration {
        match self {
            Phase::Direct => Duration::ZERO,
            // Signalled strategies are timed from the rendezvous, not by their phase.
            Phase::Punch | Phase::Relay => crate::timing::PUNCH_PHASE_OFFSET,
        }
    }
}

/// One planned try: a strategy, a transport, a remote endpoint and a start time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub strategy: &'static str,
    pub transport: Transport,
    /// Where it dials; `None` when the peer is to reach us (or the address is found on the way).
    pub remote: Option<SocketAddr>,
    /// Start time counted from the start of the cascade.
    pub delay: Duration,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.strategy, self.transport.as_str())?;
        match self.remote {
            Some(remote) => write!(f, " {remote}"),
            None => Ok(()),
        }
    }
}

/// What the connector knows about its own side when planning.
#[derive(Clone, Debug, Default)]
pub struct LocalFacts {
    pub interface_ips: Vec<IpAddr>,
    /// What `nat-info` found on this network (cached): hints for ordering, never gates.
    pub nat: Vec<crate::nat::NatFacts>,
}

impl LocalFacts {
    /// Whether this network is known to drop UDP (IPv4).
    pub fn udp_blocked(&self) -> bool {
        self.nat.iter().any(|f| f.udp_blocked == Some(true))
    }
}

/// Everything an attempt needs to make a link.
pub struct Context {
    pub creds: Credentials,
    pub peer: Address,
    /// The rendezvous agreed over signalling, once it is (signalled strategies only run then).
    pub rendezvous: OnceLock<Arc<Rendezvous>>,
    /// What the winning link's selection tells the listener ([`crate::link::MAX_NOTE`] bytes
    /// at most; empty: nothing). The listener's answer is the link's
    /// [`crate::link::Link::peer_note`].
    pub note: Vec<u8>,
}

impl Context {
    pub fn new(creds: Credentials, peer: Address) -> Self {
        Self {
            creds,
            peer,
            rendezvous: OnceLock::new(),
            note: Vec::new(),
        }
    }

    /// The rendezvous, for a signalled strategy's attempt (planned only once there is one).
    pub fn rendezvous(&self) -> Result<Arc<Rendezvous>, LinkError> {
        self.rendezvous
            .get()
            .cloned()
            .ok_or(LinkError::Protocol("no signalled rendezvous"))
    }
}

/// A future making one (not yet verified) link.
pub type LinkFuture = BoxFuture<'static, Result<Link, LinkError>>;

/// A way to get a link to a peer.
pub trait Strategy: Send + Sync {
    /// The name users give to `--via` and see in reports.
    fn name(&self) -> &'static str;
    fn phase(&self) -> Phase;
    /// Whether the strategy needs the peer's cooperation through a signalled [`Rendezvous`].
    fn signalled(&self) -> bool {
        false
    }
    /// The attempts this strategy would make, with delays counted from the start of its phase
    /// (signalled strategies: from the moment the rendezvous is agreed; `rendezvous` is `None` for
    /// the others).
    fn plan(
        &self,
        peer: &Address,
        rendezvous: Option<&Rendezvous>,
        local: &LocalFacts,
    ) -> Vec<Attempt>;
    /// Connector: makes the link for one of its planned attempts.
    fn run(&self, attempt: Attempt, ctx: Arc<Context>) -> LinkFuture;
    /// Listener: its half in a signalled rendezvous, as futures that each may yield a link.
    fn respond(&self, _rendezvous: &Arc<Rendezvous>) -> Vec<LinkFuture> {
        Vec::new()
    }
}

/// Every built-in strategy, in phase order.
pub fn registry() -> Vec<Arc<dyn Strategy>> {
    vec![
        Arc::new(direct::Direct),
        Arc::new(reverse::Reverse),
        Arc::new(tcp_punch::TcpPunch),
        Arc::new(udp_punch::UdpPunch),
        Arc::new(random_probe::RandomProbe),
        Arc::new(relay::Relay),
    ]
}

/// Which strategies and transports `--via` allows. Empty lists mean "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Via {
    pub strategies: Vec<String>,
    pub transports: Vec<Transport>,
}

impl Via {
    /// Parses `--via` values: strategy names and/or the transports `tcp` and `quic`.
    pub fn parse(values: &[String], known: &[Arc<dyn Strategy>]) -> Result<Self, String> {
        let mut via = Via::default();
        for value in values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            match value {
                "tcp" => via.transports.push(Transport::Tcp),
                "quic" => via.transports.push(Transport::Quic),
                name if known.iter().any(|s| s.name() == name) => {
                    via.strategies.push(name.to_string())
                }
                other => {
                    let names: Vec<&str> = known
                        .iter()
                        .map(|s| s.name())
                        .chain(["tcp", "quic"])
                        .collect();
                    return Err(format!(
                        "unknown --via method {other:?} (known: {})",
                        names.join(", ")
                    ));
                }
            }
        }
        Ok(via)
    }

    fn allows(&self, attempt: &Attempt) -> bool {
        self.allows_strategy(attempt.strategy)
            && (self.transports.is_empty() || self.transports.contains(&attempt.transport))
    }

    pub fn allows_strategy(&self, name: &str) -> bool {
        self.strategies.is_empty() || self.strategies.iter().any(|s| s == name)
    }

    /// The signalled strategies `--via` leaves in play (what the offer asks the listener for).
    pub fn signalled(&self, strategies: &[Arc<dyn Strategy>]) -> Vec<String> {
        strategies
            .iter()
            .filter(|s| s.signalled() && self.allows_strategy(s.name()))
            .map(|s| s.name().to_string())
            .collect()
    }
}

/// The schedule: every allowed attempt, ordered by start time. Without a rendezvous, the
/// strategies that need none, delayed by their phase; with one, the signalled strategies, timed
/// from the rendezvous.
pub fn plan(
    strategies: &[Arc<dyn Strategy>],
    via: &Via,
    peer: &Address,
    rendezvous: Option<&Rendezvous>,
    local: &LocalFacts,
) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = strategies
        .iter()
        .filter(|s| s.signalled() == rendezvous.is_some())
        .flat_map(|s| {
            let offset = if rendezvous.is_some() {
                Duration::ZERO
            } else {
                s.phase().offset()
            };
            let planned = s.plan(peer, rendezvous, local);
            let start = planned.iter().map(|a| a.delay).min().unwrap_or_default();
            let mut own: Vec<Attempt> = planned.into_iter().filter(|a| via.allows(a)).collect();
            // What `--via` left starts when the strategy starts: an attempt planned to wait
            // for one that was filtered out (QUIC behind TCP, say) does not wait for nothing.
            // (The strategy's own start, a relay's grace say, stays.)
            let first = own.iter().map(|a| a.delay).min().unwrap_or_default();
            for a in &mut own {
                a.delay = a.delay - first + start + offset;
            }
            own
        })
        .collect();
    attempts.sort_by_key(|a| a.delay);
    attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_leaves_no_attempt_waiting_for_one_it_removed() {
        let key = crate::identity::Identity::generate().public_key();
        let peer = Address::new(
            key,
            vec![crate::addr::Candidate {
                kind: crate::addr::CandidateKind::Local,
                addr: "127.0.0.1:4000".parse().unwrap(),
            }],
        );
        let local = LocalFacts {
            interface_ips: vec!["127.0.0.1".parse().unwrap()],
            nat: Vec::new(),
        };
        let known = registry();
        let delays = |via: &str| -> Vec<(Transport, Duration)> {
            let via = Via::parse(&[via.to_string()], &known).unwrap();
            plan(&known, &via, &peer, None, &local)
                .iter()
                .map(|a| (a.transport, a.delay))
                .collect()
        };
        // On loopback QUIC waits a step behind TCP; alone, it starts at once.
        assert_eq!(
            delays("direct"),
            vec![
                (Transport::Tcp, Duration::ZERO),
                (Transport::Quic, crate::timing::CANDIDATE_STAGGER)
            ]
        );
        assert_eq!(delays("quic"), vec![(Transport::Quic, Duration::ZERO)]);
    }

    /// A strategy that starts a while after its phase, as the relay does.
    struct Late;

    impl Strategy for Late {
        fn name(&self) -> &'static str {
            "late"
        }
        fn phase(&self) -> Phase {
            Phase::Direct
        }
        fn plan(&self, _: &Address, _: Option<&Rendezvous>, _: &LocalFacts) -> Vec<Attempt> {
            [Transport::Tcp, Transport::Quic]
                .into_iter()
                .zip([300, 325])
                .map(|(transport, ms)| Attempt {
                    strategy: "late",
                    transport,
                    remote: None,
                    delay: Duration::from_millis(ms),
                })
                .collect()
        }
        fn run(&self, _: Attempt, _: Arc<Context>) -> LinkFuture {
            unreachable!("only planned")
        }
    }

    #[test]
    fn a_strategy_keeps_its_own_start_when_via_filters_its_attempts() {
        let peer = Address::new(crate::identity::Identity::generate().public_key(), vec![]);
        let known: Vec<Arc<dyn Strategy>> = vec![Arc::new(Late)];
        let delays = |via: &[&str]| -> Vec<Duration> {
            let values: Vec<String> = via.iter().map(|v| v.to_string()).collect();
            let via = Via::parse(&values, &known).unwrap();
            plan(&known, &via, &peer, None, &LocalFacts::default())
                .iter()
                .map(|a| a.delay)
                .collect()
        };
        let ms = Duration::from_millis;
        assert_eq!(delays(&[]), vec![ms(300), ms(325)]);
        assert_eq!(delays(&["quic"]), vec![ms(300)]);
    }

    #[test]
    fn via_parses_names_and_transports() {
        let known = registry();
        let via = Via::parse(&["direct,quic".into()], &known).unwrap();
        assert_eq!(via.strategies, vec!["direct".to_string()]);
        assert_eq!(via.transports, vec![Transport::Quic]);
        assert!(Via::parse(&["warp-drive".into()], &known)
            .unwrap_err()
            .contains("known: direct"));
        assert_eq!(Via::parse(&[], &known).unwrap(), Via::default());
    }
}
