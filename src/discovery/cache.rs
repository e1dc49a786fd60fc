//! Discovery results kept between runs: the NAT facts per family, in `nat-cache.json` under
//! the home, keyed by a fingerprint of the network (the interface addresses and the default
//! gateway). A changed network, or facts older than [`NAT_CACHE_MAX_AGE`], mean probing again.
//!
//! Neighbours: `nat-info` stores what it found; the address carries the [`crate::nat::NatFacts`] it reads.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Report;
use crate::nat::NatFacts;
use crate::timing::NAT_CACHE_MAX_AGE;

const FILE: &str = "nat-cache.json";

#[derive(Serialize, Deserialize)]
struct CacheFile {
    fingerprint: String,
    saved_unix: u64,
    facts: Vec<NatFacts>,
}

/// A short hash of what identifies the network this machine is on: its non-loopback interface
/// addresses and its IPv4 default gateway.
pub fn fingerprint() -> std::io::Result<String> {
    let mut ips: Vec<String> = crate::net::interface_ips()?
        .into_iter()
        .filter(|ip| !ip.is_loopback())
        .map(|ip| ip.to_string())
        .collect();
    ips.sort();
    let mut hash = Sha256::new();
    for ip in &ips {
        hash.update(ip.as_bytes());
        hash.update(b"\n");
    }
    if let Some(gateway) = crate::portmap::default_gateway_v4() {
        hash.update(format!("gateway {gateway}").as_bytes());
    }
    Ok(data_encoding::HEXLOWER.encode(&hash.finalize()[..8]))
}

fn path(home: &Path) -> PathBuf {
    home.join(FILE)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The facts cached for the network with `fingerprint`, if fresh.
pub fn load(home: &Path, fingerprint: &str) -> Option<Vec<NatFacts>> {
    let text = std::fs::read_to_string(path(home)).ok()?;
    let file: CacheFile = serde_json::from_str(&text).ok()?;
    let age = now_unix().saturating_sub(file.saved_unix);
    (file.fingerprint == fingerprint && age <= NAT_CACHE_MAX_AGE.as_secs()).then_some(file.facts)
}

/// Keeps `facts` for the network with `fingerprint`. A cache that cannot be written is only a
/// missed shortcut, so failures are logged, not returned.
pub fn store(home: &Path, fingerprint: &str, facts: &[NatFacts]) {
    let file = CacheFile {
        fingerprint: fingerprint.to_string(),
        saved_unix: now_unix(),
        facts: facts.to_vec(),
    };
    let result = serde_json::to_string_pretty(&file)
        .map_err(std::io::Error::other)
        .and_then(|text| std::fs::write(path(home), text));
    if let Err(e) = result {
        tracing::debug!("cannot write the NAT cache: {e}");
    }
}

/// The facts of a full report: per family, the first interface that got answers.
pub fn facts_of(report: &Report) -> Vec<NatFacts> {
    let mut facts: Vec<NatFacts> = Vec::new();
    for i in &report.interfaces {
        let answered = !i.public.is_empty() || !i.public_tcp.is_empty();
        if answered && !facts.iter().any(|f| f.family == i.family) {
            facts.push(NatFacts {
                family: i.family,
                mapping: i.mapping,
                filtering: i.filtering,
                allocation: i.port_allocation.kind,
                udp_blocked: i.udp_blocked,
            });
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{AllocationKind, Behaviour, Family};

    #[test]
    fn facts_are_kept_per_network_and_expire_with_it() {
        let home = tempfile::tempdir().unwrap();
        let facts = vec![NatFacts {
            family: Family::Ipv4,
            mapping: Behaviour::EndpointIndependent,
            filtering: Behaviour::AddressDependent,
            allocation: AllocationKind::Preserving,
            udp_blocked: Some(false),
        }];
        assert_eq!(load(home.path(), "net-a"), None);
        store(home.path(), "net-a", &facts);
        assert_eq!(load(home.path(), "net-a"), Some(facts.clone()));
        assert_eq!(load(home.path(), "net-b"), None, "another network");
        // Old facts are not trusted.
        let old = CacheFile {
            fingerprint: "net-a".into(),
            saved_unix: now_unix() - NAT_CACHE_MAX_AGE.as_secs() - 1,
            facts,
        };
        std::fs::write(path(home.path()), serde_json::to_string(&old).unwrap()).unwrap();
        assert_eq!(load(home.path(), "net-a"), None);
        // Garbage is no cache at all.
        std::fs::write(path(home.path()), "{not json").unwrap();
        assert_eq!(load(home.path(), "net-a"), None);
    }
}
