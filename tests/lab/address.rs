//! What `addr` and `listen` put in the address (issue 4): the listen port's public candidate
//! when the NAT maps it the same way for everyone, and the NAT facts, from `nat-info`'s cache
//! when this network has one.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{infra, lab, shared, Pair};

fn addr_json(lab: &crate::harness::Lab, host: &str, home: &std::path::Path) -> Value {
    let infra = infra();
    let global: Vec<&str> = infra.iter().map(String::as_str).collect();
    let out = lab
        .spawn_in(host, home, &global, &["addr"], b"")
        .finish(Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{:?}", out.stderr);
    serde_json::from_str(out.stdout.trim()).expect("addr --json is JSON")
}

fn public_candidates(doc: &Value) -> Vec<String> {
    doc["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["kind"] == "public")
        .filter_map(|c| c["addr"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_address_carries_public_candidates_and_nat_facts() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    for host in ["fc1h", "pr1h", "sym1h", "pub1h"] {
        let h = lab.host(host);
        let home = tempfile::tempdir().unwrap();
        let doc = addr_json(lab, host, home.path());
        let public = public_candidates(&doc);
        let nat = &doc["nat"][0];
        match h.nat.as_str() {
            // The public host's own address is a local candidate already.
            "public" => {
                assert!(public.is_empty(), "{doc}");
                assert_eq!(nat["mapping"], "none", "{doc}");
            }
            // Random ports per destination: no candidate a peer could use.
            "symmetric" => {
                assert!(public.is_empty(), "{doc}");
                assert_ne!(nat["mapping"], "endpoint-independent", "{doc}");
            }
            _ => {
                assert_eq!(public.len(), 1, "{doc}");
                assert!(public[0].starts_with(&format!("{}:", h.public4)), "{doc}");
                assert_eq!(nat["mapping"], "endpoint-independent", "{doc}");
            }
        }
        assert_eq!(doc["brokers"][0], "198.51.100.1:1883", "{doc}");

        // After nat-info, the address carries its fuller facts for this network.
        let infra = infra();
        let global: Vec<&str> = infra.iter().map(String::as_str).collect();
        let info = lab
            .spawn_in(host, home.path(), &global, &["nat-info"], b"")
            .finish(Duration::from_secs(15));
        let report: Value = serde_json::from_str(info.stdout.trim()).expect("nat-info JSON");
        let v4 = report["interfaces"]
            .as_array()
            .and_then(|list| list.iter().find(|i| i["family"] == "ipv4"))
            .cloned()
            .expect("an IPv4 interface");
        let doc = addr_json(lab, host, home.path());
        let nat = &doc["nat"][0];
        assert_eq!(nat["mapping"], v4["mapping"], "{host}: {doc}");
        assert_eq!(nat["filtering"], v4["filtering"], "{host}: {doc}");
        assert_eq!(
            nat["allocation"], v4["port_allocation"]["kind"],
            "{host}: {doc}"
        );
    }
}

#[test]
fn a_full_cone_listener_is_reached_directly_at_its_public_candidate() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    // The listener looks with the lab's STUN servers; the connector is offline: direct only.
    let infra = infra();
    let listener_global: Vec<&str> = infra.iter().map(String::as_str).collect();
    let p = {
        let mut l = lab.spawn(
            "fc1h",
            &listener_global,
            &["listen", "--port", "0"],
            b"hello from the listener\n",
        );
        let listening = l
            .wait_event_within("listening", Duration::from_secs(15))
            .expect("listening");
        let addr = listening["addr"].as_str().unwrap_or_default().to_string();
        let c = lab
            .spawn(
                "pr1h",
                &["--offline"],
                &["connect", &addr, "--timeout", "5"],
                b"hello from the connector\n",
            )
            .finish(Duration::from_secs(20));
        let l = l.finish(Duration::from_secs(10));
        Pair {
            listener: l,
            connector: c,
        }
    };
    assert_eq!(p.connector.code, Some(0), "{:?}", p.connector.stderr);
    assert!(p.connector.stdout.contains("hello from the listener"));
    let ev = p.connector.event("connected").expect("connected");
    assert_eq!(ev["method"], "direct", "{ev}");
    assert!(
        ev["remote"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{}:", lab.host("fc1h").public4)),
        "{ev}"
    );
}
