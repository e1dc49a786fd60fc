//! STUN over TCP (RFC 8489 §6.2.2): one binding per connection, no retransmission (TCP
//! delivers or fails), the whole exchange bounded by one timeout. Used where UDP is blocked and
//! to tell a UDP-blocking firewall from a dead network.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::codec::{self, Binding, Change};
use super::{Counter, StunError};

/// Largest frame accepted from a server; anything longer is not a binding response.
const MAX_FRAME: usize = 2048;

/// A binding over a fresh TCP connection to `to`: the binding and the round-trip time of the
/// request (connection setup excluded).
pub async fn binding(
    to: SocketAddr,
    timeout: Duration,
    counter: &Counter,
) -> Result<(Binding, Duration), StunError> {
    binding_from(None, to, timeout, counter).await
}

/// Like [`binding`], from `socket` when given (bound to the port whose mapping is wanted).
pub async fn binding_from(
    socket: Option<tokio::net::TcpSocket>,
    to: SocketAddr,
    timeout: Duration,
    counter: &Counter,
) -> Result<(Binding, Duration), StunError> {
    let exchange = async {
        let connected = match socket {
            Some(socket) => socket.connect(to).await,
            None => TcpStream::connect(to).await,
        };
        let mut stream = connected.map_err(|e| StunError::io(&e))?;
        let (id, request) = codec::binding_request(Change::NONE)?;
        let started = Instant::now();
        counter.add(1);
        stream
            .write_all(&request)
            .await
            .map_err(|e| StunError::io(&e))?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            if let Some(len) = codec::frame_len(&buf) {
                if len > MAX_FRAME {
                    return Err(StunError::Garbage(format!("a {len}-byte frame")));
                }
                if buf.len() >= len {
                    let msg = codec::parse(&buf[..len])?;
                    if msg.transaction_id() != id {
                        return Err(StunError::Malformed("answer to another transaction".into()));
                    }
                    return Ok((codec::read_response(&msg)?, started.elapsed()));
                }
            }
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| StunError::io(&e))?;
            if n == 0 {
                return Err(if buf.is_empty() {
                    StunError::Io("connection closed without an answer".into())
                } else {
                    StunError::Garbage(format!("{} bytes, then the connection closed", buf.len()))
                });
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(StunError::Timeout(timeout.as_millis() as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_proto::types::attribute::XorMappedAddress;
    use stun_proto::types::message::{Message, MessageWriteVec};
    use stun_proto::types::prelude::*;
    use tokio::net::TcpListener;

    async fn server(kind: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, from)) = l.accept().await {
                let mut buf = [0u8; 1500];
                let Ok(n) = s.read(&mut buf).await else {
                    continue;
                };
                let reply = match kind {
                    "garbage" => b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
                    "silent" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        continue;
                    }
                    _ => {
                        let req = Message::from_bytes(&buf[..n]).unwrap();
                        let mut r = Message::builder_success(&req, MessageWriteVec::new());
                        r.add_attribute(&XorMappedAddress::new(from, req.transaction_id()))
                            .unwrap();
                        r.finish()
                    }
                };
                // Dribble the answer in two pieces to exercise framing.
                let (a, b) = reply.split_at(reply.len() / 2);
                let _ = s.write_all(a).await;
                let _ = s.flush().await;
                let _ = s.write_all(b).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn good_garbage_silent_and_closed() {
        let c = Counter::default();
        let t = Duration::from_millis(300);
        let (b, _) = binding(server("good").await, t, &c).await.unwrap();
        assert!(b.mapped.ip().is_loopback());
        assert!(binding(server("garbage").await, t, &c).await.is_err());
        assert_eq!(
            binding(server("silent").await, t, &c).await,
            Err(StunError::Timeout(300))
        );
        // Nothing listens: refused, quickly.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = l.local_addr().unwrap();
        drop(l);
        assert!(matches!(binding(dead, t, &c).await, Err(StunError::Io(_))));
    }
}
