//! `warpgate connect TARGET`: run the traversal cascade to the peer, then splice stdio or files
//! over one stream, or carry each connection to a local TCP port (`--local`) as a new stream.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::task::JoinSet;

use super::args::ConnectArgs;
use super::transfer::{self, Ends};
use super::{usage, Node};
use crate::addr::{Address, TEXT_PREFIX};
use crate::config::HostPort;
use crate::link::Link;
use crate::report::{Connected, Reporter, SignalUse};
use crate::traversal::{self, cascade, offer, Context, LocalFacts, Via};

/// TARGET is an address (`wg…`) or a name (`bob.p2p`).
fn parse_target(text: &str) -> anyhow::Result<Address> {
    let trimmed = text.trim();
    if !trimmed.to_ascii_lowercase().starts_with(TEXT_PREFIX) && trimmed.contains('.') {
        return Err(usage(format!("{trimmed:?} looks like a name; the name registry is not built yet in this version of warpgate, use an address (wg…)")));
    }
    Address::parse(trimmed).map_err(Into::into)
}

pub async fn run(
    node: Node,
    args: ConnectArgs,
    reporter: Reporter,
    start: Instant,
) -> anyhow::Result<ExitCode> {
    let peer = parse_target(&args.target)?;
    let strategies = traversal::registry();
    let via = Via::parse(&args.via, &strategies).map_err(usage)?;
    let local = match args.local.as_deref() {
        Some(text) => Some(
            HostPort::parse_local(text, "127.0.0.1")
                .ok_or_else(|| usage(format!("--local {text:?}: expected [HOST:]PORT")))?,
        ),
        None => None,
    };
    let ends = Ends {
        send: args.send,
        recv: args.recv,
    };
    ends.check()?;
    // Bind the local port before connecting, so a busy port fails before any network work.
    let local_listener = match &local {
        Some(hp) => Some(
            tokio::net::TcpListener::bind((hp.host.as_str(), hp.port))
                .await
                .with_context(|| format!("cannot listen on {hp}"))?,
        ),
        None => None,
    };

    let facts = LocalFacts {
        interface_ips: crate::net::interface_ips().context("cannot list network interfaces")?,
        nat: node.cached_nat_facts(),
    };
    let timeout = Duration::from_secs(args.timeout);
    let exchange = offer::exchange(
        &node.settings,
        node.signal_keys()?,
        node.creds.clone(),
        &peer,
        via.signalled(&strategies),
        timeout,
    );
    let ctx = Arc::new(Context::new(node.creds, peer));
    let winner = cascade::run(&strategies, &via, &facts, ctx.clone(), exchange, timeout).await?;
    let link = winner.link;
    let mut event = Connected::new(link.info(), winner.method, start.elapsed());
    if let Some(stats) = ctx.rendezvous.get().and_then(|s| s.signal_stats()) {
        let used = SignalUse::from(&stats);
        tracing::info!(
            messages = used.messages,
            bytes = used.bytes,
            "signalling used"
        );
        event.signal = Some(used);
    }
    reporter.connected(&event);

    match local_listener {
        Some(tcp) => serve_local(&link, tcp, &reporter).await,
        None => {
            let peer = link.info().peer.id().to_string();
            let stream = link.open().await?;
            let outcome = transfer::run(stream, &ends, &reporter, &peer).await;
            link.close().await;
            outcome.map(|_| ExitCode::SUCCESS)
        }
    }
}

/// Carries each local TCP connection to the peer as a new stream until the link ends.
async fn serve_local(
    link: &Link,
    tcp: tokio::net::TcpListener,
    reporter: &Reporter,
) -> anyhow::Result<ExitCode> {
    let bound = tcp.local_addr()?.to_string();
    reporter.forwarding(&bound, "connections on");
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = tcp.accept() => {
                let (socket, from) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("local accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let stream = link.open().await.context("cannot open a stream to the peer")?;
                connections.spawn(async move {
                    if let Err(e) = crate::splice::splice_tcp(stream, socket).await {
                        tracing::info!(%from, "forwarded connection ended: {e}");
                    }
                });
            }
            Some(_) = connections.join_next() => {}
            lost = link.closed() => return Err(anyhow::Error::new(lost).context("the link to the peer ended")),
        }
    }
}
