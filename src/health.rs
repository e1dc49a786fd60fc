//! Health of configured servers beyond STUN: a TURN allocation with the configured long-term
//! credentials (turn-client-proto, sans-IO, driven here over UDP or TCP), its round trip
//! and the relayed address, the allocation deleted again at once; and an MQTT broker's
//! connect + publish-to-self round trip (rumqttc). Each bounded by one timeout.
//! Neighbours: [`crate::discovery`] runs these beside the STUN probes and lists the results.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use turn_client_proto::api::{TurnClientApi, TurnConfig, TurnEvent, TurnPollRet};
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::tcp::TurnClientTcp;
use turn_client_proto::types::{TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

use crate::stun::Counter;

/// Largest datagram read from a TURN server.
const RECV_BUFFER: usize = 2048;

/// What a TURN allocation attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnCheck {
    pub relayed: SocketAddr,
    pub mapped: Option<SocketAddr>,
    pub rtt: Duration,
}

/// Which transport a TURN check talks to its server over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnTransport {
    Udp,
    Tcp,
}

/// The socket a TURN check runs on.
enum TurnIo {
    Udp(UdpSocket),
    Tcp(tokio::net::TcpStream),
}

impl TurnIo {
    fn transport(&self) -> TransportType {
        match self {
            TurnIo::Udp(_) => TransportType::Udp,
            TurnIo::Tcp(_) => TransportType::Tcp,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            TurnIo::Udp(s) => s.local_addr(),
            TurnIo::Tcp(s) => s.local_addr(),
        }
    }

    async fn send(&mut self, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            TurnIo::Udp(s) => s.send_to(data, to).await.map(drop),
            TurnIo::Tcp(s) => s.write_all(data).await,
        }
    }

    /// Bytes from the server; a closed TCP connection is an error.
    async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match self {
            TurnIo::Udp(s) => s.recv_from(buf).await,
            TurnIo::Tcp(s) => match s.read(buf).await? {
                0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => Ok((n, s.peer_addr()?)),
            },
        }
    }
}

/// Allocates a UDP relay on `server`, talking to it over `transport` from local address `ip`
/// with `user`/`password`, within `timeout`, then releases it. Errors are one readable line.
pub async fn turn_allocation(
    ip: IpAddr,
    server: SocketAddr,
    transport: TurnTransport,
    credentials: (&str, &str),
    timeout: Duration,
    counter: &Counter,
) -> Result<TurnCheck, String> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let io = match transport {
        TurnTransport::Udp => UdpSocket::bind((ip, 0))
            .await
            .map(TurnIo::Udp)
            .map_err(|e| format!("cannot bind a socket on {ip}: {e}"))?,
        TurnTransport::Tcp => {
            let connect = tokio::net::TcpStream::connect(server);
            match tokio::time::timeout_at(deadline, connect).await {
                Ok(Ok(stream)) => TurnIo::Tcp(stream),
                Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
                Err(_) => return Err(format!("no connection within {} ms", timeout.as_millis())),
            }
        }
    };
    let local = io
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    let mut config = TurnConfig::new(TurnCredentials::new(credentials.0, credentials.1));
    // nat-info's STUN schedule: three sends over 0.75 s, given up after 1.25 s.
    let schedule = crate::stun::Timing::QUICK;
    config.set_request_retransmits(
        schedule.initial_rto,
        Duration::MAX,
        schedule.transmissions,
        schedule.final_wait,
    );
    match transport {
        TurnTransport::Udp => {
            let client = TurnClientUdp::allocate(local, server, config);
            drive(client, io, server, started, deadline, counter).await
        }
        TurnTransport::Tcp => {
            let client = TurnClientTcp::allocate(local, server, config);
            drive(client, io, server, started, deadline, counter).await
        }
    }
}

