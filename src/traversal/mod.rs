//! Traversal: how a connector gets a verified link to a peer.
//!
//! Each way of getting through is a [`Strategy`] (one file each, see [`registry`]). A strategy
//! turns the peer's address into planned [`Attempt`]s: plain data saying what will be tried,
//! over which transport, to where and when. [`plan`] merges every enabled strategy's attempts
//! into one schedule, phase by phase on a short stagger; [`cascade::run`] launches them,
//! verifies the first link that comes up end to end, selects it and cancels the rest.
//!
//! Adding a strategy: implement [`Strategy`] in a new file and add it to [`registry`].

pub mod cascade;
pub mod direct;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::addr::Address;
use crate::link::{pin::Credentials, Link, LinkError, Transport};

/// Strategies start phase by phase; a later phase starts after a short stagger rather than
/// waiting for the earlier one to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Dial the peer's own addresses.
    Direct,
    /// Coordinated hole punching through NATs.
    Punch,
    /// Many-port probing for hard NATs.
    Spray,
    /// Through a relay server.
    Relay,
}

impl Phase {
    /// When the phase starts, counted from the start of the cascade.
    pub fn offset(self) -> Duration {
        match self {
            Phase::Direct => Duration::ZERO,
            Phase::Punch => Duration::from_millis(150),
            Phase::Spray => Duration::from_millis(1000),
            Phase::Relay => Duration::from_millis(1500),
        }
    }
}

/// One planned try: a strategy, a transport, a remote endpoint and a start time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub strategy: &'static str,
    pub transport: Transport,
    pub remote: SocketAddr,
    /// Start time counted from the start of the cascade.
    pub delay: Duration,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.strategy,
            self.transport.as_str(),
            self.remote
        )
    }
}

/// What the connector knows about its own side when planning.
#[derive(Clone, Debug, Default)]
pub struct LocalFacts {
    pub interface_ips: Vec<IpAddr>,
}

/// Everything an attempt needs to make a link.
pub struct Context {
    pub creds: Credentials,
    pub peer: Address,
}

/// A way to get a link to a peer.
pub trait Strategy: Send + Sync {
    /// The name users give to `--via` and see in reports.
    fn name(&self) -> &'static str;
    fn phase(&self) -> Phase;
    /// The attempts this strategy would make, with delays counted from the start of its phase.
    fn plan(&self, peer: &Address, local: &LocalFacts) -> Vec<Attempt>;
    /// Makes the (not yet verified) link for one of its planned attempts.
    fn run(
        &self,
        attempt: Attempt,
        ctx: Arc<Context>,
    ) -> BoxFuture<'static, Result<Link, LinkError>>;
}

/// Every built-in strategy, in phase order.
pub fn registry() -> Vec<Arc<dyn Strategy>> {
    vec![Arc::new(direct::Direct)]
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
        (self.strategies.is_empty() || self.strategies.iter().any(|s| s == attempt.strategy))
            && (self.transports.is_empty() || self.transports.contains(&attempt.transport))
    }
}

/// The whole schedule: every allowed attempt of every strategy, ordered by start time.
pub fn plan(
    strategies: &[Arc<dyn Strategy>],
    via: &Via,
    peer: &Address,
    local: &LocalFacts,
) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = strategies
        .iter()
        .flat_map(|s| {
            s.plan(peer, local).into_iter().map(move |mut a| {
                a.delay += s.phase().offset();
                a
            })
        })
        .filter(|a| via.allows(a))
        .collect();
    attempts.sort_by_key(|a| a.delay);
    attempts
}

#[cfg(test)]
mod tests {
    use super::*;

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
