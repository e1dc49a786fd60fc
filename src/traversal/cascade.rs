//! The cascade runner: launches planned attempts at their start times, verifies the first link
//! that comes up with a round trip, selects it, and cancels every other attempt (they live in a
//! `JoinSet`, so dropping it stops them). Every attempt's outcome is logged (`-v`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::{Attempt, Context, Strategy};
use crate::link::{Link, LinkError};

/// The link that won, and how.
pub struct Winner {
    pub link: Link,
    pub method: &'static str,
    pub attempt: Attempt,
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
        failures: Vec<(Attempt, String)>,
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

/// The failures most worth reading first: loopback refusals (the peer is simply not on this
/// machine) go last; attempts still waiting at the deadline are counted.
fn summarize(failures: &[(Attempt, String)], unanswered: usize, timeout: Duration) -> String {
    let mut ordered: Vec<&(Attempt, String)> = failures.iter().collect();
    ordered.sort_by_key(|(a, _)| a.remote.ip().is_loopback());
    let mut parts: Vec<String> = ordered
        .iter()
        .take(4)
        .map(|(a, e)| format!("{a}: {e}"))
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

/// Runs `plan` until one link is verified and selected, or `timeout` passes, or every attempt
/// failed. `via_restricted` only shapes the error message.
pub async fn run(
    plan: Vec<Attempt>,
    strategies: &[Arc<dyn Strategy>],
    ctx: Arc<Context>,
    timeout: Duration,
    via_restricted: bool,
) -> Result<Winner, CascadeError> {
    if plan.is_empty() {
        return Err(CascadeError::NothingToTry(via_restricted));
    }
    let start = Instant::now();
    let mut running = JoinSet::new();
    for attempt in plan {
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
    let mut failures = Vec::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = running.join_next() => {
                let Some(joined) = next else { break };
                let Ok((attempt, took, outcome)) = joined else { continue };
                match outcome {
                    Ok((link, verified)) => {
                        if let Err(e) = verified.select().await {
                            tracing::info!(%attempt, "verified but could not be selected: {e}");
                            failures.push((attempt, e.to_string()));
                            continue;
                        }
                        tracing::info!(%attempt, ms = took.as_millis() as u64, total_ms = start.elapsed().as_millis() as u64, "won");
                        // Dropping `running` cancels every other attempt.
                        return Ok(Winner { link, method: attempt.strategy, attempt });
                    }
                    Err(e) => {
                        tracing::info!(%attempt, ms = took.as_millis() as u64, "failed: {e}");
                        match e {
                            LinkError::KeyMismatch(m) => return Err(CascadeError::KeyMismatch(m)),
                            LinkError::Refused(why) => return Err(CascadeError::Refused(why)),
                            e => failures.push((attempt, e.to_string())),
                        }
                    }
                }
            }
            _ = &mut deadline => break,
        }
    }
    Err(CascadeError::NoPath {
        timeout,
        failures,
        unanswered: running.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Transport;

    fn attempt(remote: &str) -> Attempt {
        Attempt {
            strategy: "direct",
            transport: Transport::Tcp,
            remote: remote.parse().unwrap(),
            delay: Duration::ZERO,
        }
    }

    #[test]
    fn summary_puts_loopback_refusals_last_and_counts_silence() {
        let failures = vec![
            (attempt("127.0.0.1:1"), "refused".to_string()),
            (attempt("192.168.1.2:1"), "no route".to_string()),
        ];
        assert_eq!(
            summarize(&failures, 3, Duration::from_secs(15)),
            "direct tcp 192.168.1.2:1: no route; direct tcp 127.0.0.1:1: refused; 3 got no answer within 15s"
        );
        assert_eq!(summarize(&[], 0, Duration::ZERO), "");
    }
}
