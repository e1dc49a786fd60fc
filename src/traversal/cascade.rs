//! The cascade runner: launches planned attempts at their start times, verifies the first link
//! that comes up with a round trip, selects it, and cancels every other attempt (they live in a
//! `JoinSet`, so dropping it stops them). Alongside, the signalling exchange runs; when it
//! agrees a rendezvous, the signalled strategies are planned and launched too. Every attempt's
//! outcome is logged (`-v`). A failure ends its own attempt only, even a refusal or a key
//! mismatch (another candidate may still reach the right peer); when every attempt failed, the
//! error names the peer's word first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::offer::Exchange;
use super::{plan, Attempt, Context, LocalFacts, Strategy, Via};
use crate::link::{Link, LinkError};

/// The link that won, and by which strategy.
pub struct Winner {
    pub link: Link,
    pub method: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum CascadeError {
    #[error("nothing to try: the peer's address has no candidate this machine can reach{}", via_hint(.0))]
    NothingToTry(bool),
    #[error("{0}")]
    KeyMismatch(crate::link::pin::KeyMismatch),
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error("no path to the peer ({})", summarize(.failures, *.unanswered, *.timeout))]
    NoPath {
        timeout: Duration,
        failures: Vec<Failure>,
        /// Attempts still waiting for an answer when time ran out.
        unanswered: usize,
    },
}

fn via_hint(restricted: &bool) -> &'static str {
    if *restricted {
        " with the --via restriction"
    } else {
        ""
    }
}

/// What failed (an attempt, or the signalling exchange) and why.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub error: String,
    /// A refusal on loopback says only that the peer is not on this machine.
    pub loopback: bool,
}

impl Failure {
    fn of(attempt: &Attempt, error: impl ToString) -> Self {
        Self {
            what: attempt.to_string(),
            error: error.to_string(),
            loopback: attempt.remote.is_some_and(|r| r.ip().is_loopback()),
        }
    }

    fn signalling(error: impl ToString) -> Self {
        Self {
            what: "signalling".into(),
            error: error.to_string(),
            loopback: false,
        }
    }
}

/// The failures most worth reading first: signalling, then the relay, then remote failures,
/// loopback refusals last; attempts still waiting at the deadline are counted.
fn summarize(failures: &[Failure], unanswered: usize, timeout: Duration) -> String {
    let mut ordered: Vec<&Failure> = failures.iter().collect();
    // The relay is the last resort: why it failed is worth reading right after signalling.
    ordered.sort_by_key(|f| {
        (
            f.loopback,
            f.what != "signalling",
            !f.what.starts_with("relay"),
        )
    });
    let mut parts: Vec<String> = ordered
        .iter()
        .take(4)
        .map(|f| format!("{}: {}", f.what, f.error))
        .collect();
    if ordered.len() > 4 {
        parts.push(format!("{} more failed", ordered.len() - 4));
    }
    if unanswered > 0 {
        parts.push(format!(
            "{unanswered} got no answer within {}s",
            timeout.as_secs()
        ));
    }
    parts.join("; ")
}

