//! The lab harness: brings `scripts/lab` up once per test binary, tears it down when the
//! binary exits (however it exits), and runs commands, probes and the real `warpgate`
//! binary inside lab hosts (driven by the shared [`Running`], tests/common/process.rs).
//!
//! Teardown does not rely on destructors (statics are never dropped) nor on `atexit`
//! (skipped on abort or a signal): `up` also starts a small watchdog shell whose stdin is
//! a pipe held by this process. When the process ends for any reason the kernel closes the
//! pipe, the watchdog reads EOF and runs `scripts/lab down`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Finished, Running};

/// Servers of the lab's internet namespace (see the header of scripts/lab).
pub const SRV_A: &str = "198.51.100.1";
pub const SRV_B: &str = "198.51.100.2";
pub const SRV6_A: &str = "2001:db8:ff::1";
pub const SRV6_B: &str = "2001:db8:ff::2";
pub const TURN_USER: &str = "warpgate";
pub const TURN_PASS: &str = "labpass";

/// The lab's infrastructure as global flags: its broker and its two STUN servers.
pub fn infra() -> Vec<String> {
    [
        "--broker",
        &format!("{SRV_A}:1883"),
        "--stun",
        &format!("{SRV_A}:3478"),
        "--stun",
        &format!("{SRV_B}:3478"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The lab's two name registries (started by `scripts/lab up` in the internet namespace).
pub const REGISTRY_PORT: u16 = 7700;

/// `--registry` options naming both of the lab's registries.
pub fn registries() -> Vec<String> {
    [SRV_A, SRV_B]
        .iter()
        .flat_map(|srv| {
            [
                "--registry".to_string(),
                format!("http://{srv}:{REGISTRY_PORT}"),
            ]
        })
        .collect()
}

/// The outcome of one `listen` / `connect` pair.
pub struct Pair {
    pub listener: Finished,
    pub connector: Finished,
}

impl Pair {
    /// Starts `listen --port 0 <listen_args>` in `listener` with `listener_input`, then
    /// `connect ADDR <connect_args>` in `connector` with `connector_input`; waits for both.
    /// `None` when the listener never said it was listening.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        lab: &Lab,
        listener: &str,
        connector: &str,
        global: &[&str],
        listen_args: &[&str],
        connect_args: &[&str],
        listener_input: &[u8],
        connector_input: &[u8],
        timeout: Duration,
    ) -> Result<Pair, String> {
        let mut args = vec!["listen", "--port", "0"];
        args.extend_from_slice(listen_args);
        let mut l = lab.spawn(listener, global, &args, listener_input);
        let Some(listening) = l.wait_event_within("listening", Duration::from_secs(15)) else {
            let f = l.finish(Duration::from_secs(1));
            return Err(format!("listener exit {:?}: {:?}", f.code, f.stderr));
        };
        let addr = listening["addr"].as_str().unwrap_or_default().to_string();
        let mut args = vec!["connect", addr.as_str()];
        args.extend_from_slice(connect_args);
        let c = lab.spawn(connector, global, &args, connector_input);
        let connector = c.finish(timeout);
        let grace = if connector.code == Some(0) { 10 } else { 0 };
        let listener = l.finish(Duration::from_secs(grace));
        Ok(Pair {
            listener,
            connector,
        })
    }
}

/// One host of the lab, from the `topology` file `scripts/lab up` writes.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    /// The NAT type of its router: public, fullcone, addrrestricted, portrestricted,
    /// symmetric, cgnat, udpblock or upnp.
    pub nat: String,
    pub router: String,
    pub ipv4: String,
    pub ipv6: String,
    pub gateway4: String,
    /// The IPv4 address the internet sees this host's traffic come from.
    pub public4: String,
}

pub struct Lab {
    pub prefix: String,
    pub state: PathBuf,
    pub hosts: Vec<Host>,
    /// Kept open for the life of the process: its closing is the teardown signal.
    _watchdog: Mutex<ChildStdin>,
}

/// Tests that change the lab (packet loss) take this for writing; everyone else reads.
static SHARED: RwLock<()> = RwLock::new(());

pub fn shared() -> RwLockReadGuard<'static, ()> {
    SHARED.read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SHARED.write().unwrap_or_else(|e| e.into_inner())
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    repo().join("scripts/lab")
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The lab, brought up on first use. `None` means "skip": only outside CI and only when
/// not root. In CI, or as root, a lab that cannot come up fails the test.
pub fn lab() -> Option<&'static Lab> {
    static LAB: OnceLock<Result<Lab, String>> = OnceLock::new();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root && !in_ci() {
        // Straight to stderr, past libtest's output capture, once per binary.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "SKIP: the NAT lab tests need root (network namespaces, nftables); \
                 run them as root, or set CI to make this a failure"
            );
        });
        return None;
    }
    match LAB.get_or_init(Lab::up) {
        Ok(lab) => Some(lab),
        Err(e) => panic!("the NAT lab could not come up: {e}"),
    }
}

