//! End-to-end tests of the real `warpgate` binary on this machine: separate homes, real
//! processes, loopback only. (Traversal through NATs is proven in the lab binary, `tests/lab.rs`.)
//!
//! Index:
//! - `process`  — the warpgate process driver shared with the lab (tests/common/process.rs)
//! - `daemon`, `mosquitto` — a broker on loopback for the signalling test (tests/common/)
//! - `support`  — nodes (homes, loopback-only commands, listeners), test data and digests
//! - `transfer` — stdio both ways at once over TCP and QUIC, files, half-close, `| head`
//! - `flood`    — a listener without `--allow` under 1000 silent TCP connections, blind QUIC
//!   Initials and garbage datagrams: a real peer still connects within 2 s, RSS stays small;
//!   its signalling topic flooded with oversized and garbage publishes: still reachable
//! - `forward`  — `listen --forward` + `connect --local` with many concurrent clients; the
//!   warning that a forward without `--allow` is open to anyone with the address
//! - `forward_udp` — `listen --forward-udp` + `connect --local-udp` over QUIC and TCP: echoes,
//!   100,000 datagrams (loss, latency), 50 flows kept apart, oversized datagrams counted and
//!   never truncated, idle flows forgotten, the flags' limits
//! - `auth`     — `--allow` (over signalling too: strangers get silence), and a listener whose
//!   key does not match the address
//! - `failure`  — malformed input (exit 2), a peer killed mid-transfer (exit 1), no listener;
//!   a symlinked `.part` or hash record and an identity key others can read refused (exit 1)
//! - `interrupt` — SIGINT/SIGTERM in each long-running mode: links closed with a reason the
//!   peer sees at once, `.part` kept, services exit 0 and interrupted transfers 1
//! - `resume`   — `--recv` resumed after a SIGKILL (2 GiB; both directions; TCP and QUIC)
//!   moves only the rest; an altered `.part`, a damaged hash record and a stdin sender start
//!   over and say so; stdio and forwarded streams never see a resume byte
//! - `docs`     — committed completions and man pages match the clap definition
//! - `registry` — `registry serve` over HTTP: the name rules, forged and malformed requests,
//!   one winner among simultaneous claims, expiry and grace
//! - `registry_limits` — the registry under pressure: SIGKILL loses nothing acknowledged,
//!   quota, write rate limit, TLS, idle strangers
//! - `names`    — aliases, pins, the name commands, and claim → lookup → connect by name
//!   against registry doubles served from the test (a strict one and a compromised one)

#[path = "e2e/auth.rs"]
mod auth;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "e2e/docs.rs"]
mod docs;
#[path = "e2e/failure.rs"]
mod failure;
#[path = "e2e/flood.rs"]
mod flood;
#[path = "e2e/forward.rs"]
mod forward;
#[path = "e2e/forward_udp.rs"]
mod forward_udp;
#[path = "e2e/interrupt.rs"]
mod interrupt;
#[path = "common/mosquitto.rs"]
mod mosquitto;
#[path = "e2e/names.rs"]
mod names;
#[path = "common/process.rs"]
mod process;
#[path = "e2e/registry.rs"]
mod registry;
#[path = "e2e/registry_limits.rs"]
mod registry_limits;
#[path = "e2e/resume.rs"]
mod resume;
#[path = "e2e/support.rs"]
mod support;
#[path = "e2e/transfer.rs"]
mod transfer;