/// Runs the cascade until one link is verified and selected, or `timeout` passes, or every
/// attempt (and the exchange, if any) failed.
pub async fn run(
    strategies: &[Arc<dyn Strategy>],
    via: &Via,
    local: &LocalFacts,
    ctx: Arc<Context>,
    exchange: Option<Exchange>,
    timeout: Duration,
) -> Result<Winner, CascadeError> {
    let restricted = *via != Via::default();
    let first = plan(strategies, via, &ctx.peer, None, local);
    if first.is_empty() && exchange.is_none() {
        return Err(CascadeError::NothingToTry(restricted));
    }
    tracing::info!(
        attempts = first.len(),
        signalling = exchange.is_some(),
        "planned"
    );
    let start = Instant::now();
    let mut running = JoinSet::new();
    launch(&mut running, first, strategies, &ctx);
    let mut exchange = exchange;
    let mut failures = Vec::new();
    // The peer's own word (a key other than the pinned one, a refusal): it ends only its
    // attempt, but it is the error shown when nothing gets through.
    let mut verdict: Option<CascadeError> = None;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        if running.is_empty() && exchange.is_none() {
            break;
        }
        tokio::select! {
            agreed = async {
                match exchange.as_mut() {
                    Some(exchange) => exchange.await,
                    None => std::future::pending().await,
                }
            }, if exchange.is_some() => {
                exchange = None;
                match agreed {
                    Ok(rendezvous) => {
                        let rendezvous = Arc::new(rendezvous);
                        let attempts = plan(strategies, via, &ctx.peer, Some(&rendezvous), local);
                        tracing::info!(attempts = attempts.len(), ms = start.elapsed().as_millis() as u64, "signalling agreed a rendezvous");
                        let _ = ctx.rendezvous.set(rendezvous);
                        launch(&mut running, attempts, strategies, &ctx);
                    }
                    Err(e) => {
                        tracing::info!("signalling failed: {e}");
                        failures.push(Failure::signalling(e));
                    }
                }
            }
            Some(joined) = running.join_next() => {
                let Ok((attempt, took, outcome)) = joined else { continue };
                match outcome {
                    Ok((mut link, verified)) => {
                        match verified.select(&ctx.note).await {
                            Ok(note) => link.set_peer_note(note),
                            Err(e) => {
                                tracing::info!(%attempt, "verified but could not be selected: {e}");
                                failures.push(Failure::of(&attempt, e));
                                continue;
                            }
                        }
                        link.mark_selected();
                        tracing::info!(%attempt, ms = took.as_millis() as u64, total_ms = start.elapsed().as_millis() as u64, "won");
                        // Dropping `running` cancels every other attempt.
                        return Ok(Winner { link, method: attempt.strategy });
                    }
                    Err(e) => {
                        tracing::info!(%attempt, ms = took.as_millis() as u64, "failed: {e}");
                        match e {
                            LinkError::KeyMismatch(m) => verdict = Some(CascadeError::KeyMismatch(m)),
                            LinkError::Refused(why) if verdict.is_none() => verdict = Some(CascadeError::Refused(why)),
                            e => failures.push(Failure::of(&attempt, e)),
                        }
                    }
                }
            }
            _ = &mut deadline => break,
        }
    }
    if let Some(verdict) = verdict {
        return Err(verdict);
    }
    if exchange.is_some() {
        failures.push(Failure::signalling(
            "the peer has not answered (is it listening?)",
        ));
    }
    Err(CascadeError::NoPath {
        timeout,
        failures,
        unanswered: running.len(),
    })
}

type Outcome = (
    Attempt,
    Duration,
    Result<(Link, crate::link::Verified), LinkError>,
);

