//! The command line as clap sees it: global options and subcommands (DESIGN.md §1). Only shapes
//! and help text live here; values are validated and turned into real objects by the drivers.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "warpgate",
    version,
    about = "An encrypted byte pipe between two machines, even behind NATs"
)]
#[command(propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// State directory: identity key, config, caches (two homes = two nodes on one machine)
    #[arg(long, global = true, env = "WARPGATE_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// TOML config file [default: config.toml in the config directory]
    #[arg(long, global = true, env = "WARPGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// MQTT broker for signalling, replaces the configured list (repeatable)
    #[arg(long = "broker", global = true, value_name = "URL")]
    pub brokers: Vec<String>,
    /// STUN server, replaces the configured list (repeatable)
    #[arg(long = "stun", global = true, value_name = "HOST:PORT")]
    pub stun: Vec<String>,
    /// TURN server, replaces the configured list (repeatable)
    #[arg(
        long = "turn",
        global = true,
        value_name = "turn://USER:PASS@HOST:PORT[?transport=tcp]"
    )]
    pub turn: Vec<String>,
    /// Name registry, replaces the configured list (repeatable)
    #[arg(long = "registry", global = true, value_name = "URL")]
    pub registries: Vec<String>,
    /// Use no infrastructure at all: direct paths only
    #[arg(long, global = true)]
    pub offline: bool,
    /// Ask the home router for no port mapping (UPnP IGD, PCP, NAT-PMP) of the listen port or of a connection's punching port, and no IPv6 pinhole (PCP)
    /// (--offline implies it)
    #[arg(long, global = true)]
    pub no_portmap: bool,
    /// Machine-readable output: reports as JSON on stdout, events as JSON lines on stderr
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail on stderr (-v: every connection attempt, -vv: debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print this node's address
    Addr(AddrArgs),
    /// Accept peers: splice the first one to stdin/stdout, a file or a local port
    Listen(ListenArgs),
    /// Connect to a peer by address or name
    Connect(ConnectArgs),
    /// Show the NAT and network in front of this machine
    NatInfo(NatInfoArgs),
    /// Names: claim, look up or release one; local aliases and pinned keys
    #[command(subcommand)]
    Name(NameCommand),
    /// Run a name registry
    #[command(subcommand)]
    Registry(RegistryCommand),
}

