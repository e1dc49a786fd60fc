//! Signalling through real mosquitto brokers on loopback: sealed messages between two nodes,
//! brokers that are down or die, and hostile publishers. (The codec and the retry/dedup logic
//! are unit-tested in `src/signal/`.)
//!
//! Index:
//! - `daemon`     — waiting for a server started here to listen (tests/common/daemon.rs)
//! - `support`  — mosquitto processes on free loopback ports, nodes, a raw MQTT client
//! - `delivery` — Offer/Answer through two brokers (with figures), a broker down from the start,
//!   a broker killed mid-session and restarted
//! - `hostile`  — garbage, oversized, forged, misaddressed, replayed and stale messages are
//!   dropped and counted, never delivered

#[path = "common/daemon.rs"]
mod daemon;
#[path = "signal/delivery.rs"]
mod delivery;
#[path = "signal/hostile.rs"]
mod hostile;
#[path = "signal/support.rs"]
mod support;
