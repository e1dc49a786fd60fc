//! Names: `bob.p2p` instead of an address. A name's owner signs a [`record::Record`] binding the
//! name to its key and current address; registries store and serve those bytes but are never
//! trusted for them: clients verify every record themselves and pin name → key on first use.
//!
//! - [`name`]: the syntax (`bob` = `bob.p2p`, a DNS-style label).
//! - [`record`]: the signed record and release, their total binary codec.
//! - [`client`]: the HTTP client of one registry (docs/names.md's API), bounded in time and size.
//! - [`resolve`]: choosing the record from every registry's answer, pins and majorities (pure).
//! - [`pins`]: what this node remembers: pins (`known_names`) and local aliases (`aliases`).

pub mod client;
pub mod name;
pub mod pins;
pub mod record;
pub mod resolve;

pub use name::{Name, NameError};
pub use record::{Record, RecordError, Release};
