//! Names across the lab (issue 10): the lab's two registries (`warpgate registry serve` in the
//! internet namespace) and registries a test starts there itself when it needs to kill, rate
//! limit or impersonate one. Every name is made unique per run, since the lab's registries
//! outlive a test.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{infra, lab, registries, shared, strs, Lab, SRV_A, SRV_B};
use crate::process::{Finished, Running};

const WAIT: Duration = Duration::from_secs(20);

/// A name no other run or test has used.
fn unique(stem: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{stem}-{}-{nanos:x}", std::process::id())
}

/// Runs one warpgate command with `home` in `host` and waits for it.
fn run(lab: &Lab, host: &str, home: &Path, global: &[&str], args: &[&str]) -> Finished {
    lab.spawn_in(host, home, global, args, b"").finish(WAIT)
}

/// The JSON document a `name` command printed.
fn doc(f: &Finished) -> Value {
    serde_json::from_str(f.stdout.trim()).unwrap_or(Value::Null)
}

fn error(f: &Finished) -> String {
    f.event("error")
        .and_then(|e| e["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A registry of the test's own in the internet namespace, on `addr:port`.
struct OwnRegistry {
    running: Running,
    url: String,
    db: std::path::PathBuf,
    _home: tempfile::TempDir,
}

impl OwnRegistry {
    fn start(lab: &Lab, addr: &str, port: u16, extra: &[&str]) -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        let db = home.path().join("registry.db");
        Self::start_on(lab, addr, port, extra, home, db)
    }

    fn start_on(
        lab: &Lab,
        addr: &str,
        port: u16,
        extra: &[&str],
        home: tempfile::TempDir,
        db: std::path::PathBuf,
    ) -> Self {
        let bind = format!("{addr}:{port}");
        let db_text = db.to_string_lossy().to_string();
        let mut args = vec!["registry", "serve", "--bind", &bind, "--db", &db_text];
        args.extend_from_slice(extra);
        let mut running =
            Running::spawn(&mut lab.warpgate("inet", home.path(), &["--offline"], &args));
        running
            .wait_event_within("registry", WAIT)
            .unwrap_or_else(|| panic!("registry on {bind} did not start: {}", running.stderr()));
        Self {
            running,
            url: format!("http://{bind}"),
            db,
            _home: home,
        }
    }

    fn global(&self) -> Vec<String> {
        vec!["--registry".into(), self.url.clone()]
    }

    /// SIGKILL, then a new server on the same database.
    fn kill_and_restart(mut self, lab: &Lab, addr: &str, port: u16) -> Self {
        let _ = self.running.child.kill();
        let _ = self.running.child.wait();
        Self::start_on(lab, addr, port, &[], self._home, self.db)
    }
}

#[test]
fn a_name_claimed_by_a_listener_connects_across_sites() {
    let Some(lab) = lab() else { return };
    let _shared = shared();
    let name = unique("tar");
    let global: Vec<String> = infra().into_iter().chain(registries()).collect();
    let global = strs(&global);
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut listener = lab.spawn(
        "pr1h",
        &global,
        &["listen", "--port", "0", "--name", &name],
        &data,
    );
    let listening = listener
        .wait_event_within("listening", WAIT)
        .unwrap_or_else(|| panic!("listen --name failed: {}", listener.stderr()));
    assert_eq!(listening["name"], format!("{name}.p2p"));
    let connector = lab
        .spawn(
            "pr2h",
            &global,
            &["connect", &format!("{name}.p2p"), "--timeout", "10"],
            b"",
        )
        .finish(Duration::from_secs(30));
    let listener = listener.finish(Duration::from_secs(10));
    assert_eq!(connector.code, Some(0), "{:?}", connector.stderr);
    assert_eq!(listener.code, Some(0), "{:?}", listener.stderr);
    assert_eq!(
        Sha256::digest(&connector.stdout_bytes),
        Sha256::digest(&data),
        "the bytes arrived intact"
    );
    let resolved = connector.event("resolved").expect("a resolved event");
    let ms = resolved["resolve_ms"].as_u64().expect("resolve_ms");
    assert!(ms < 1000, "resolving took {ms} ms");
    eprintln!("lab names: {name}.p2p resolved in {ms} ms");
}

#[test]
fn a_second_key_claiming_a_taken_name_is_refused_naming_the_owner() {
    let Some(lab) = lab() else { return };
    let _shared = shared();
    let name = unique("taken");
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let global = registries();
    let global = strs(&global);
    let claimed = run(
        lab,
        "pub1h",
        first.path(),
        &global,
        &["name", "claim", &name],
    );
    assert_eq!(claimed.code, Some(0), "{:?}", claimed.stderr);
    let owner = doc(&claimed)["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(owner.len(), 52, "{}", claimed.stdout);
    let refused = run(
        lab,
        "fc1h",
        second.path(),
        &global,
        &["name", "claim", &name],
    );
    assert_eq!(refused.code, Some(1), "{:?}", refused.stderr);
    assert!(error(&refused).contains(&owner), "{}", error(&refused));
}

#[test]
fn two_keys_claiming_one_free_name_at_once_one_wins() {
    let Some(lab) = lab() else { return };
    let _shared = shared();
    let global = registries();
    let global = strs(&global);
    for round in 0..5 {
        let name = unique(&format!("race{round}"));
        let claims: Vec<Running> = ["ar1h", "cg1h"]
            .iter()
            .map(|host| lab.spawn(host, &global, &["name", "claim", &name], b""))
            .collect();
        let codes: Vec<Option<i32>> = claims.into_iter().map(|c| c.finish(WAIT).code).collect();
        let wins = codes.iter().filter(|c| **c == Some(0)).count();
        let refusals = codes.iter().filter(|c| **c == Some(1)).count();
        assert_eq!(
            (wins, refusals),
            (1, 1),
            "round {round}: exit codes {codes:?}"
        );
    }
}

#[test]
fn a_killed_registry_keeps_every_acknowledged_claim() {
    let Some(lab) = lab() else { return };
    let _shared = shared();
    let registry = OwnRegistry::start(lab, SRV_A, 7710, &[]);
    let owner = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..6).map(|i| unique(&format!("kept{i}"))).collect();
    let global = registry.global();
    for name in &names {
        let claimed = run(
            lab,
            "pub2h",
            owner.path(),
            &strs(&global),
            &["name", "claim", name],
        );
        assert_eq!(claimed.code, Some(0), "{:?}", claimed.stderr);
    }
    let registry = registry.kill_and_restart(lab, SRV_A, 7710);
    let reader = tempfile::tempdir().unwrap();
    for name in &names {
        let found = run(
            lab,
            "fc2h",
            reader.path(),
            &strs(&global),
            &["name", "lookup", name],
        );
        assert_eq!(found.code, Some(0), "{name}: {:?}", found.stderr);
        assert_eq!(doc(&found)["name"], format!("{name}.p2p"));
    }
    drop(registry);
}

#[test]
fn with_one_of_two_registries_down_claim_and_lookup_still_work() {
    let Some(lab) = lab() else { return };
    let _shared = shared();
    let up = OwnRegistry::start(lab, SRV_A, 7711, &[]);
    let mut down = OwnRegistry::start(lab, SRV_B, 7711, &[]);
    let _ = down.running.child.kill();
    let global: Vec<String> = up.global().into_iter().chain(down.global()).collect();
    let name = unique("half");
    let (owner, reader) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let claimed = run(
        lab,
        "up1h",
        owner.path(),
        &strs(&global),
        &["name", "claim", &name],
    );
    assert_eq!(claimed.code, Some(0), "{:?}", claimed.stderr);
    let outcomes = doc(&claimed)["registries"].clone();
    assert_eq!(outcomes[0]["outcome"], "claimed", "{outcomes}");
    assert!(outcomes[1]["error"].is_string(), "{outcomes}");
    let found = run(
        lab,
        "pr2h",
        reader.path(),
        &strs(&global),
        &["name", "lookup", &name],
    );
    assert_eq!(found.code, Some(0), "{:?}", found.stderr);
    assert_eq!(
        doc(&found)["fingerprint"],
        doc(&claimed)["fingerprint"],
        "the lookup found the claimed key"
    );
}

#[test]
fn a_pinned_name_whose_key_changed_is_refused_until_forgotten() {
    let Some(lab) = lab() else { return };
    let _shared = shared();
    let registry = OwnRegistry::start(lab, SRV_B, 7713, &[]);
    let global = registry.global();
    let global = strs(&global);
    let name = unique("pinned");
    let (old, new, reader) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let first = run(lab, "pub1h", old.path(), &global, &["name", "claim", &name]);
    assert_eq!(first.code, Some(0), "{:?}", first.stderr);
    let pinned = run(
        lab,
        "cg2h",
        reader.path(),
        &global,
        &["name", "lookup", &name],
    );
    assert_eq!(pinned.code, Some(0), "{:?}", pinned.stderr);
    // The name changes hands on the registry: released, then claimed by another key.
    let released = run(
        lab,
        "pub1h",
        old.path(),
        &global,
        &["name", "release", &name],
    );
    assert_eq!(released.code, Some(0), "{:?}", released.stderr);
    let second = run(lab, "pub2h", new.path(), &global, &["name", "claim", &name]);
    assert_eq!(second.code, Some(0), "{:?}", second.stderr);
    let (old_fp, new_fp) = (
        doc(&first)["fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        doc(&second)["fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let refused = run(
        lab,
        "cg2h",
        reader.path(),
        &global,
        &["name", "lookup", &name],
    );
    assert_eq!(refused.code, Some(1), "{:?}", refused.stderr);
    let message = error(&refused);
    assert!(
        message.contains(&old_fp) && message.contains(&new_fp) && message.contains("forget"),
        "{message}"
    );
    let forgot = run(
        lab,
        "cg2h",
        reader.path(),
        &global,
        &["name", "forget", &name],
    );
    assert_eq!(forgot.code, Some(0), "{:?}", forgot.stderr);
    let found = run(
        lab,
        "cg2h",
        reader.path(),
        &global,
        &["name", "lookup", &name],
    );
    assert_eq!(found.code, Some(0), "{:?}", found.stderr);
    assert_eq!(doc(&found)["fingerprint"], new_fp);
}

/// A registry double that serves, for every name, the record `record_b64` with one byte of
/// its address flipped (the signature then fails): a registry gone bad.
fn tampering_double(lab: &Lab, port: u16, record_b64: &str) -> std::process::Child {
    let script = r#"
import base64, http.server, sys
port, rec = int(sys.argv[1]), sys.argv[2]
raw = bytearray(base64.urlsafe_b64decode(rec + "=" * (-len(rec) % 4)))
raw[len(raw) // 2] ^= 0x01
body = ('{"record":"%s"}' % base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")).encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer((sys.argv[3], port), H).serve_forever()
"#;
    let mut cmd: Command = lab.command("inet", "python3");
    cmd.args(["-c", script, &port.to_string(), record_b64, SRV_A])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd.spawn().expect("start the tampering registry double")
}

#[test]
fn a_registry_serving_a_tampered_record_is_not_believed() {
    let Some(lab) = lab() else { return };
    let _shared = shared();
    let registry = OwnRegistry::start(lab, SRV_B, 7714, &[]);
    let name = unique("tampered");
    let owner = tempfile::tempdir().unwrap();
    let global = registry.global();
    let claimed = run(
        lab,
        "pub1h",
        owner.path(),
        &strs(&global),
        &["name", "claim", &name],
    );
    assert_eq!(claimed.code, Some(0), "{:?}", claimed.stderr);
    // The genuine bytes, fetched the way any client would.
    let url = format!("{}/v1/names/{name}", registry.url);
    let fetch = "import json,sys,urllib.request; \
                 print(json.load(urllib.request.urlopen(sys.argv[1]))['record'])";
    let out = lab.exec("pub1h", &["python3", "-c", fetch, &url]);
    let genuine = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !genuine.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut double = tampering_double(lab, 7715, &genuine);
    // Python may take longer than any fixed pause to start on a loaded machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while String::from_utf8_lossy(&lab.exec("inet", &["ss", "-Hltn", "sport = :7715"]).stdout)
        .trim()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the tampering double did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let bad = vec!["--registry".to_string(), format!("http://{SRV_A}:7715")];
    let reader = tempfile::tempdir().unwrap();
    let refused = run(
        lab,
        "fc1h",
        reader.path(),
        &strs(&bad),
        &["name", "lookup", &name],
    );
    let _ = double.kill();
    let _ = double.wait();
    assert_eq!(refused.code, Some(1), "{:?}", refused.stderr);
    assert!(
        error(&refused).contains("no registry has a valid record"),
        "{}",
        error(&refused)
    );
    // Beside the honest registry, the tampered answer is set aside and the genuine one wins.
    let mut double = tampering_double(lab, 7716, &genuine);
    std::thread::sleep(Duration::from_millis(500));
    let both: Vec<String> = global
        .iter()
        .cloned()
        .chain(["--registry".to_string(), format!("http://{SRV_A}:7716")])
        .collect();
    let found = run(
        lab,
        "fc1h",
        reader.path(),
        &strs(&both),
        &["name", "lookup", &name],
    );
    let _ = double.kill();
    let _ = double.wait();
    assert_eq!(found.code, Some(0), "{:?}", found.stderr);
    assert_eq!(doc(&found)["fingerprint"], doc(&claimed)["fingerprint"]);
    assert_eq!(doc(&found)["set_aside"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_rate_limited_claim_says_when_to_try_again() {
    let Some(lab) = lab() else { return };
    let _shared = shared();
    let registry = OwnRegistry::start(lab, SRV_A, 7717, &["--writes-per-minute", "2"]);
    let owner = tempfile::tempdir().unwrap();
    let global = registry.global();
    let mut last = None;
    for i in 0..4 {
        let name = unique(&format!("limited{i}"));
        last = Some(run(
            lab,
            "pr1h",
            owner.path(),
            &strs(&global),
            &["name", "claim", &name],
        ));
    }
    let last = last.expect("four claims");
    assert_eq!(last.code, Some(1), "{:?}", last.stderr);
    let message = error(&last);
    assert!(message.contains("rate limited: try again in"), "{message}");
}