/// Runs `client` on `io` until the allocation is made, refused or `deadline` passes; releases a
/// made allocation at once.
async fn drive<C: TurnClientApi>(
    mut client: C,
    mut io: TurnIo,
    server: SocketAddr,
    started: Instant,
    deadline: tokio::time::Instant,
    counter: &Counter,
) -> Result<TurnCheck, String> {
    let transport = io.transport();
    let local = io.local_addr().map_err(|e| e.to_string())?;
    let base = std::time::Instant::now();
    let now = || turn_client_proto::types::Instant::from_std(base);
    let mut buf = vec![0u8; RECV_BUFFER];
    // Whether the server said anything: tells a refusal from silence.
    let mut heard = false;
    let refused = |heard: bool| {
        if heard {
            "the server refused the allocation (wrong credentials?)".to_string()
        } else {
            format!("no answer within {} ms", started.elapsed().as_millis())
        }
    };
    let result = loop {
        while let Some(t) = client.poll_transmit(now()) {
            counter.add(1);
            if let Err(e) = io.send(t.data.as_ref(), t.to).await {
                client.protocol_error();
                return Err(format!("cannot send: {e}"));
            }
        }
        if let Some(event) = client.poll_event() {
            match event {
                TurnEvent::AllocationCreated(_, relayed) => {
                    break Ok(TurnCheck {
                        relayed,
                        mapped: None,
                        rtt: started.elapsed(),
                    })
                }
                TurnEvent::AllocationCreateFailed(_) => break Err(refused(heard)),
                _ => continue,
            }
        }
        let wait = match client.poll(now()) {
            TurnPollRet::WaitUntil(at) => tokio::time::Instant::from_std(at.to_std(base)),
            TurnPollRet::Closed => break Err(refused(heard)),
            _ => tokio::time::Instant::now() + Duration::from_millis(10),
        };
        if tokio::time::Instant::now() >= deadline {
            break Err(format!(
                "no allocation within {} ms",
                started.elapsed().as_millis()
            ));
        }
        tokio::select! {
            received = io.recv(&mut buf) => {
                let (n, from) = match received {
                    Ok(r) => r,
                    // A TCP server that closed the connection will say nothing more.
                    Err(e) if transport == TransportType::Tcp => {
                        break Err(if heard { refused(heard) } else { format!("connection closed: {e}") })
                    }
                    Err(_) => continue,
                };
                heard |= from == server;
                let transmit = Transmit::new(&buf[..n], transport, from, local);
                let _ = client.recv(transmit, now());
            }
            _ = tokio::time::sleep_until(wait.min(deadline)) => {}
        }
    };
    if result.is_ok() {
        // Release the relay at once; one best-effort transmission, no wait for the answer.
        if client.delete(now()).is_ok() {
            while let Some(t) = client.poll_transmit(now()) {
                counter.add(1);
                let _ = io.send(t.data.as_ref(), t.to).await;
            }
        }
    }
    result
}

/// Connects to the MQTT broker at `host:port`, subscribes to a fresh topic and publishes to it:
/// the time from publishing to receiving our own message back.
pub async fn mqtt_round_trip(host: &str, port: u16, timeout: Duration) -> Result<Duration, String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let nonce: u64 = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
    let topic = format!("warpgate/health/{nonce:016x}");
    let mut options = MqttOptions::new(format!("warpgate-health-{nonce:016x}"), host, port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 8);
    let work = async {
        let mut sent_at = None;
        loop {
            match events.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    client
                        .subscribe(topic.clone(), QoS::AtMostOnce)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    sent_at = Some(Instant::now());
                    client
                        .publish(topic.clone(), QoS::AtMostOnce, false, b"ping".to_vec())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Event::Incoming(Packet::Publish(p)) if p.topic == topic => {
                    return Ok(sent_at.map(|t| t.elapsed()).unwrap_or_default());
                }
                _ => {}
            }
        }
    };
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no round trip within {} ms", timeout.as_millis())),
    };
    let _ = client.try_disconnect();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dead_and_silent_brokers_fail_in_time() {
        // Nothing listens: refused at once.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let r = mqtt_round_trip("127.0.0.1", port, Duration::from_millis(500)).await;
        assert!(r.is_err(), "{r:?}");
        // Accepts and says nothing: the timeout.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _kept = l.accept().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let started = Instant::now();
        let r = mqtt_round_trip("127.0.0.1", port, Duration::from_millis(300)).await;
        assert!(r.unwrap_err().contains("no round trip"));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// An allocation attempt from loopback with throwaway credentials, bounded at 400 ms.
    async fn allocate_on_loopback(
        server: SocketAddr,
        transport: TurnTransport,
        c: &Counter,
    ) -> Result<TurnCheck, String> {
        let timeout = Duration::from_millis(400);
        turn_allocation(
            "127.0.0.1".parse().unwrap(),
            server,
            transport,
            ("u", "p"),
            timeout,
            c,
        )
        .await
    }

    #[tokio::test]
    async fn silent_and_garbage_turn_servers_fail_in_time() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = Counter::default();
        let started = Instant::now();
        let r = allocate_on_loopback(silent.local_addr().unwrap(), TurnTransport::Udp, &c).await;
        assert!(r.is_err(), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));

        let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = junk.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 1500];
            while let Ok((_, from)) = junk.recv_from(&mut b).await {
                let _ = junk.send_to(b"\x01\x13\x00\x04garbage!", from).await;
            }
        });
        let r = allocate_on_loopback(addr, TurnTransport::Udp, &c).await;
        assert!(r.is_err(), "{r:?}");

        // Over TCP: a server that accepts and closes, and one that is not there.
        let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closing.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((conn, _)) = closing.accept().await {
                drop(conn);
            }
        });
        let started = Instant::now();
        let r = allocate_on_loopback(addr, TurnTransport::Tcp, &c).await;
        assert!(r.unwrap_err().contains("closed"));
        assert!(started.elapsed() < Duration::from_secs(1));
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let r = allocate_on_loopback(addr, TurnTransport::Tcp, &c).await;
        assert!(r.unwrap_err().contains("cannot connect"));
    }
}
