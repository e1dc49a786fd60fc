//! The punching handshakes as sans-IO state machines, the way [`crate::signal::session`] and
//! quinn-proto work: no socket and no clock inside. Every input carries `now`
//! (`handle_datagram`, `handle_timeout`, …); outputs are pulled (`poll_transmit` or
//! `poll_action`, `poll_timeout`, `poll_event`). A thin tokio loop in the strategy file drives
//! each one over the kit's real sockets.
//!
//! - [`udp::Prober`]: UDP probes to every peer candidate through the window, answers to the
//!   peer's probes, and the first address the peer was heard from (`udp_punch`).
//! - [`random::Fan`] and [`random::Spray`]: the hard and the easy side of `random_probe`
//!   (many sockets to one address; one socket to random ports).
//! - [`tcp::Dialer`]: when to start each TCP simultaneous-open try, when to give it up, and
//!   when to stop (`tcp_punch`).
//!
//! The tests in `sim` run two machines against each other on a simulated clock through
//! simulated NATs with real mapping and filtering tables.

pub mod random;
pub mod tcp;
pub mod udp;

#[cfg(test)]
mod sim;
