//! End-to-end tests of the real `warpgate` binary on this machine: separate homes, real
//! processes, loopback only. (Traversal through NATs is proven in the lab binary, `tests/lab.rs`.)
//!
//! Index:
//! - `process`  — the warpgate process driver shared with the lab (tests/common/process.rs)
//! - `support`  — nodes (homes, loopback-only commands, listeners), test data and digests
//! - `transfer` — stdio both ways at once over TCP and QUIC, files, half-close, `| head`
//! - `forward`  — `listen --forward` + `connect --local` with many concurrent clients
//! - `auth`     — `--allow`, and a listener whose key does not match the address
//! - `failure`  — malformed input (exit 2), a peer killed mid-transfer (exit 1), no listener
//! - `docs`     — committed completions and man pages match the clap definition

#[path = "e2e/auth.rs"]
mod auth;
#[path = "e2e/docs.rs"]
mod docs;
#[path = "e2e/failure.rs"]
mod failure;
#[path = "e2e/forward.rs"]
mod forward;
#[path = "common/process.rs"]
mod process;
#[path = "e2e/support.rs"]
mod support;
#[path = "e2e/transfer.rs"]
mod transfer;
