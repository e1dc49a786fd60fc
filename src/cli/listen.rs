//! `warpgate listen`: accept peers and splice the first (or, with `-k`, each) to stdio or files,
//! or forward each inbound stream to a local TCP port, or their UDP datagrams to a UDP port
//! ([`crate::udp_forward`]); with `--name`, keep a name published meanwhile
//! ([`super::publish`]); unless `--no-portmap`, keep the port mapped on the gateway
//! ([`crate::portmap::PortMap`], deleted on the way out). Told to stop, it closes every link
//! with the shutdown reason and shuts the listener down: a `-k`, `--forward` or
//! `--forward-udp` service then exits 0, a single transfer exits 1 as interrupted.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::args::{ListenArgs, DEFAULT_NAME_LIFETIME};
use super::publish::Publisher;
use super::transfer::{Ends, Transfer};
use super::{close_reason, names, usage, Interrupted, Node, Shutdown};
use crate::addr::{Address, TEXT_PREFIX};
use crate::config::HostPort;
use crate::identity::{Allowed, NodeId};
use crate::link::listener::Listener;
use crate::link::{CloseReason, Link};
use crate::names::{pins::Pins, Name};
use crate::portmap::PortMap;
use crate::report::{Connected, Reporter};
use crate::timing::{PORTMAP_MAPPED_WAIT, PORTMAP_WAIT};
use crate::traversal::{self, respond, respond::Responder};
use crate::udp_forward::target::Forwarder;

pub async fn run(
    node: Node,
    args: ListenArgs,
    reporter: Reporter,
    shutdown: &Shutdown,
) -> anyhow::Result<ExitCode> {
    let name = match args.name.as_deref() {
        Some(text) => {
            let name = names::parse_name(text)?;
            // No registry to publish on is a usage error before anything is bound.
            node.registries("listen --name")?;
            Some(name)
        }
        None => None,
    };
    let allowed = if args.allow.is_empty() {
        None
    } else {
        let pins = Pins::load_pins(&node.settings.home).context("cannot read the pinned keys")?;
        let list = args.allow.iter().map(|a| parse_allow(a, &pins));
        Some(list.collect::<anyhow::Result<Vec<_>>>()?)
    };
    let open_to_all = allowed.is_none();
    let forward = match args.forward.as_deref() {
        Some(text) => Some(
            HostPort::parse_local(text, "localhost")
                .filter(|hp| hp.port != 0)
                .ok_or_else(|| usage(format!("--forward {text:?}: expected [HOST:]PORT")))?,
        ),
        None => None,
    };
    let forward_udp = match args.forward_udp.as_deref() {
        Some(text) => Some(
            HostPort::parse_local(text, "localhost")
                .filter(|hp| hp.port != 0)
                .ok_or_else(|| usage(format!("--forward-udp {text:?}: expected [HOST:]PORT")))?,
        ),
        None => None,
    };
    let transfer = Ends {
        send: args.send,
        recv: args.recv,
    }
    .prepare()
    .await?;

    let service = Service {
        name,
        allowed,
        open_to_all,
        forward,
        forward_udp,
        udp_idle: Duration::from_secs(args.udp_idle),
        transfer,
        keep_open: args.keep_open,
    };
    let requested = args.port.unwrap_or_else(|| node.default_port());
    // From here on there is a port mapping, a listener and links to undo when told to stop.
    let _holding = shutdown.hold();
    let stop = shutdown.token();
    // The gateway is asked for a mapping beside the look, when the port is known already.
    let mut portmap =
        (node.settings.portmap && requested != 0).then(|| PortMap::start(requested, &stop));
    let result = listen_on(&node, requested, &mut portmap, service, &reporter, &stop).await;
    // Deleted however the listener ended (on a signal the keeper started deleting already).
    if let Some(portmap) = portmap {
        portmap.close().await;
    }
    result
}

