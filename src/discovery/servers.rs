//! Health of the servers beside STUN: a TURN allocation per server address over UDP and over
//! TCP, an MQTT broker's publish-to-self round trip, a name registry's `GET /v1/health`. Each
//! bounded by one timeout and reported as a [`ServerReport`] the way the STUN servers are.

use super::{resolve, ServerReport};
use crate::config::{HostPort, TurnServer};
use crate::health::{turn_allocation, TurnTransport};
use crate::names::client::Registry;
use crate::stun::Counter;
use crate::timing::{MQTT_CHECK_TIMEOUT, REGISTRY_CHECK_TIMEOUT, TURN_CHECK_TIMEOUT};

/// A TURN allocation on every address of `server`, from the local address routing to it.
pub(super) async fn check_turn(server: &TurnServer, counter: &Counter) -> Vec<ServerReport> {
    let name = format!("turn://{}@{}", server.user, server.server);
    let addrs = match resolve(&server.server).await {
        Ok(a) => a,
        Err(e) => {
            let mut r = ServerReport::new(&name, None, "udp");
            r.kind = "turn";
            r.error = Some(e);
            return vec![r];
        }
    };
    // Every address, over UDP and over TCP (the relay a peer behind a UDP-blocking firewall
    // would use is reached over TCP).
    let transports = [(TurnTransport::Udp, "udp"), (TurnTransport::Tcp, "tcp")];
    let name = &name;
    let checks = addrs.into_iter().flat_map(|addr| {
        transports
            .into_iter()
            .map(move |(transport, label)| async move {
                let mut r = ServerReport::new(name, Some(addr), label);
                r.kind = "turn";
                let Some(ip) = crate::net::route_source(addr) else {
                    r.error = Some("no route from this machine".into());
                    return r;
                };
                let credentials = (server.user.as_str(), server.password.as_str());
                match turn_allocation(
                    ip,
                    addr,
                    transport,
                    credentials,
                    TURN_CHECK_TIMEOUT,
                    counter,
                )
                .await
                {
                    Ok(c) => {
                        r.reachable = true;
                        r.rtt_ms = Some((c.rtt.as_secs_f64() * 10_000.0).round() / 10.0);
                        r.mapped = c.mapped;
                        r.relayed = Some(c.relayed);
                    }
                    Err(e) => r.error = Some(e),
                }
                r
            })
    });
    futures_util::future::join_all(checks).await
}

/// An MQTT broker's connect + publish-to-self round trip.
pub(super) async fn check_broker(broker: &HostPort) -> ServerReport {
    let mut r = ServerReport::new(&format!("mqtt://{broker}"), None, "tcp");
    r.kind = "mqtt";
    if let Ok(addrs) = resolve(broker).await {
        r.addr = addrs.first().copied();
    }
    match crate::health::mqtt_round_trip(&broker.host, broker.port, MQTT_CHECK_TIMEOUT).await {
        Ok(rtt) => {
            r.reachable = true;
            r.rtt_ms = Some((rtt.as_secs_f64() * 10_000.0).round() / 10.0);
        }
        Err(e) => r.error = Some(e),
    }
    r
}

/// A name registry's health, asked with the registry protocol (`GET /v1/health`): reachable
/// when it answers "ok" in the API version this build speaks; `rtt_ms` is the whole request
/// (connect included).
pub(super) async fn check_registry(url: &str) -> ServerReport {
    let mut r = ServerReport::new(url, None, "tcp");
    r.kind = "registry";
    let registry = match Registry::parse(url) {
        Ok(registry) => registry.with_timeout(REGISTRY_CHECK_TIMEOUT),
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    match resolve(registry.server()).await {
        Ok(addrs) => r.addr = addrs.first().copied(),
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    }
    match registry.health().await {
        Ok(health) => {
            r.reachable = true;
            r.addr = Some(health.addr);
            r.rtt_ms = Some((health.rtt.as_secs_f64() * 10_000.0).round() / 10.0);
        }
        Err(e) => r.error = Some(e.to_string()),
    }
    r
}
