//! STUN binding messages on the wire: building requests (with the RFC 5780 CHANGE-REQUEST
//! attribute when asked) and reading responses into a plain [`Binding`]. Encoding and the
//! message grammar are stun-proto's; this file adds only the RFC 5780 attributes stun-proto does
//! not name (CHANGE-REQUEST, RESPONSE-ORIGIN, OTHER-ADDRESS). Everything here is total: a short,
//! garbled or unexpected answer is a [`StunError`], never a panic.

use std::net::SocketAddr;

use stun_proto::types::attribute::{
    AttributeType, ErrorCode, MappedSocketAddr, RawAttribute, Username, XorMappedAddress,
};
use stun_proto::types::message::{
    Message, MessageClass, MessageHeader, MessageWriteVec, TransactionId, BINDING,
};
use stun_proto::types::prelude::*;

use super::StunError;

/// MAPPED-ADDRESS (RFC 8489 §14.1), sent by old servers instead of XOR-MAPPED-ADDRESS.
const MAPPED_ADDRESS: u16 = 0x0001;
/// CHANGE-REQUEST (RFC 5780 §7.2): ask the server to answer from another IP and/or port.
const CHANGE_REQUEST: u16 = 0x0003;
/// RESPONSE-ORIGIN (RFC 5780 §7.3): where the server sent the response from.
const RESPONSE_ORIGIN: u16 = 0x802b;
/// OTHER-ADDRESS (RFC 5780 §7.4): the server's alternate address and port.
const OTHER_ADDRESS: u16 = 0x802c;

/// Which part of its source address the server is asked to change for its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Change {
    pub ip: bool,
    pub port: bool,
}

impl Change {
    pub const NONE: Change = Change {
        ip: false,
        port: false,
    };
    pub const PORT: Change = Change {
        ip: false,
        port: true,
    };
    pub const IP_AND_PORT: Change = Change {
        ip: true,
        port: true,
    };

    fn flags(self) -> u32 {
        (if self.ip { 0x4 } else { 0 }) | (if self.port { 0x2 } else { 0 })
    }
}

/// What a successful binding response said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The requester's address as the server saw it (server-reflexive).
    pub mapped: SocketAddr,
    /// The server's alternate address (RFC 5780), when it has one.
    pub other: Option<SocketAddr>,
    /// Where the server says it answered from (RFC 5780).
    pub origin: Option<SocketAddr>,
}

/// A binding request with a fresh random transaction id.
pub fn binding_request(change: Change) -> Result<(TransactionId, Vec<u8>), StunError> {
    let mut msg = Message::builder_request(BINDING, MessageWriteVec::new());
    if change != Change::NONE {
        let value = change.flags().to_be_bytes();
        msg.add_attribute(&RawAttribute::new(
            AttributeType::new(CHANGE_REQUEST),
            &value,
        ))
        .map_err(|e| StunError::Encode(e.to_string()))?;
    }
    finish_request(msg)
}

/// Adds FINGERPRINT and returns the request's transaction id and bytes.
fn finish_request(mut msg: MessageWriteVec) -> Result<(TransactionId, Vec<u8>), StunError> {
    msg.add_fingerprint()
        .map_err(|e| StunError::Encode(e.to_string()))?;
    let bytes = msg.finish();
    let id = MessageHeader::from_bytes(&bytes)
        .map_err(|e| StunError::Encode(e.to_string()))?
        .transaction_id();
    Ok((id, bytes))
}

/// Parses a datagram or TCP frame as a STUN message; anything else is [`StunError::Garbage`].
pub fn parse(data: &[u8]) -> Result<Message<'_>, StunError> {
    Message::from_bytes(data).map_err(|e| StunError::Garbage(e.to_string()))
}

/// Reads a response to one of our binding requests: success gives the [`Binding`], an error
/// response gives [`StunError::Rejected`], anything else [`StunError::Malformed`].
pub fn read_response(msg: &Message<'_>) -> Result<Binding, StunError> {
    if !msg.has_method(BINDING) {
        return Err(StunError::Malformed("not a binding response".into()));
    }
    match msg.class() {
        MessageClass::Success => {}
        MessageClass::Error => {
            return Err(match msg.attribute::<ErrorCode>() {
                Ok(e) => StunError::Rejected {
                    code: e.code(),
                    reason: e.reason().to_string(),
                },
                Err(_) => StunError::Rejected {
                    code: 0,
                    reason: "error response without ERROR-CODE".into(),
                },
            })
        }
        MessageClass::Request | MessageClass::Indication => {
            return Err(StunError::Malformed(
                "a request where a response belongs".into(),
            ))
        }
    }
    let mapped = match msg.attribute::<XorMappedAddress>() {
        Ok(x) => x.addr(msg.transaction_id()),
        Err(_) => address(msg, MAPPED_ADDRESS).ok_or_else(|| {
            StunError::Malformed("response carries no (XOR-)MAPPED-ADDRESS".into())
        })?,
    };
    Ok(Binding {
        mapped,
        other: address(msg, OTHER_ADDRESS),
        origin: address(msg, RESPONSE_ORIGIN),
    })
}