/// What `listen` was asked to do, checked.
struct Service {
    name: Option<Name>,
    allowed: Option<Vec<Allowed>>,
    open_to_all: bool,
    forward: Option<HostPort>,
    forward_udp: Option<HostPort>,
    /// How long a UDP flow may be idle before it is forgotten.
    udp_idle: Duration,
    /// The stdio/file side, ready (a `.part` to resume opened and hashed).
    transfer: Transfer,
    keep_open: bool,
}

/// Binds the listener (on `requested`, 0 = any port), maps its port on the gateway unless
/// `portmap` is off (None and not to be started: `--no-portmap`), announces the address and
/// serves until done or `stop`.
async fn listen_on(
    node: &Node,
    requested: u16,
    portmap: &mut Option<PortMap>,
    service: Service,
    reporter: &Reporter,
    stop: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let Service {
        name,
        allowed,
        open_to_all,
        forward,
        forward_udp,
        udp_idle,
        mut transfer,
        keep_open,
    } = service;
    // Look at the NAT from the port first (a free one for --port 0), then listen on it: an
    // endpoint-independent NAT keeps the mapping the look found, the address's public candidate.
    let look = node.look(requested).await;
    // --port 0: the free port the look took (0 again when no look was taken).
    let port = if requested == 0 { look.port } else { requested };
    let mut listener = match Listener::bind(port, &node.creds, allowed.clone()) {
        // The port looked from was taken in between: any port, without the public candidate.
        Err(_) if requested == 0 && port != 0 => Listener::bind(0, &node.creds, allowed.clone())?,
        bound => bound?,
    };
    // Every selection is acknowledged with this end's resume facts (none for --forward or
    // stdio: no note at all).
    listener.set_note(transfer.note());
    let port = listener.port();
    if node.settings.portmap && portmap.as_ref().map(PortMap::port) != Some(port) {
        if let Some(other) = portmap.take() {
            other.close().await;
        }
        *portmap = Some(PortMap::start(port, stop));
    }
    // The mapping gets the look's window (it started beside it): PORTMAP_WAIT for the gateway
    // to answer at all, PORTMAP_MAPPED_WAIT for a gateway that answered to map.
    let mapped = match portmap.as_mut() {
        Some(p) => p.first(PORTMAP_WAIT, PORTMAP_MAPPED_WAIT).await,
        None => Vec::new(),
    };
    // Reachable over signalling too, while listening (dropped, it stops).
    let mut signalling = JoinSet::new();
    let brokers = node.brokers();
    if !brokers.is_empty() {
        let keys = node.signal_keys()?;
        let responder = Responder {
            creds: node.creds.clone(),
            allowed,
            stun: node.settings.stun.clone(),
            turn: node.settings.turn.first().cloned(),
            strategies: traversal::registry(),
            inbound: listener.inbound(),
        };
        signalling.spawn(respond::run(keys, brokers, responder));
    }
    let address = node.address(port, &look, &mapped)?;
    // The name is claimed before the listener is announced: another key's name ends it here.
    let publisher = match &name {
        Some(name) => Some(
            Publisher::start(node, name.clone(), address.clone(), DEFAULT_NAME_LIFETIME).await?,
        ),
        None => None,
    };
    reporter.listening(
        &node.identity.id().to_string(),
        &address.to_string(),
        port,
        name.map(|n| n.to_string()).as_deref(),
    );
    let exposed = match (&forward, &forward_udp) {
        (Some(target), _) => Some(target.to_string()),
        (_, Some(target)) => Some(format!("{target} (UDP)")),
        _ => None,
    };
    if let (Some(target), true) = (exposed, open_to_all) {
        tracing::warn!(
            "no --allow: anyone with this address can reach {target} through it (add --allow PEER to restrict)"
        );
    }

    let serving = async {
        match (forward, forward_udp) {
            (Some(target), _) => {
                reporter.forwarding(&target.to_string(), "inbound streams to");
                let forward = |link, stop| forward_link(link, target.clone(), stop);
                serve_links(&mut listener, keep_open, reporter, stop, forward).await
            }
            (_, Some(target)) => {
                reporter.forwarding(&target.to_string(), "datagrams to");
                let forwarder = Forwarder::new(target, udp_idle);
                let forward = |link, stop| udp_link(link, forwarder.clone(), *reporter, stop);
                serve_links(&mut listener, keep_open, reporter, stop, forward).await
            }
            _ => serve_transfers(&mut listener, &mut transfer, keep_open, reporter, stop).await,
        }
    };
    // The publisher runs beside the service and is dropped with it.
    let mapped = portmap.as_ref().map(PortMap::watch);
    let result = match publisher {
        Some(publisher) => tokio::select! {
            result = serving => result,
            never = publisher.keep(node, port, look, mapped) => match never {},
        },
        None => serving.await,
    };
    listener.shutdown(close_reason(stop)).await;
    result.map(|()| ExitCode::SUCCESS)
}

