//! warpgate: an encrypted byte pipe between two machines, even when both sit behind NATs.
//!
//! # Layout
//!
//! - [`cli`]: clap definitions and the subcommand drivers; no networking logic.
//! - [`identity`]: the node's P-256 key pair under its home, and the node id.
//! - [`addr`]: the address ("ticket"): a versioned binary record and its `wg…` text form.
//! - [`config`]: TOML config, flags and environment resolved into one [`config::Settings`].
//! - [`net`]: interface discovery and socket helpers.
//! - [`stun`]: STUN on the caller's own sockets (stun-proto) and the sans-IO NAT classification.
//! - [`signal`]: end-to-end sealed, acknowledged messages between nodes over several MQTT brokers.
//! - [`discovery`]: what the network in front of this machine does (nat-info's report), the
//!   quick look `addr` and `listen` take, and the per-network cache of the facts.
//! - [`health`]: reachability of relay servers (a TURN allocation with the credentials).
//! - [`portmap`]: the router's port-mapping protocols (UPnP IGD, NAT-PMP), asked by unicast.
//! - [`link`]: authenticated, encrypted, multiplexed links (TLS 1.3 + h2 over TCP, QUIC over UDP),
//!   pinned to the peer's key, and the round trip that verifies a link end to end; a UDP socket
//!   shared by STUN and QUIC for punching.
//! - [`traversal`]: the strategy trait, the plan of attempts, and the cascade runner; one file per
//!   strategy; the signalled session both ends agree on and the listener's half of it.
//! - [`splice`]: stdio, files and TCP sockets ↔ link streams, with half-close and byte counts.
//! - [`report`]: what the user sees on stderr: human lines or JSON events.
//!
//! Protocol constants that both ends (and the tests) must agree on live here.

pub mod addr;
pub mod base32;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod health;
pub mod identity;
pub mod link;
pub mod nat;
pub mod net;
pub mod portmap;
pub mod report;
pub mod signal;
pub mod splice;
pub mod stun;
pub mod timing;
pub mod traversal;

/// ALPN protocol id spoken on every link, TLS and QUIC alike.
pub const ALPN: &[u8] = b"warpgate/1";

/// Server name presented in TLS/QUIC handshakes. Peers are authenticated by their pinned key,
/// never by this name.
pub const TLS_SERVER_NAME: &str = "warpgate";