impl Lab {
    fn up() -> Result<Lab, String> {
        // LAB_PREFIX names the run (so engineers sharing a machine keep their labs apart).
        let prefix = std::env::var("LAB_PREFIX")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| format!("wt{:06x}", std::process::id()));
        let started = Instant::now();
        // The watchdog first, so that even a half-built lab is removed.
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg("trap '' INT TERM HUP; read _ignored; exec \"$0\" down >/dev/null 2>&1")
            .arg(script())
            .env("LAB_PREFIX", &prefix)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the teardown watchdog: {e}"))?;
        let stdin = watchdog.stdin.take().expect("piped stdin");
        let out = Command::new(script())
            .arg("up")
            .env("LAB_PREFIX", &prefix)
            .env("LAB_QUIET", "1")
            .env("LAB_WARPGATE", crate::process::BIN)
            .output()
            .map_err(|e| format!("cannot run scripts/lab: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/lab up failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let state = PathBuf::from(format!("/tmp/warpgate-lab-{prefix}"));
        let topology = std::fs::read_to_string(state.join("topology"))
            .map_err(|e| format!("no topology in {}: {e}", state.display()))?;
        let hosts = topology
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() == 7).then(|| Host {
                    name: f[0].into(),
                    nat: f[1].into(),
                    router: f[2].into(),
                    ipv4: f[3].into(),
                    ipv6: f[4].into(),
                    gateway4: f[5].into(),
                    public4: f[6].into(),
                })
            })
            .collect::<Vec<_>>();
        eprintln!(
            "lab {prefix}: {} hosts up in {} ms",
            hosts.len(),
            started.elapsed().as_millis()
        );
        Ok(Lab {
            prefix,
            state,
            hosts,
            _watchdog: Mutex::new(stdin),
        })
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the lab"))
    }

    /// A command that runs `program` inside lab namespace `ns` (a host or a router).
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &format!("{}-{ns}", self.prefix), program]);
        cmd
    }

    /// `warpgate --home <home> --json <global...> <args...>` inside lab host `host`.
    pub fn warpgate(&self, host: &str, home: &Path, global: &[&str], args: &[&str]) -> Command {
        let mut cmd = self.command(host, crate::process::BIN);
        cmd.arg("--home")
            .arg(home)
            .arg("--json")
            .args(global)
            .args(args)
            .env("RUST_BACKTRACE", "1");
        cmd
    }

    /// Starts [`Lab::warpgate`] with a fresh home (kept until the process is gone), feeding
    /// `input` on stdin and then closing it; stdout is collected.
    pub fn spawn(&self, host: &str, global: &[&str], args: &[&str], input: &[u8]) -> Running {
        let home = tempfile::tempdir().expect("tempdir");
        self.spawn_in(host, home.path(), global, args, input)
            .keeping(home)
    }

    /// Like [`Lab::spawn`] with a home the caller keeps (state across runs).
    pub fn spawn_in(
        &self,
        host: &str,
        home: &Path,
        global: &[&str],
        args: &[&str],
        input: &[u8],
    ) -> Running {
        Running::spawn_with_input(&mut self.warpgate(host, home, global, args), input)
    }

    /// Run a command in a host and collect its output.
    pub fn exec(&self, host: &str, args: &[&str]) -> Output {
        self.command(host, args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {host}: {e}"))
    }

    /// Run tests/lab/probe.py in a host; it prints one JSON document.
    pub fn probe(&self, host: &str, args: &[&str]) -> Value {
        let script = self.state.join("probe.py");
        let mut all = vec!["python3", script.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = self.exec(host, &all);
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "probe {args:?} in {host}: bad output {text:?} ({e}); stderr {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Set packet loss on a router (0 switches it off). Hold `exclusive()` around it.
    pub fn loss(&self, router: &str, percent: u32) {
        let percent = percent.to_string();
        self.script(&["loss", router, &percent])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Every host IPv4-only (`scripts/lab ipv6 off`) until the guard is dropped. Hold
    /// `exclusive()` around it: the other tests expect the dual-stack lab.
    pub fn ipv4_only(&self) -> Ipv4Only<'_> {
        let guard = Ipv4Only(self);
        self.script(&["ipv6", "off"])
            .unwrap_or_else(|e| panic!("{e}"));
        guard
    }

    fn script(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new(script())
            .args(args)
            .env("LAB_PREFIX", &self.prefix)
            .output()
            .map_err(|e| format!("scripts/lab {args:?}: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("scripts/lab {args:?}: {out:?}")),
        }
    }
}

/// The lab's hosts without IPv6 while it lives (see [`Lab::ipv4_only`]).
pub struct Ipv4Only<'a>(&'a Lab);

impl Drop for Ipv4Only<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.script(&["ipv6", "on"]) {
            eprintln!("the lab stays IPv4-only: {e}");
        }
    }
}

/// Run `f` over `items` on up to `width` threads, keeping the input order in the result.
pub fn parallel<T: Sync, R: Send>(items: &[T], width: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = Mutex::new(0usize);
    let results = Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..width.max(1) {
            s.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().unwrap().insert(i, r);
            });
        }
    });
    results.into_inner().unwrap().into_values().collect()
}

/// A file of `mib` MiB of random bytes.
pub fn random_file(path: &Path, mib: usize) {
    let status = Command::new("head")
        .arg("-c")
        .arg((mib << 20).to_string())
        .arg("/dev/urandom")
        .stdout(std::fs::File::create(path).expect("create"))
        .status()
        .expect("head");
    assert!(status.success());
}

pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `len` pseudo-random bytes from `seed` (xorshift): test data that compresses to nothing.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Owned flags as the `&str` list the spawners take.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