/// One `--allow` value: a peer's address or pinned name (its whole key), its key fingerprint,
/// or its node id (only 80 bits of the key: allowed, with a warning).
fn parse_allow(text: &str, pins: &Pins) -> anyhow::Result<Allowed> {
    let text = text.trim();
    let lower = text.to_ascii_lowercase();
    if lower.starts_with(TEXT_PREFIX) && !lower.contains('.') {
        if let Ok(address) = Address::parse(text) {
            return Ok(Allowed::Key(address.key));
        }
    }
    if let Some(id) = NodeId::parse(&lower) {
        tracing::warn!(
            "--allow {text}: a node id is 80 bits of the key; give the peer's address, key \
             fingerprint or pinned name to compare the whole key"
        );
        return Ok(Allowed::Id(id));
    }
    if crate::base32::decode(&lower).is_ok_and(|digest| digest.len() == 32) {
        return Ok(Allowed::Fingerprint(lower));
    }
    if let Ok(name) = Name::parse(text) {
        return match pins.get(&name) {
            Some(key) => Ok(Allowed::Key(*key)),
            None => Err(usage(format!(
                "--allow {text}: no key is pinned for {name} (connect to it once, or `warpgate \
                 name add`)"
            ))),
        };
    }
    Err(usage(format!(
        "--allow {text:?}: expected a peer's address, key fingerprint, pinned name or node id"
    )))
}

/// The `connected` event of an inbound link: setup counted from its handshake's start.
fn inbound_event(link: &Link, method: &str) -> Connected {
    Connected::new(link.info(), method, link.info().started.elapsed())
}

async fn serve_transfers(
    listener: &mut Listener,
    transfer: &mut Transfer,
    keep_open: bool,
    reporter: &Reporter,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    // Told to stop between transfers: a -k service has lost nothing; a single transfer has
    // not happened.
    let idle_stop = || {
        if keep_open {
            Ok(())
        } else {
            Err(Interrupted::default().into())
        }
    };
    loop {
        let Some(accepted) = stop.run_until_cancelled(listener.accept()).await else {
            return idle_stop();
        };
        let (link, method) = accepted.context("listener stopped")?;
        reporter.connected(&inbound_event(&link, method));
        let _path = reporter.follow_path(&link);
        let peer = link.info().peer.id().to_string();
        // The connector opens its stream right after selecting the link (and may hash our
        // resume offer before its first bytes).
        let opened = tokio::time::timeout(transfer.stream_timeout(link.peer_note()), link.accept());
        let stream = match stop.run_until_cancelled(opened).await {
            None => {
                link.close_with(CloseReason::Shutdown).await;
                return idle_stop();
            }
            Some(Err(_)) => Err(anyhow::anyhow!("peer opened no stream")),
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Ok(Ok(None))) => Err(anyhow::anyhow!(
                "peer closed the link before opening a stream"
            )),
            Some(Ok(Ok(Some(stream)))) => Ok(stream),
        };
        let outcome = match stream {
            Ok(stream) => transfer
                .run(stream, link.peer_note(), reporter, &peer, stop)
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        link.close_with(close_reason(stop)).await;
        match outcome {
            Err(e) if keep_open && stop.is_cancelled() => {
                tracing::warn!(%peer, "transfer stopped: {e:#}");
                return Ok(());
            }
            outcome if stop.is_cancelled() => return outcome,
            Ok(()) if keep_open => {}
            Ok(()) => return Ok(()),
            // One peer's failure does not stop a -k listener.
            Err(e) if keep_open => tracing::warn!(%peer, "transfer failed: {e:#}"),
            Err(e) => return Err(e),
        }
    }
}