/// Starts each attempt at its delay: make the link, then verify it.
fn launch(
    running: &mut JoinSet<Outcome>,
    attempts: Vec<Attempt>,
    strategies: &[Arc<dyn Strategy>],
    ctx: &Arc<Context>,
) {
    for attempt in attempts {
        let Some(strategy) = strategies
            .iter()
            .find(|s| s.name() == attempt.strategy)
            .cloned()
        else {
            continue;
        };
        let ctx = ctx.clone();
        running.spawn(async move {
            tokio::time::sleep(attempt.delay).await;
            let began = Instant::now();
            let outcome = async {
                let link = strategy.run(attempt.clone(), ctx).await?;
                let verified = link.verify().await?;
                Ok::<_, LinkError>((link, verified))
            }
            .await;
            (attempt, began.elapsed(), outcome)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Address, Candidate, CandidateKind};
    use crate::identity::Identity;
    use crate::link::pin::Credentials;
    use crate::link::{Link, Transport};
    use crate::traversal::rendezvous::Rendezvous;
    use crate::traversal::{LinkFuture, Phase};
    use futures_util::FutureExt;

    /// A strategy whose every attempt is refused by "the peer" at once.
    struct RefusedAtOnce;

    impl Strategy for RefusedAtOnce {
        fn name(&self) -> &'static str {
            "refused"
        }
        fn phase(&self) -> Phase {
            Phase::Direct
        }
        fn plan(&self, _: &Address, _: Option<&Rendezvous>, _: &LocalFacts) -> Vec<Attempt> {
            vec![Attempt {
                strategy: self.name(),
                transport: Transport::Tcp,
                remote: None,
                delay: Duration::ZERO,
            }]
        }
        fn run(&self, _: Attempt, _: Arc<Context>) -> LinkFuture {
            async { Err::<Link, _>(LinkError::Refused("not today".into())) }.boxed()
        }
    }

    fn loopback_peer(key: crate::identity::PublicKey, port: u16) -> Address {
        let candidate = Candidate {
            kind: CandidateKind::Local,
            addr: ([127, 0, 0, 1], port).into(),
        };
        Address::new(key, vec![candidate])
    }

    #[tokio::test]
    async fn a_refusal_ends_its_attempt_not_the_cascade() {
        let (listener_id, connector_id) = (Identity::generate(), Identity::generate());
        let listener_creds = Credentials::new(&listener_id).unwrap();
        let mut listener = crate::link::listener::Listener::bind(0, &listener_creds, None).unwrap();
        let peer = loopback_peer(listener_id.public_key(), listener.port());
        let ctx = Arc::new(Context::new(Credentials::new(&connector_id).unwrap(), peer));
        let strategies: Vec<Arc<dyn Strategy>> = vec![
            Arc::new(RefusedAtOnce),
            Arc::new(super::super::direct::Direct),
        ];
        let local = LocalFacts {
            interface_ips: vec!["127.0.0.1".parse().unwrap()],
            nat: Vec::new(),
        };
        let via = Via::default();
        let cascade = run(&strategies, &via, &local, ctx, None, Duration::from_secs(5));
        let (won, accepted) = tokio::join!(cascade, listener.accept());
        let won = won.unwrap_or_else(|e| panic!("the cascade ended with {e}"));
        assert_eq!(won.method, "direct");
        assert_eq!(accepted.map(|(_, method)| method), Some("direct"));
    }

    #[tokio::test]
    async fn when_all_fail_the_refusal_is_the_error() {
        let peer = loopback_peer(Identity::generate().public_key(), 9);
        let ctx = Arc::new(Context::new(
            Credentials::new(&Identity::generate()).unwrap(),
            peer,
        ));
        let strategies: Vec<Arc<dyn Strategy>> = vec![Arc::new(RefusedAtOnce)];
        let local = LocalFacts::default();
        let outcome = run(
            &strategies,
            &Via::default(),
            &local,
            ctx,
            None,
            Duration::from_secs(5),
        )
        .await;
        match outcome {
            Err(CascadeError::Refused(why)) => assert_eq!(why, "not today"),
            Err(other) => panic!("expected the refusal, got {other}"),
            Ok(_) => panic!("nothing should have connected"),
        }
    }

    fn attempt(remote: &str) -> Attempt {
        Attempt {
            strategy: "direct",
            transport: Transport::Tcp,
            remote: Some(remote.parse().unwrap()),
            delay: Duration::ZERO,
        }
    }

    #[test]
    fn summary_puts_loopback_refusals_last_and_counts_silence() {
        let failures = vec![
            Failure::of(&attempt("127.0.0.1:1"), "refused"),
            Failure::of(&attempt("192.168.1.2:1"), "no route"),
        ];
        assert_eq!(
            summarize(&failures, 3, Duration::from_secs(15)),
            "direct tcp 192.168.1.2:1: no route; direct tcp 127.0.0.1:1: refused; 3 got no answer within 15s"
        );
        assert_eq!(summarize(&[], 0, Duration::ZERO), "");
    }
}