#[derive(Debug, Args)]
pub struct AddrArgs {
    /// Listen port to put in the address [default: derived from the identity]
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Port for TCP and UDP [default: derived from the identity; 0 = any free port]
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Keep accepting peers after the first
    #[arg(short, long)]
    pub keep_open: bool,
    /// Connect each inbound stream to this TCP port (default host: localhost)
    #[arg(long, value_name = "[HOST:]PORT", conflicts_with_all = ["send", "recv"])]
    pub forward: Option<String>,
    /// Send the datagrams of a peer's `connect --local-udp` to this UDP port (default host:
    /// localhost, its IPv4 address first), one socket per flow; not with --forward
    ///
    /// Each source address on the peer's side is a flow, with a socket of its own here whose
    /// replies go back to that source. Over a QUIC link datagrams travel as QUIC datagrams:
    /// unreliable and unordered like UDP itself, and one larger than the path carries is dropped
    /// and counted, never truncated. Over a TCP link they travel in order on one stream: none is
    /// lost, but a lost TCP segment holds up every datagram behind it (head-of-line blocking)
    /// until it is retransmitted, so latency jumps under loss. A TCP-forward stream carries its
    /// application's bytes from the first one, so one listener does one or the other: run a
    /// second listener (its own --port) for TCP.
    #[arg(long, value_name = "[HOST:]PORT", conflicts_with_all = ["send", "recv", "forward"])]
    pub forward_udp: Option<String>,
    /// Close a UDP flow after this many seconds without a datagram either way
    #[arg(long, value_name = "SECS", requires = "forward_udp", default_value_t = crate::timing::UDP_FLOW_IDLE.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub udp_idle: u64,
    /// Send this file instead of stdin
    #[arg(long, value_name = "FILE")]
    pub send: Option<PathBuf>,
    /// Write what the peer sends to this file instead of stdout (via FILE.part, resumed if there)
    #[arg(long, value_name = "FILE", conflicts_with = "keep_open")]
    pub recv: Option<PathBuf>,
    /// Claim this name on the registries, renew it and republish it when the address changes
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Accept only this peer: its address, key fingerprint or pinned name (the whole key), or
    /// its node id (80 bits of it) (repeatable)
    #[arg(long = "allow", value_name = "PEER")]
    pub allow: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The peer: an address (wg…) or a name (bob.p2p)
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Listen on this local TCP port and carry each connection to the peer's --forward
    #[arg(long, value_name = "[HOST:]PORT", conflicts_with_all = ["send", "recv"])]
    pub local: Option<String>,
    /// Listen on this local UDP port and carry each source's datagrams to the peer's
    /// --forward-udp (default host: 127.0.0.1)
    ///
    /// Each source address is a flow; replies come back to the source that asked. Over a QUIC
    /// link datagrams travel as QUIC datagrams: unreliable and unordered like UDP itself, and
    /// one larger than the path carries is dropped and counted, never truncated. Over a TCP link
    /// they travel in order on one stream: none is lost, but a lost TCP segment holds up every
    /// datagram behind it (head-of-line blocking) until it is retransmitted, so latency jumps
    /// under loss. For WireGuard, games or VoIP prefer QUIC (--via quic).
    #[arg(long, value_name = "[HOST:]PORT", conflicts_with_all = ["send", "recv", "local"])]
    pub local_udp: Option<String>,
    /// Forget a UDP flow after this many seconds without a datagram either way
    #[arg(long, value_name = "SECS", requires = "local_udp", default_value_t = crate::timing::UDP_FLOW_IDLE.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub udp_idle: u64,
    /// Send this file instead of stdin
    #[arg(long, value_name = "FILE")]
    pub send: Option<PathBuf>,
    /// Write what the peer sends to this file instead of stdout (via FILE.part, resumed if there)
    #[arg(long, value_name = "FILE")]
    pub recv: Option<PathBuf>,
    /// Only these methods: strategies (direct, reverse, tcp_punch, udp_punch, random_probe, relay) and/or transports (tcp, quic)
    #[arg(long, value_name = "METHOD[,METHOD]")]
    pub via: Vec<String>,
    /// Give up finding a path after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct NatInfoArgs {
    /// Give up after this many seconds, whatever is still unanswered
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub timeout: u64,
}

/// Default lifetime of a claimed name's record: 14 days.
pub const DEFAULT_NAME_LIFETIME: u64 = 14 * 24 * 3600;

#[derive(Debug, Subcommand)]
pub enum NameCommand {
    /// Claim NAME for this node on every configured registry (done when a majority accepts)
    Claim {
        /// The name: 1-63 lowercase letters, digits and inner hyphens, .p2p optional
        name: String,
        /// How long the record stays valid, in seconds (at most 30 days) [default: 14 days]
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_NAME_LIFETIME, hide_default_value = true, value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
        lifetime: u64,
    },
    /// Show what NAME resolves to: a local alias, else the registries' verified record
    Lookup { name: String },
    /// Give NAME up on every configured registry (a signed release)
    Release { name: String },
    /// Remember ALIAS as a local name for ADDRESS, resolved before any registry
    Add {
        /// The alias: a valid name (bob or bob.p2p)
        alias: String,
        /// The address it stands for (wg…)
        address: String,
    },
    /// Show local aliases and pinned name keys
    List,
    /// Forget NAME's pinned key (to accept a new one) and its alias
    Forget { name: String },
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve the registry's HTTP API (docs/names.md) until SIGINT or SIGTERM
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on
    #[arg(long, value_name = "ADDR:PORT", default_value_t = SocketAddr::from(([0, 0, 0, 0], crate::registry::DEFAULT_PORT)))]
    pub bind: SocketAddr,
    /// SQLite database of the names [default: registry.db in the home directory]
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM); needs --key
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Names one key may hold
    #[arg(long, value_name = "N", default_value_t = crate::registry::DEFAULT_MAX_NAMES, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_names: u32,
    /// Claims, renewals and releases per minute from one source address
    #[arg(long, value_name = "N", default_value_t = crate::registry::DEFAULT_WRITES_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    pub writes_per_minute: u32,
    /// Seconds an expired name stays reserved to its owner (7 days)
    #[arg(long, value_name = "SECS", default_value_t = crate::timing::NAME_GRACE.as_secs())]
    pub grace: u64,
}
