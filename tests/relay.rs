//! The TURN client (`warpgate::relay`) against real coturn servers on loopback: allocations
//! over UDP and TCP, data between two allocations through the relay, refreshes, and the
//! failures (wrong password, nothing listening) and deallocation releasing the relayed port.
//!
//! Index:
//! - `daemon`     — waiting for a server started here to listen (tests/common/daemon.rs)
//! - `support`    — a `turnserver` process on free loopback ports, its files in a tempdir,
//!   killed on drop; allocation helpers
//! - `allocation` — allocate over UDP, over TCP, over TCP when UDP is refused or silent;
//!   `close()` and drop release the relayed port; wrong password; unreachable server; a
//!   server that dies closes the allocation
//! - `data`       — two allocations exchange datagrams both ways through channels, 1000
//!   datagrams of 1200 bytes (with figures), still working after more than one lifetime of
//!   refreshes

#[path = "relay/allocation.rs"]
mod allocation;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "relay/data.rs"]
mod data;
#[path = "relay/support.rs"]
mod support;
