//! Signalling through real mosquitto brokers on loopback: sealed messages between two nodes,
//! brokers that are down or die, and hostile publishers. (The codec and the retry/dedup logic
//! are unit-tested in `src/signal/`.)
//!
//! Index:
//! - `daemon`     — waiting for a server started here to listen (tests/common/daemon.rs)
//! - `mosquitto` — mosquitto processes on free loopback ports (tests/common/mosquitto.rs)
//! - `support`  — a 3.1.1-only broker, nodes, a raw MQTT client
//! - `delivery` — Offer/Answer through two brokers (with figures), a broker down from the start,
//!   a broker killed mid-session and restarted
//! - `hostile`  — garbage, oversized, forged, misaddressed, replayed and stale messages are
//!   dropped and counted, never delivered; huge and retained publishes cost no connection (MQTT
//!   5) or one quick reconnect (a 3.1.1-only broker); one sender's flood locks no one out
//! - `leaks`    — what the broker's log shows: no node ids in topics or client ids, answers on
//!   the session's inbox; silence towards keys outside `--allow`

#[path = "common/daemon.rs"]
mod daemon;
#[path = "signal/delivery.rs"]
mod delivery;
#[path = "signal/hostile.rs"]
mod hostile;
#[path = "signal/leaks.rs"]
mod leaks;
#[path = "common/mosquitto.rs"]
mod mosquitto;
#[path = "signal/support.rs"]
mod support;
