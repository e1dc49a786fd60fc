//! The command-line front end: parses arguments ([`args`]), sets up logging and the runtime,
//! runs one subcommand driver, and turns its outcome into an exit code: 0 success, 1 runtime
//! failure, 2 usage error. SIGINT and SIGTERM are caught here and nowhere else (`Shutdown`).
//! No networking logic lives in this module; the drivers call into [`crate::link`],
//! [`crate::traversal`] and [`crate::splice`].

pub mod args;
mod connect;
pub mod docs;
mod listen;
mod names;
mod nat_info;
mod publish;
mod registry;
mod show;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

use crate::addr::{Address, Candidate, CandidateKind};
use crate::config::{Overrides, Settings};
use crate::discovery::quick::Quick;
use crate::identity::Identity;
use crate::link::pin::Credentials;
use crate::link::CloseReason;
use crate::names::client::{ClientError, Registry};
use crate::report::Reporter;
use crate::splice::Totals;
use crate::timing::SHUTDOWN_GRACE;
use args::{Cli, Command, Global, RegistryCommand};

/// A mistake in what the user asked for: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A transfer cut short by SIGINT or SIGTERM: exit code 1. Says how far it got when it had
/// started, and where the partial data is when it was being written to a file.
#[derive(Debug, Default)]
pub(crate) struct Interrupted {
    pub totals: Option<Totals>,
    pub kept: Option<PathBuf>,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted: the transfer did not complete")?;
        if let Some(t) = self.totals {
            write!(f, " ({} bytes sent, {} received)", t.sent, t.received)?;
        }
        if let Some(path) = &self.kept {
            write!(f, "; partial data kept in {}", path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for Interrupted {}

/// The process's one cancellation tree. [`run`] catches SIGINT and SIGTERM and cancels the
/// root; drivers hand a child token to each link, splice and forwarded connection, which then
/// close with [`CloseReason::Shutdown`]. A driver holding links says so with [`Shutdown::hold`]:
/// on a signal [`run`] then lets it finish its clean path (bounded by [`crate::timing::SHUTDOWN_GRACE`]);
/// a driver holding none (still looking for a path, say) is dropped at once.
pub(crate) struct Shutdown {
    root: CancellationToken,
    holders: TaskTracker,
}

impl Shutdown {
    fn new() -> Self {
        Self {
            root: CancellationToken::new(),
            holders: TaskTracker::new(),
        }
    }

    /// A token cancelled when the process is told to stop.
    pub fn token(&self) -> CancellationToken {
        self.root.child_token()
    }

    /// Marks, while held, that the caller has links to close when told to stop.
    pub fn hold(&self) -> TaskTrackerToken {
        self.holders.token()
    }
}

/// How a link is closed once its work ends: with the shutdown reason if `stop` was cancelled.
fn close_reason(stop: &CancellationToken) -> CloseReason {
    if stop.is_cancelled() {
        CloseReason::Shutdown
    } else {
        CloseReason::Done
    }
}

/// Installs the SIGINT and SIGTERM handlers now; the future resolves on the first of them, with
/// its name. A signal whose handler cannot be installed keeps its default action (the process
/// ends at once).
fn stop_signal() -> impl std::future::Future<Output = &'static str> {
    let watch = |kind: SignalKind, name: &'static str| {
        let handler = signal(kind);
        if let Err(e) = &handler {
            tracing::warn!("cannot watch for {name}: {e}");
        }
        async move {
            match handler {
                Ok(mut handler) => {
                    handler.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
            name
        }
    };
    let (interrupt, terminate) = (
        watch(SignalKind::interrupt(), "SIGINT"),
        watch(SignalKind::terminate(), "SIGTERM"),
    );
    async move {
        tokio::select! {
            name = interrupt => name,
            name = terminate => name,
        }
    }
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let start = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(&cli.global);
    one_malloc_arena();
    let reporter = Reporter {
        json: cli.global.json,
        quiet: cli.global.quiet,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            reporter.error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli, reporter, start));
    // A blocking stdin read may still be pending; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) if is_closed_output(&e) => {
            tracing::debug!("output closed by its reader, ending quietly: {e:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            reporter.error(&format!("{e:#}"));
            if e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<crate::addr::AddrError>().is_some()
                || e.downcast_ref::<crate::config::ConfigError>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// `warpgate … | head`: our reader went away; end quietly like any Unix filter.
fn is_closed_output(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<crate::splice::SpliceError>()
            .is_some_and(|s| s.is_closed_output())
    })
}

fn init_logging(global: &Global) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "warpgate={level},stun_proto=error,turn_client_proto=error,warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // With --json every stderr line is JSON, logs included, so events can be parsed line by line.
    let _ = if global.json {
        builder.json().try_init()
    } else {
        builder.compact().without_time().try_init()
    };
}

/// The node: settings, identity and the credentials links are made with.
pub(crate) struct Node {
    pub settings: Settings,
    pub identity: Identity,
    pub creds: Credentials,
}

/// The settings the global options, the config file and the environment resolve to.
fn settings(global: &Global) -> anyhow::Result<Settings> {
    Ok(Settings::resolve(&Overrides {
        home: global.home.clone(),
        config: global.config.clone(),
        brokers: global.brokers.clone(),
        stun: global.stun.clone(),
        turn: global.turn.clone(),
        registries: global.registries.clone(),
        offline: global.offline,
        no_portmap: global.no_portmap,
    })?)
}

impl Node {
    fn load(global: &Global) -> anyhow::Result<Self> {
        let settings = settings(global)?;
        let identity = Identity::load_or_create(&settings.home)?;
        let creds = Credentials::new(&identity)
            .context("cannot make a certificate from the identity key")?;
        Ok(Self {
            settings,
            identity,
            creds,
        })
    }

    fn default_port(&self) -> u16 {
        crate::net::derived_port(self.identity.public_key().fingerprint_u64())
    }

    /// A quick look at the NAT from UDP `port` (0: a free port), unless offline or no STUN
    /// server is configured.
    async fn look(&self, port: u16) -> Quick {
        if self.settings.offline || self.settings.stun.is_empty() {
            return Quick::default();
        }
        crate::discovery::quick::probe(port, &self.settings.stun).await
    }

    /// This node's address on `port`: every usable interface address, the brokers it listens
    /// on, the public candidate `look` found if it looked from this port, the port mappings
    /// `mapped` it holds on its gateway (a public candidate equal to one of them is listed as
    /// mapped: that says more), and the NAT facts (cached by `nat-info` for this network, else
    /// what `look` saw).
    fn address(&self, port: u16, look: &Quick, mapped: &[Candidate]) -> anyhow::Result<Address> {
        let ips = crate::net::interface_ips().context("cannot list network interfaces")?;
        let mut candidates: Vec<Candidate> = ips
            .into_iter()
            .map(|ip| Candidate {
                kind: CandidateKind::Local,
                addr: (ip, port).into(),
            })
            .collect();
        for m in mapped {
            if !candidates.iter().any(|c| c.addr == m.addr) {
                candidates.push(*m);
            }
        }
        if let Some(public) = look.public.filter(|_| look.port == port) {
            if !candidates.iter().any(|c| c.addr == public) {
                candidates.push(Candidate {
                    kind: CandidateKind::Public,
                    addr: public,
                });
            }
        }
        let mut address = Address::new(self.identity.public_key(), candidates);
        address.brokers = self.brokers();
        if !self.settings.offline {
            let cached = self.cached_nat_facts();
            address.nat = if cached.is_empty() {
                look.facts.into_iter().collect()
            } else {
                cached
            };
        }
        Ok(address)
    }

    /// What `nat-info` found on this network, if it ran here within the cache's lifetime.
    fn cached_nat_facts(&self) -> Vec<crate::nat::NatFacts> {
        crate::discovery::cache::fingerprint()
            .ok()
            .and_then(|fp| crate::discovery::cache::load(&self.settings.home, &fp))
            .unwrap_or_default()
    }

    /// The brokers this node listens on for signalling (none when offline).
    fn brokers(&self) -> Vec<crate::config::HostPort> {
        if self.settings.offline {
            return Vec::new();
        }
        crate::signal::brokers_for(&self.identity.public_key(), &self.settings.brokers)
    }

    /// The configured registries (each parsed, a bad or https URL kept as its error so it counts
    /// as configured but failing). None configured, or `--offline`: a usage error naming `what`.
    fn registries(&self, what: &str) -> anyhow::Result<Vec<Result<Registry, ClientError>>> {
        if self.settings.offline {
            return Err(usage(format!(
                "{what} needs the name registries, and --offline forbids contacting any"
            )));
        }
        if self.settings.registries.is_empty() {
            return Err(usage(format!(
                "{what} needs a name registry: pass --registry URL or set registries in the config file"
            )));
        }
        Ok(self
            .settings
            .registries
            .iter()
            .map(|url| Registry::parse(url))
            .collect())
    }

    /// The keys signalling messages are sealed and opened with.
    fn signal_keys(&self) -> anyhow::Result<crate::signal::Keys> {
        crate::signal::Keys::from_identity(&self.identity).context("cannot use the identity key")
    }
}

async fn run(cli: Cli, reporter: Reporter, start: Instant) -> anyhow::Result<ExitCode> {
    // Long-running services stop cleanly on a signal; a transfer cut short by one has failed.
    let service = match &cli.command {
        Command::Listen(a) => a.keep_open || a.forward.is_some() || a.forward_udp.is_some(),
        Command::Connect(a) => a.local.is_some() || a.local_udp.is_some(),
        Command::Registry(_) => true,
        _ => false,
    };
    let stopped = || {
        if service {
            Ok(ExitCode::SUCCESS)
        } else {
            Err(Interrupted::default().into())
        }
    };
    let shutdown = Shutdown::new();
    // Handlers are installed before the command starts, so no signal slips past them.
    let signalled = stop_signal();
    let command = async {
        match cli.command {
            Command::Addr(args) => show::addr(&Node::load(&cli.global)?, args, &reporter).await,
            Command::Listen(args) => {
                listen::run(Node::load(&cli.global)?, args, reporter, &shutdown).await
            }
            Command::Connect(args) => {
                connect::run(Node::load(&cli.global)?, args, reporter, start, &shutdown).await
            }
            Command::NatInfo(args) => {
                nat_info::run(&Node::load(&cli.global)?, args, &reporter).await
            }
            Command::Name(command) => {
                names::run(Node::load(&cli.global)?, command, &reporter).await
            }
            Command::Registry(RegistryCommand::Serve(args)) => {
                registry::serve(&cli.global, args, reporter, &shutdown).await
            }
        }
    };
    tokio::pin!(command);
    tokio::select! {
        result = &mut command => return result,
        name = signalled => tracing::info!("{name}: stopping"),
    }
    shutdown.root.cancel();
    if shutdown.holders.is_empty() {
        return stopped();
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, command).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("links still closing after {SHUTDOWN_GRACE:?}; leaving them");
            stopped()
        }
    }
}

/// glibc gives every thread that allocates an arena of its own and keeps what is freed there;
/// with the runtime's blocking threads (name lookups, stdio) the process then holds on to its
/// peaks: 256 concurrent streams through `listen --forward` left the listener at 80-140 MiB
/// RSS after a few rounds, one arena keeps it flat at 25 MiB (scripts/soak). The runtime is
/// single-threaded, so one arena costs no contention worth measuring.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before the runtime starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
