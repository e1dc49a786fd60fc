//! `warpgate connect TARGET`: resolve a name to its address if TARGET is one (a local alias, else
//! the registries), run the traversal cascade to the peer, then splice stdio or files
//! over one stream, or carry each connection to a local TCP port (`--local`) as a new stream, or
//! the datagrams of a local UDP port (`--local-udp`, [`crate::udp_forward`]).
//! Told to stop once connected, it closes the link with the shutdown reason.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::args::ConnectArgs;
use super::transfer::Ends;
use super::{close_reason, names, usage, Interrupted, Node, Shutdown};
use crate::addr::{Address, TEXT_PREFIX};
use crate::config::HostPort;
use crate::link::Link;
use crate::names::Name;
use crate::report::{Connected, Reporter, SignalUse};
use crate::traversal::{self, cascade, offer, Context, LocalFacts, Via};

/// What TARGET names.
enum Target {
    Address(Address),
    Name(Name),
}

/// TARGET is an address (`wg…` with no dot: never taken for a name) or else a name (`bob`,
/// `bob.p2p`); anything else is a usage error.
fn parse_target(text: &str) -> anyhow::Result<Target> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with(TEXT_PREFIX) && !lower.contains('.') {
        return Address::parse(trimmed).map(Target::Address).map_err(|e| {
            if Name::parse(trimmed).is_ok() {
                usage(format!(
                    "{e} (a name that starts with wg needs its suffix: {lower}.p2p)"
                ))
            } else {
                e.into()
            }
        });
    }
    names::parse_name(trimmed).map(Target::Name)
}

pub async fn run(
    node: Node,
    args: ConnectArgs,
    reporter: Reporter,
    start: Instant,
    shutdown: &Shutdown,
) -> anyhow::Result<ExitCode> {
    let target = parse_target(&args.target)?;
    let strategies = traversal::registry();
    let via = Via::parse(&args.via, &strategies).map_err(usage)?;
    let local = match args.local.as_deref() {
        Some(text) => Some(
            HostPort::parse_local(text, "127.0.0.1")
                .ok_or_else(|| usage(format!("--local {text:?}: expected [HOST:]PORT")))?,
        ),
        None => None,
    };
    let local_udp = match args.local_udp.as_deref() {
        Some(text) => Some(
            HostPort::parse_local(text, "127.0.0.1")
                .ok_or_else(|| usage(format!("--local-udp {text:?}: expected [HOST:]PORT")))?,
        ),
        None => None,
    };
    let mut transfer = Ends {
        send: args.send,
        recv: args.recv,
    }
    .prepare()
    .await?;
    // Bind the local port before connecting, so a busy port fails before any network work.
    let local_listener = match &local {
        Some(hp) => Some(
            tokio::net::TcpListener::bind((hp.host.as_str(), hp.port))
                .await
                .with_context(|| format!("cannot listen on {hp}"))?,
        ),
        None => None,
    };
    let local_udp = match &local_udp {
        Some(hp) => Some(
            tokio::net::UdpSocket::bind((hp.host.as_str(), hp.port))
                .await
                .with_context(|| format!("cannot bind UDP {hp}"))?,
        ),
        None => None,
    };
    let peer = match target {
        Target::Address(address) => address,
        // Resolved, a name is its address: signalling still asks the peer for fresh candidates.
        Target::Name(name) => {
            let resolving = Instant::now();
            let found = names::resolve_name(&node, &name).await?;
            reporter.resolved(&found.event(&name, resolving.elapsed()));
            found.address().clone()
        }
    };

    let facts = LocalFacts {
        interface_ips: crate::net::interface_ips().context("cannot list network interfaces")?,
        nat: node.cached_nat_facts(),
    };
    let timeout = Duration::from_secs(args.timeout);
    let exchange = offer::exchange(
        &node.settings,
        &node.identity,
        node.creds.clone(),
        &peer,
        &facts,
        via.signalled(&strategies),
        timeout,
    )
    .context("cannot use the identity key")?;
    let mut ctx = Context::new(node.creds, peer);
    // A file end's resume facts ride on the selection (none for --local: it has no files).
    ctx.note = transfer.note();
    let ctx = Arc::new(ctx);
    let winner = cascade::run(&strategies, &via, &facts, ctx.clone(), exchange, timeout).await;
    // The kit's port mapping stays while the link may need it, and is deleted at the end
    // (at once when nothing connected).
    let kit_portmap = ctx.rendezvous.get().and_then(|r| r.kit.take_portmap());
    let winner = match winner {
        Ok(winner) => winner,
        Err(e) => {
            if let Some(portmap) = kit_portmap {
                portmap.close().await;
            }
            return Err(e.into());
        }
    };
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
    let _path = reporter.follow_path(&link);
    // The rendezvous (its sockets, its signalling) is done with; a relayed link keeps what it
    // needs itself.
    drop(ctx);
    // From here on there is a link to close when told to stop.
    let _holding = shutdown.hold();
    let stop = shutdown.token();

    let idle = Duration::from_secs(args.udp_idle);
    let outcome = match (local_listener, local_udp) {
        (Some(tcp), _) => serve_local(link, tcp, &reporter, &stop).await,
        (_, Some(udp)) => serve_local_udp(link, udp, idle, &reporter, &stop).await,
        (None, None) => {
            let peer = link.info().peer.id().to_string();
            let outcome = match stop.run_until_cancelled(link.open()).await {
                Some(Ok(stream)) => {
                    let note = link.peer_note();
                    transfer.run(stream, note, &reporter, &peer, &stop).await
                }
                Some(Err(e)) => Err(e.into()),
                None => Err(Interrupted::default().into()),
            };
            link.close_with(close_reason(&stop)).await;
            outcome.map(|_| ExitCode::SUCCESS)
        }
    };
    if let Some(portmap) = kit_portmap {
        portmap.close().await;
    }
    outcome
}