/// Serves each link with `serve` (`--forward`, `--forward-udp`): the first only, or with `-k`
/// all of them at once, until `stop` is cancelled.
async fn serve_links<F, Fut>(
    listener: &mut Listener,
    keep_open: bool,
    reporter: &Reporter,
    stop: &CancellationToken,
    serve: F,
) -> anyhow::Result<()>
where
    F: Fn(Link, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut peers = JoinSet::new();
    loop {
        tokio::select! {
            link = listener.accept() => {
                let (link, method) = link.context("listener stopped")?;
                reporter.connected(&inbound_event(&link, method));
                let path = reporter.follow_path(&link);
                let forwarding = serve(link, stop.child_token());
                let forwarding = async move {
                    let _path = path;
                    forwarding.await
                };
                if keep_open {
                    peers.spawn(forwarding);
                } else {
                    return forwarding.await;
                }
            }
            Some(done) = peers.join_next() => {
                if let Ok(Err(e)) = done {
                    tracing::warn!("peer link ended: {e:#}");
                }
            }
            () = stop.cancelled() => break,
        }
    }
    // Each peer's link sees the same cancellation and closes with the shutdown reason.
    while let Some(done) = peers.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::warn!("peer link ended: {e:#}");
        }
    }
    Ok(())
}

/// Forwards every stream of one link to `target` until the link ends or `stop` is cancelled.
async fn forward_link(link: Link, target: HostPort, stop: CancellationToken) -> anyhow::Result<()> {
    let peer = link.info().peer.id();
    let mut streams = JoinSet::new();
    let ended = loop {
        tokio::select! {
            next = link.accept() => match next {
                Ok(Some(stream)) => {
                    streams.spawn(forward_stream(stream, target.clone(), stop.child_token()));
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            },
            Some(_) = streams.join_next() => {}
            () = stop.cancelled() => break Ok(()),
        }
    };
    // Let connections in flight finish their last bytes before the link goes (when stopping,
    // they abandon their streams with the reason at once).
    while streams.join_next().await.is_some() {}
    link.close_with(close_reason(&stop)).await;
    tracing::info!(%peer, "peer link ended");
    ended.map_err(Into::into)
}

/// Carries the UDP datagrams of one link (`--forward-udp`) until the link ends or `stop` is
/// cancelled, then reports what it carried.
async fn udp_link(
    link: Link,
    forwarder: Forwarder,
    reporter: Reporter,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let peer = link.info().peer.id().to_string();
    let report = forwarder.serve(&link, &stop).await;
    reporter.udp_done(&peer, &report.totals);
    link.close_with(close_reason(&stop)).await;
    tracing::info!(%peer, "peer link ended");
    report.ended.map_err(Into::into)
}

/// One inbound stream carried to a new TCP connection to `target`.
async fn forward_stream(
    mut stream: crate::link::Stream,
    target: HostPort,
    stop: CancellationToken,
) {
    let connecting = tokio::net::TcpStream::connect((target.host.as_str(), target.port));
    match stop.run_until_cancelled(connecting).await {
        Some(Ok(tcp)) => {
            if let Err(e) = crate::splice::splice_tcp(stream, tcp, &stop).await {
                let e = anyhow::Error::new(e);
                tracing::info!("forwarded connection ended: {e:#}");
            }
        }
        Some(Err(e)) => {
            tracing::warn!("cannot connect to {target}: {e}");
            stream.send.reset();
        }
        None => stream.send.cancel(),
    }
}
