//! The NAT lab test binary (issue 3): real network namespaces, nftables NAT routers,
//! mosquitto, coturn, miniupnpd and two name registries, built by `scripts/lab` once for this binary and torn
//! down when it exits. Needs root; outside CI without root every test prints SKIP and
//! passes, with CI set a lab that cannot come up fails.
//!
//! Index:
//! - `harness`  — lab up/down, commands and probes in hosts, warpgate commands in hosts
//! - `process`  — the warpgate process driver shared with e2e (tests/common/process.rs)
//! - `address`  — public candidates and NAT facts in the address
//! - `nat`      — each router maps and filters as its NAT type promises (IPv4, IPv6), loss
//! - `services` — STUN, TURN, MQTT, UPnP and NAT-PMP work from behind every router
//! - `matrix`   — `warpgate connect` between every ordered pair of hosts (240/240 with the relay)
//! - `relay`    — 1 GiB each way relayed, relayed→direct upgrade, TURN killed, misconfigured TURN
//! - `natinfo`  — `warpgate nat-info` reports each router's behaviours; broken servers
//! - `faults`   — 1 GiB through 5% loss (TCP, QUIC) and 1% loss relayed; a broker killed
//!   mid-transfer and back; a peer killed mid-transfer
//! - `random_probe` — symmetric ↔ port-restricted, CGNAT, UPnP, address-restricted direct by
//!   random_probe (19 of 20), within its bounds; beside the relay, and with the probe blocked
//! - `traversal` — punching between NATs: repeated runs, bulk data, a dead broker, no listener
//! - `udp`      — UDP forwarding across a NAT pair: a DNS query to dnsmasq, 10,000 datagrams
//!   echoed with loss and latency
//! - `portmap`  — a UPnP/NAT-PMP listener reached `--offline` at its mapped candidate; the
//!   mapping deleted on exit and on SIGINT; `--no-portmap`
//! - `names`    — claim and connect by name across sites, a taken name, a claim race, a
//!   registry killed or down or lying, a changed pinned key, rate limits

#[path = "lab/address.rs"]
mod address;
#[path = "lab/faults.rs"]
mod faults;
#[path = "lab/harness.rs"]
mod harness;
#[path = "lab/matrix.rs"]
mod matrix;
#[path = "lab/names.rs"]
mod names;
#[path = "lab/nat.rs"]
mod nat;
#[path = "lab/natinfo.rs"]
mod natinfo;
#[path = "lab/portmap.rs"]
mod portmap;
#[path = "common/process.rs"]
mod process;
#[path = "lab/random_probe.rs"]
mod random_probe;
#[path = "lab/relay.rs"]
mod relay;
#[path = "lab/services.rs"]
mod services;
#[path = "lab/traversal.rs"]
mod traversal;
#[path = "lab/udp.rs"]
mod udp;
