//! Publishing this node's name record: the [`Publisher`] behind `listen --name` (claim at
//! start, renew at half the lifetime, republish when the address changes), and what every name
//! command shares to sign statements: the clock, sequence numbers, dates for humans.
//!
//! Sequence numbers are the current unix time in milliseconds (and always above the last one
//! this process used): any later statement of this node, from any process or machine sharing
//! its home, is higher, as registries require, with no counter to keep on disk. A clock set
//! back by more than the gap between two statements makes the registries refuse the later one
//! (422) until the clock has caught up.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Node;
use crate::addr::{Address, CandidateKind};
use crate::discovery::quick::Quick;
use crate::identity::Identity;
use crate::names::client::{self, ClientError, Registry};
use crate::names::resolve::{self, Outcome, Verdict};
use crate::names::{Name, Record};
use crate::portmap;
use crate::timing::{NAME_ADDRESS_CHECK, NAME_RETRY};

/// Unix time in seconds (0 for a clock before 1970).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The sequence number of a new statement: unix time in milliseconds, above `last`.
pub fn sequence(last: u64) -> u64 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    now_ms.max(last.saturating_add(1))
}

/// Unix seconds as a UTC date and time, `2027-01-15 08:00:00 UTC`.
pub fn utc(secs: u64) -> String {
    // Days to a civil date (Howard Hinnant's algorithm, proleptic Gregorian).
    let z = (secs / 86_400) as i64 + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `name`'s record for `address`, valid from now for `lifetime` seconds, signed.
pub fn sign_record(
    identity: &Identity,
    name: &Name,
    address: Address,
    seq: u64,
    lifetime: u64,
) -> anyhow::Result<(Record, Vec<u8>)> {
    let now = now_secs();
    let record = Record {
        name: name.clone(),
        key: identity.public_key(),
        address,
        seq,
        issued_at: now,
        expires_at: now.saturating_add(lifetime),
    };
    let bytes = record
        .sign(identity)
        .context("cannot sign the name record")?;
    Ok((record, bytes))
}

/// Whether two addresses say the same thing (candidates in any order).
fn same_address(a: &Address, b: &Address) -> bool {
    a.key == b.key
        && a.brokers == b.brokers
        && a.nat == b.nat
        && a.candidates.len() == b.candidates.len()
        && a.candidates.iter().all(|c| b.candidates.contains(c))
}

/// The interface addresses an address lists: what changes when the machine changes network.
fn locals(a: &Address) -> Vec<std::net::SocketAddr> {
    let mut locals: Vec<_> = a
        .candidates
        .iter()
        .filter(|c| c.kind == CandidateKind::Local)
        .map(|c| c.addr)
        .collect();
    locals.sort();
    locals
}

/// Keeps one name published for a listening node.
pub(super) struct Publisher {
    name: Name,
    registries: Vec<Result<Registry, ClientError>>,
    urls: Vec<String>,
    lifetime: u64,
    /// The address last sent, and the sequence number last used.
    published: Address,
    seq: u64,
    /// When to publish again (renewal, or a retry after a failure).
    due: Instant,
}

impl Publisher {
    /// Claims (or renews) `name` for `address` as `listen --name` starts. A name that belongs
    /// to another key is an error (the node must not listen under it); registries that did not
    /// accept are only a warning: the address works without the name, and the publisher
    /// tries again while listening.
    pub async fn start(
        node: &Node,
        name: Name,
        address: Address,
        lifetime: u64,
    ) -> anyhow::Result<Self> {
        let mut publisher = Self {
            registries: node.registries("listen --name")?,
            urls: node.settings.registries.clone(),
            name,
            lifetime,
            published: address.clone(),
            seq: 0,
            due: Instant::now(),
        };
        match publisher.publish(&node.identity, address).await {
            Verdict::Taken { owner } => Err(anyhow::anyhow!(
                "{} belongs to another key (fingerprint {owner}): not listening under it",
                publisher.name
            )),
            _ => Ok(publisher),
        }
    }

    /// Sends a fresh record for `address` to every registry; logs what each did.
    async fn publish(&mut self, identity: &Identity, address: Address) -> Verdict {
        let name = &self.name;
        self.seq = sequence(self.seq);
        self.published = address.clone();
        self.due = Instant::now() + NAME_RETRY;
        let (record, bytes) = match sign_record(identity, name, address, self.seq, self.lifetime) {
            Ok(signed) => signed,
            Err(e) => {
                tracing::warn!("{name}: {e:#}");
                return Verdict::NoQuorum {
                    accepted: 0,
                    configured: self.urls.len(),
                };
            }
        };
        let results = client::put_all(&self.registries, name, &bytes).await;
        for (url, result) in self.urls.iter().zip(&results) {
            match result {
                Ok(stored) => tracing::info!("{name}: {:?} on {url}", stored.outcome),
                Err(e) => tracing::warn!("{name}: {url}: {e}"),
            }
        }
        let verdict = resolve::tally(&results.iter().map(Outcome::from).collect::<Vec<_>>());
        match &verdict {
            Verdict::Quorum {
                accepted,
                configured,
            } => {
                // Renew at half the lifetime: a registry down for days still leaves time.
                self.due = Instant::now()
                    + std::time::Duration::from_millis(self.lifetime.saturating_mul(500));
                tracing::info!(
                    "{name} published on {accepted} of {configured} registries until {}",
                    utc(record.expires_at)
                );
            }
            Verdict::NoQuorum {
                accepted,
                configured,
            } => tracing::warn!(
                "{name}: only {accepted} of {configured} registries accepted the record; trying again in {} s",
                NAME_RETRY.as_secs()
            ),
            Verdict::Taken { owner } => tracing::error!(
                "{name} belongs to another key (fingerprint {owner}); trying again in {} s",
                NAME_RETRY.as_secs()
            ),
        }
        verdict
    }

    /// Keeps the name published while the listener runs, from `port` with the `look` taken at
    /// start: renews when due and, checking every [`NAME_ADDRESS_CHECK`], republishes as soon
    /// as the address changed. The start look's public candidate holds only on the network it
    /// was taken on (the listener now owns the port, so it cannot look again): once the
    /// interface addresses change it is dropped, and peers learn fresh candidates over
    /// signalling. Runs until dropped (the listen driver drops it when it stops).
    /// `mapped` follows the listen port's mappings on the gateway, when it is mapped.
    pub async fn keep(
        mut self,
        node: &Node,
        port: u16,
        mut look: Quick,
        mapped: Option<watch::Receiver<portmap::keeper::State>>,
    ) -> Infallible {
        let start_locals = locals(&self.published);
        let mut check =
            tokio::time::interval_at(Instant::now() + NAME_ADDRESS_CHECK, NAME_ADDRESS_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let renew = tokio::time::sleep_until(self.due);
            let due = tokio::select! {
                () = renew => true,
                _ = check.tick() => false,
            };
            let mapped = mapped
                .as_ref()
                .map(|m| m.borrow().candidates.clone())
                .unwrap_or_default();
            let mut address = match node.address(port, &look, &mapped) {
                Ok(address) => address,
                Err(e) => {
                    tracing::warn!("{}: {e:#}", self.name);
                    continue;
                }
            };
            if look.public.is_some() && locals(&address) != start_locals {
                look = Quick::default();
                address
                    .candidates
                    .retain(|c| c.kind == CandidateKind::Local);
            }
            let changed = !same_address(&address, &self.published);
            if changed {
                tracing::info!("{}: the address changed; republishing", self.name);
            }
            if due || changed {
                self.publish(&node.identity, address).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::routing::put;
    use axum::{Json, Router};

    use super::*;
    use crate::addr::Candidate;
    use crate::cli::args::Global;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_800_000_000), "2027-01-15 08:00:00 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn sequences_only_grow() {
        let first = sequence(0);
        assert!(first > 1_700_000_000_000, "milliseconds since 1970");
        assert!(sequence(first) > first);
        assert_eq!(sequence(u64::MAX - 1), u64::MAX);
    }

    #[test]
    fn addresses_compare_by_what_they_say() {
        let key = Identity::generate().public_key();
        let c = |kind, addr: &str| Candidate {
            kind,
            addr: addr.parse().unwrap(),
        };
        let (l1, l2, p) = (
            c(CandidateKind::Local, "192.168.1.5:4000"),
            c(CandidateKind::Local, "[fd00::5]:4000"),
            c(CandidateKind::Public, "203.0.113.9:4000"),
        );
        let a = Address::new(key, vec![l1, l2, p]);
        assert!(same_address(&a, &Address::new(key, vec![p, l2, l1])));
        assert!(!same_address(&a, &Address::new(key, vec![l1, l2])));
        let moved = Address::new(key, vec![c(CandidateKind::Local, "10.0.0.7:4000"), l2, p]);
        assert!(!same_address(&a, &moved));
        assert_ne!(locals(&a), locals(&moved));
        assert_eq!(locals(&a), locals(&Address::new(key, vec![l2, l1])));
    }

    /// A node with no servers but one registry, in a temporary home.
    fn node(dir: &std::path::Path, registry: String) -> Node {
        let config = dir.join("config.toml");
        std::fs::write(&config, "brokers = []\nstun = []\nturn = []\n").unwrap();
        Node::load(&Global {
            home: Some(dir.join("home")),
            config: Some(config),
            brokers: Vec::new(),
            stun: Vec::new(),
            turn: Vec::new(),
            registries: vec![registry],
            offline: false,
            no_portmap: true,
            json: false,
            verbose: 0,
            quiet: true,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_published_name_is_renewed_at_half_its_lifetime() {
        type Seen = Arc<Mutex<Vec<Record>>>;
        async fn store(
            State(seen): State<Seen>,
            Json(body): Json<serde_json::Value>,
        ) -> Json<serde_json::Value> {
            let bytes = data_encoding::BASE64URL_NOPAD
                .decode(body["record"].as_str().unwrap().as_bytes())
                .unwrap();
            let record = Record::open(&bytes).unwrap();
            let answer = serde_json::json!({
                "outcome": "renewed", "seq": record.seq, "expires_at": record.expires_at,
            });
            seen.lock().unwrap().push(record);
            Json(answer)
        }
        let seen = Seen::default();
        let app = Router::new()
            .route("/v1/names/{name}", put(store))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path(), url);
        let name = Name::parse("bob").unwrap();
        let address = node.address(4000, &Quick::default(), &[]).unwrap();
        // A one-second lifetime: renewed every half second.
        let publisher = Publisher::start(&node, name.clone(), address.clone(), 1)
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap().len(), 1);
        let kept = tokio::time::timeout(
            std::time::Duration::from_millis(1300),
            publisher.keep(&node, 4000, Quick::default(), None),
        );
        assert!(kept.await.is_err(), "keep runs until dropped");
        let seen = seen.lock().unwrap();
        assert!(seen.len() >= 3, "{} publications", seen.len());
        for pair in seen.windows(2) {
            assert!(pair[1].seq > pair[0].seq);
            assert!(pair[1].expires_at >= pair[0].expires_at);
        }
        assert!(seen.iter().all(|r| r.name == name && r.address == address));
    }
}