/// An address-typed attribute (MAPPED-ADDRESS layout), if present and well formed.
fn address(msg: &Message<'_>, ty: u16) -> Option<SocketAddr> {
    let raw = msg.raw_attribute(AttributeType::new(ty))?;
    MappedSocketAddr::from_raw(&raw).ok().map(|a| a.addr())
}

/// Length of the STUN message at the start of a TCP byte stream, once its 20-byte header is in:
/// `None` while fewer than 20 bytes are buffered.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..20)?;
    let body = u16::from_be_bytes([header[2], header[3]]) as usize;
    Some(20 + body)
}

/// A hole-punching probe, as [`read_punch`] sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Punch {
    /// A peer's binding request carrying a session token in USERNAME.
    Request { token: String },
    /// An answer to one of our probes: where the peer saw us come from.
    Response {
        id: TransactionId,
        mapped: SocketAddr,
    },
}

/// A probe for hole punching: a binding request (so middleboxes see ordinary STUN) whose USERNAME
/// is the session token, so the peer tells our probes from stray STUN.
pub fn punch_request(token: &str) -> Result<(TransactionId, Vec<u8>), StunError> {
    let mut msg = Message::builder_request(BINDING, MessageWriteVec::new());
    let username = Username::new(token).map_err(|e| StunError::Encode(e.to_string()))?;
    msg.add_attribute(&username)
        .map_err(|e| StunError::Encode(e.to_string()))?;
    finish_request(msg)
}

/// The answer to a peer's probe (`request`, as received): a binding success saying where the
/// probe came `from`. Anything but a request is [`StunError::Malformed`] (stun-proto's
/// response builder panics on one).
pub fn punch_response(request: &[u8], from: SocketAddr) -> Result<Vec<u8>, StunError> {
    let request = parse(request)?;
    if !request.has_class(MessageClass::Request) {
        return Err(StunError::Malformed(
            "only a request can be answered".into(),
        ));
    }
    let mut msg = Message::builder_success(&request, MessageWriteVec::new());
    msg.add_attribute(&XorMappedAddress::new(from, request.transaction_id()))
        .map_err(|e| StunError::Encode(e.to_string()))?;
    msg.add_fingerprint()
        .map_err(|e| StunError::Encode(e.to_string()))?;
    Ok(msg.finish())
}

/// Reads a datagram as a punch probe or an answer to one; anything else is `None`.
pub fn read_punch(data: &[u8]) -> Option<Punch> {
    let msg = parse(data).ok()?;
    if !msg.has_method(BINDING) {
        return None;
    }
    match msg.class() {
        MessageClass::Request => Some(Punch::Request {
            token: msg.attribute::<Username>().ok()?.username().to_string(),
        }),
        MessageClass::Success => Some(Punch::Response {
            id: msg.transaction_id(),
            mapped: read_response(&msg).ok()?.mapped,
        }),
        _ => None,
    }
}

