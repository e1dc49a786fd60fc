//! warpgate: an encrypted byte pipe between two machines, even when both sit behind NATs.
//!
//! # Layout
//!
//! From the bottom of the import graph up; a module imports only modules listed before it.
//!
//! - [`nat`]: the NAT vocabulary every layer shares (family, behaviours, allocation, facts).
//! - [`timing`]: every timing constant, each with the reason for its value.
//! - [`base32`]: the lowercase base32 text of addresses and node ids.
//! - [`config`]: TOML config, flags and environment resolved into one [`config::Settings`].
//! - [`identity`]: the node's P-256 key pair under its home, and the 10-byte node id.
//! - [`net`]: interface discovery and socket helpers.
//! - [`portmap`]: the router's port-mapping protocols (UPnP IGD, PCP, NAT-PMP; PCP pinholes on IPv6), asked by unicast;
//!   keeps the listen port mapped while listening.
//! - [`stun`]: STUN on the caller's own sockets (stun-proto) and the sans-IO NAT classification.
//! - [`addr`]: the address ("ticket"): a versioned binary record and its `wg…` text form.
//! - [`names`]: names instead of addresses: the syntax, the owner-signed record, the registry
//!   client, resolution by pin and majority, pins and local aliases.
//! - [`link`]: authenticated, encrypted, multiplexed links (TLS 1.3 + h2 over TCP, QUIC over UDP),
//!   pinned to the peer's key; the round trip that verifies a link end to end; closing with a
//!   reason the peer sees; a UDP socket shared by STUN and QUIC for punching.
//! - [`health`]: reachability of relay servers and brokers (nat-info's server checks).
//! - [`relay`]: a long-lived TURN allocation (turn-client-proto, sans-IO, driven by one task):
//!   refresh, permissions, channel bindings, data to and from peers, deallocation.
//! - [`signal`]: end-to-end sealed, acknowledged messages between nodes over several MQTT brokers.
//! - [`resume`]: resuming a `--recv` file: the `.part`, its running hash beside it, and the
//!   offer and verdict the two ends exchange (in the link's selection notes, then ahead of the
//!   sender's data).
//! - [`splice`]: stdio, files and TCP sockets ↔ link streams, with half-close and byte counts.
//! - [`udp_forward`]: UDP datagrams over a link (`--forward-udp`, `--local-udp`): flows per
//!   local source, QUIC datagrams or frames on a stream, idle flows forgotten, caps.
//! - [`discovery`]: what the network in front of this machine does (nat-info's report: the probe
//!   plan as data, the judging, the driver), the quick look `addr` and `listen` take, and the
//!   per-network cache of the facts.
//! - [`traversal`]: the strategy trait, the plan of attempts and the cascade runner; the
//!   rendezvous both ends agree on over signalling (the connector's offer, the listener's
//!   answer, the punching kit); sans-IO punching cores; one file per strategy.
//! - [`names`]: name syntax and the signed name records and releases.
//! - [`registry`]: the name registry server (`registry serve`): rules, SQLite store, HTTP API.
//! - [`report`]: what the user sees on stderr: human lines or JSON events.
//! - [`cli`]: clap definitions and the subcommand drivers; the one place signals are caught.
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
pub mod names;
pub mod nat;
pub mod net;
pub mod portmap;
pub mod registry;
pub mod relay;
pub mod report;
pub mod resume;
pub mod signal;
pub mod splice;
pub mod stun;
pub mod timing;
pub mod traversal;
pub mod udp_forward;

/// ALPN protocol id spoken on every link, TLS and QUIC alike.
pub const ALPN: &[u8] = b"warpgate/1";

/// Server name presented in TLS/QUIC handshakes. Peers are authenticated by their pinned key,
/// never by this name.
pub const TLS_SERVER_NAME: &str = "warpgate";