/// Carries each local TCP connection to the peer as a new stream until the link ends, or until
/// `stop` is cancelled: then every connection abandons its stream with the shutdown reason, the
/// link is closed with it, and the service has ended as asked (exit 0).
async fn serve_local(
    link: Link,
    tcp: tokio::net::TcpListener,
    reporter: &Reporter,
    stop: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let bound = tcp.local_addr()?.to_string();
    reporter.forwarding(&bound, "connections on");
    let mut connections = JoinSet::new();
    let ended = loop {
        tokio::select! {
            accepted = tcp.accept() => {
                let (socket, from) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("local accept failed: {e}");
                        tokio::time::sleep(crate::timing::ACCEPT_RETRY_PAUSE).await;
                        continue;
                    }
                };
                let stream = match stop.run_until_cancelled(link.open()).await {
                    Some(Ok(stream)) => stream,
                    Some(Err(e)) => {
                        break Err(anyhow::Error::new(e).context("cannot open a stream to the peer"))
                    }
                    None => break Ok(ExitCode::SUCCESS),
                };
                let stop = stop.child_token();
                connections.spawn(async move {
                    if let Err(e) = crate::splice::splice_tcp(stream, socket, &stop).await {
                        let e = anyhow::Error::new(e);
                        tracing::info!(%from, "forwarded connection ended: {e:#}");
                    }
                });
            }
            Some(_) = connections.join_next() => {}
            lost = link.closed() => {
                break Err(anyhow::Error::new(lost).context("the link to the peer ended"))
            }
            () = stop.cancelled() => break Ok(ExitCode::SUCCESS),
        }
    };
    if stop.is_cancelled() {
        // Each connection abandons its stream with the reason before the link goes.
        while connections.join_next().await.is_some() {}
    }
    link.close_with(close_reason(stop)).await;
    ended
}

/// Carries the datagrams of each local UDP source to the peer (`--local-udp`) until the link
/// ends (exit 1) or `stop` is cancelled (exit 0), then reports what was carried.
async fn serve_local_udp(
    link: Link,
    socket: tokio::net::UdpSocket,
    idle: Duration,
    reporter: &Reporter,
    stop: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    reporter.forwarding(&socket.local_addr()?.to_string(), "datagrams on");
    let report = crate::udp_forward::local::serve(&link, &socket, idle, stop).await;
    reporter.udp_done(&link.info().peer.id().to_string(), &report.totals);
    link.close_with(close_reason(stop)).await;
    report.ended.map(|()| ExitCode::SUCCESS).map_err(Into::into)
}