/// Whether a datagram looks like STUN rather than QUIC (RFC 7983: STUN's first byte is 0–3;
/// QUIC always sets the 0x40 bit).
pub fn looks_like_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 4 && data[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punch_probes_round_trip_and_are_told_from_quic() {
        let (id, request) = punch_request("abc123").unwrap();
        assert!(looks_like_stun(&request));
        assert_eq!(
            read_punch(&request),
            Some(Punch::Request {
                token: "abc123".into()
            })
        );
        let from: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let response = punch_response(&request, from).unwrap();
        assert_eq!(
            read_punch(&response),
            Some(Punch::Response { id, mapped: from })
        );
        // A QUIC long-header packet (fixed bit set) is not STUN.
        assert!(!looks_like_stun(&[0xc0; 40]));
        assert_eq!(read_punch(&[0xc0; 40]), None);
        assert_eq!(read_punch(&request[..10]), None);
    }
    use stun_proto::types::attribute::ErrorCode;

    fn success_for(request: &[u8], mapped: SocketAddr, other: Option<SocketAddr>) -> Vec<u8> {
        let req = Message::from_bytes(request).unwrap();
        let mut resp = Message::builder_success(&req, MessageWriteVec::new());
        resp.add_attribute(&XorMappedAddress::new(mapped, req.transaction_id()))
            .unwrap();
        if let Some(o) = other {
            let raw = MappedSocketAddr::new(o);
            resp.add_attribute(&raw.to_raw(AttributeType::new(OTHER_ADDRESS)))
                .unwrap();
        }
        resp.finish()
    }

    #[test]
    fn request_carries_change_flags() {
        let (id, bytes) = binding_request(Change::IP_AND_PORT).unwrap();
        let msg = parse(&bytes).unwrap();
        assert_eq!(msg.transaction_id(), id);
        let raw = msg
            .raw_attribute(AttributeType::new(CHANGE_REQUEST))
            .unwrap();
        assert_eq!(&raw.value[..], &[0, 0, 0, 6]);
        let (_, plain) = binding_request(Change::NONE).unwrap();
        assert!(parse(&plain)
            .unwrap()
            .raw_attribute(AttributeType::new(CHANGE_REQUEST))
            .is_none());
    }

    #[test]
    fn success_response_is_read() {
        let (_, req) = binding_request(Change::NONE).unwrap();
        let mapped: SocketAddr = "203.0.113.7:4242".parse().unwrap();
        let other: SocketAddr = "198.51.100.2:3479".parse().unwrap();
        let resp = success_for(&req, mapped, Some(other));
        let b = read_response(&parse(&resp).unwrap()).unwrap();
        assert_eq!(
            b,
            Binding {
                mapped,
                other: Some(other),
                origin: None
            }
        );
        let v6: SocketAddr = "[2001:db8:1::2]:5000".parse().unwrap();
        let resp = success_for(&req, v6, None);
        assert_eq!(read_response(&parse(&resp).unwrap()).unwrap().mapped, v6);
    }

    #[test]
    fn error_response_is_rejected_with_its_code() {
        let (_, req) = binding_request(Change::PORT).unwrap();
        let req = Message::from_bytes(&req).unwrap();
        let mut resp = Message::builder_error(&req, MessageWriteVec::new());
        resp.add_attribute(&ErrorCode::builder(420).reason("Unknown").build().unwrap())
            .unwrap();
        let resp = resp.finish();
        assert_eq!(
            read_response(&parse(&resp).unwrap()),
            Err(StunError::Rejected {
                code: 420,
                reason: "Unknown".into()
            })
        );
    }

    #[test]
    fn garbage_short_and_unexpected_answers_are_errors() {
        for junk in [
            &b""[..],
            &b"hello"[..],
            &[0u8; 19][..],
            &[0x01, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42][..],
            &[0xff; 64][..],
        ] {
            assert!(parse(junk).is_err(), "{junk:?}");
        }
        // A success response without any mapped address.
        let (_, req) = binding_request(Change::NONE).unwrap();
        let reqm = Message::from_bytes(&req).unwrap();
        let empty = Message::builder_success(&reqm, MessageWriteVec::new()).finish();
        assert!(matches!(
            read_response(&parse(&empty).unwrap()),
            Err(StunError::Malformed(_))
        ));
        // Our own request echoed back is not a response.
        assert!(matches!(read_response(&reqm), Err(StunError::Malformed(_))));
        // A response whose mapped address is cut short: the declared lengths still agree.
        let mut bad = Message::builder_success(&reqm, MessageWriteVec::new());
        bad.add_attribute(&RawAttribute::new(AttributeType::new(0x0020), &[0, 1, 0]))
            .unwrap();
        let bad = bad.finish();
        if let Ok(msg) = parse(&bad) {
            assert!(read_response(&msg).is_err());
        }
    }

    #[test]
    fn every_prefix_of_a_response_is_handled() {
        let (_, req) = binding_request(Change::NONE).unwrap();
        let resp = success_for(
            &req,
            "203.0.113.7:1".parse().unwrap(),
            Some("198.51.100.2:3479".parse().unwrap()),
        );
        for n in 0..resp.len() {
            if let Ok(m) = parse(&resp[..n]) {
                let _ = read_response(&m);
            }
        }
    }

    /// Found by the stun fuzz target: answering a response (not a request) panicked inside
    /// stun-proto instead of being an error.
    #[test]
    fn answering_anything_but_a_request_is_an_error() {
        let (_, probe) = punch_request("abc123").unwrap();
        let from: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let response = punch_response(&probe, from).unwrap();
        assert!(matches!(
            punch_response(&response, from),
            Err(StunError::Malformed(_))
        ));
        let reqm = Message::from_bytes(&probe).unwrap();
        let error = Message::builder_error(&reqm, MessageWriteVec::new()).finish();
        assert!(matches!(
            punch_response(&error, from),
            Err(StunError::Malformed(_))
        ));
    }

    #[test]
    fn tcp_frame_length() {
        assert_eq!(frame_len(&[0; 19]), None);
        let (_, req) = binding_request(Change::NONE).unwrap();
        assert_eq!(frame_len(&req), Some(req.len()));
    }
}
