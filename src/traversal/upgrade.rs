//! A relayed link's way onto the direct path. The link keeps what its path needs (the kit's UDP
//! side with the relay, and the probing, which goes on looking for a direct path). When the
//! probing confirms one (our probe got to the peer and its answer came back), the path socket
//! routes the link's datagrams straight to the peer: the same QUIC connection, no new
//! handshake, no lost bytes. Datagrams the peer sends directly are taken as the link's as soon
//! as the peer was heard there, so it may move first. The move is reported as a
//! [`PathChange`].
//!
//! Nothing moves before the link is the one in use: until then another link to the same peer
//! (a `udp_punch` one racing it) may be using the direct path, and taking that path's datagrams
//! over would break it. When the link goes, its routes go with it.
//!
//! While the link still runs through our relay, losing the relay ends it at once with the reason
//! (nothing else could carry it); once direct, the relay is no longer needed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use super::kit::UdpSide;
use super::probing::{Heard, Probing, Side};
use super::rendezvous::Rendezvous;
use crate::link::paths::Route;
use crate::link::{Link, Path, PathChange};

/// What a relayed link keeps alive.
struct Keeper {
    socket: Arc<UdpSide>,
    /// The address quinn knows the peer by: its routes are dropped with the link.
    link_addr: SocketAddr,
    _probing: Option<Arc<Probing>>,
    _watch: AbortOnDropHandle<()>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.socket.paths.forget(self.link_addr);
    }
}

/// Makes `link` (made through the relayed path `heard`) a relayed link that moves to the direct
/// path when one opens.
pub fn relayed(link: Link, rendezvous: &Rendezvous, heard: Heard) -> Link {
    let (changes_tx, changes) = watch::channel(None);
    let (selected, in_use) = watch::channel(false);
    let socket = rendezvous.kit.socket.clone();
    let watcher = watch_paths(
        socket.clone(),
        rendezvous.probing.clone(),
        heard,
        link.quic_connection(),
        in_use,
        changes_tx,
    );
    let keeper = Keeper {
        socket,
        link_addr: heard.quic_addr,
        _probing: rendezvous.probing.clone(),
        _watch: AbortOnDropHandle::new(tokio::spawn(watcher)),
    };
    link.into_relayed(heard.from, Box::new(keeper), changes, selected)
}

/// Follows what the probing hears until the link is direct, or its relay is gone.
async fn watch_paths(
    socket: Arc<UdpSide>,
    probing: Option<Arc<Probing>>,
    relayed: Heard,
    connection: Option<quinn::Connection>,
    mut in_use: watch::Receiver<bool>,
    changes: watch::Sender<Option<PathChange>>,
) {
    let made = Instant::now();
    if in_use.wait_for(|selected| *selected).await.is_err() {
        return; // never selected: the link is gone
    }
    let through_ours = relayed.side == Side::Relay;
    let lost = socket.relay.as_ref().map(|r| r.lost.clone());
    let relay_lost = async {
        match lost {
            Some(lost) if through_ours => lost.cancelled().await,
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(relay_lost);
    let Some(probing) = probing else {
        relay_lost.await;
        return close(connection);
    };
    let mut heard = probing.heard();
    let mut allowed = HashSet::new();
    let link_addr = relayed.quic_addr;
    loop {
        let direct = {
            let all = heard.borrow_and_update();
            for h in all.iter().filter(|h| !h.relayed && h.side == Side::Socket) {
                if allowed.insert(h.from) {
                    socket.paths.allow(link_addr, &Route::Direct(h.from));
                }
            }
            all.iter().find(|h| h.is_direct_confirmed()).map(|h| h.from)
        };
        if let Some(remote) = direct {
            return moved(&socket, link_addr, remote, made, &changes);
        }
        tokio::select! {
            changed = heard.changed() => if changed.is_err() {
                // The probing stopped: no direct path will be found; the relay carries on.
                relay_lost.await;
                return close(connection);
            },
            () = &mut relay_lost => return close(connection),
        }
    }
}

/// Routes the link straight to `remote` and reports it.
fn moved(
    socket: &UdpSide,
    link_addr: SocketAddr,
    remote: SocketAddr,
    made: Instant,
    changes: &watch::Sender<Option<PathChange>>,
) {
    socket.paths.switch(link_addr, Route::Direct(remote));
    let after = made.elapsed();
    tracing::info!(%remote, after_ms = after.as_millis() as u64, "relayed link moved to the direct path");
    changes.send_replace(Some(PathChange {
        path: Path::Direct,
        method: "udp_punch",
        remote,
        after,
    }));
}

/// Ends a link whose relay is gone: nothing else can carry it.
fn close(connection: Option<quinn::Connection>) {
    tracing::warn!("the TURN relay went away while the link still ran through it");
    if let Some(connection) = connection {
        connection.close(quinn::VarInt::from_u32(2), b"the TURN relay went away");
    }
}
