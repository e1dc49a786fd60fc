//! Health of the servers beside STUN: a TURN allocation per server address over UDP and over
//! TCP, an MQTT broker's
//! publish-to-self round trip, a registry's TCP reachability. Each bounded by one timeout and
//! reported as a [`ServerReport`] the way the STUN servers are.

use std::time::Instant;

use super::{resolve, ServerReport};
use crate::config::{HostPort, TurnServer};
use crate::health::{turn_allocation, TurnTransport};
use crate::stun::Counter;
use crate::timing::{MQTT_CHECK_TIMEOUT, STUN_TCP_TIMEOUT, TURN_CHECK_TIMEOUT};

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

/// A name registry's reachability: a TCP connection to its host and port, timed. The registry
/// protocol is not built yet, so this is all that can be asked of it.
pub(super) async fn check_registry(url: &str) -> ServerReport {
    let mut r = ServerReport::new(url, None, "tcp");
    r.kind = "registry";
    let Some(server) = registry_host_port(url) else {
        r.error = Some("not a registry URL: expected http(s)://HOST[:PORT][/PATH]".into());
        return r;
    };
    let addrs = match resolve(&server).await {
        Ok(a) => a,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    r.addr = addrs.first().copied();
    let Some(addr) = r.addr else { return r };
    let started = Instant::now();
    match tokio::time::timeout(STUN_TCP_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {
            r.reachable = true;
            r.rtt_ms = Some((started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0);
        }
        Ok(Err(e)) => r.error = Some(e.to_string()),
        Err(_) => {
            r.error = Some(format!(
                "no connection within {} ms",
                STUN_TCP_TIMEOUT.as_millis()
            ))
        }
    }
    r
}

/// `http://host[:port]/…` → host:port (80), `https://…` (443), a bare `host[:port]` (443).
fn registry_host_port(url: &str) -> Option<HostPort> {
    let (default_port, rest) = match url.split_once("://") {
        Some(("http", rest)) => (80, rest),
        Some(("https", rest)) => (443, rest),
        Some(_) => return None,
        None => (443, url),
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    HostPort::parse(authority, Some(default_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_urls_give_host_and_port() {
        let hp = |url| registry_host_port(url).map(|h| h.to_string());
        assert_eq!(
            hp("https://names.example.org/v1"),
            Some("names.example.org:443".into())
        );
        assert_eq!(
            hp("http://198.51.100.1:4000"),
            Some("198.51.100.1:4000".into())
        );
        assert_eq!(
            hp("http://[2001:db8::1]:8080/x"),
            Some("[2001:db8::1]:8080".into())
        );
        assert_eq!(
            hp("names.example.org"),
            Some("names.example.org:443".into())
        );
        assert_eq!(hp("ftp://names.example.org"), None);
        assert_eq!(hp("https://"), None);
    }
}
