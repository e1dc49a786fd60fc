//! The TURN relay, client side: one long-lived allocation on a configured TURN server
//! ([`Allocation`]), made over UDP or TCP (TCP when the URL says `?transport=tcp`, or when UDP
//! hears nothing), kept alive by refreshes, with permissions and channel bindings for peers, and
//! datagrams to and from them. The credentials are used here only; peers learn the relayed
//! address. Neighbours: [`crate::health`] makes one-shot allocations for nat-info.

mod allocation;
mod driver;
mod io;
mod state;

pub use allocation::{Allocation, RelaySender};
pub use state::{RelayError, RelayStats, RelayTransport};
