//! The wire format of UDP forwarding, pure and total (nothing here panics on what a peer sends):
//!
//! - the session hello the connector writes first on its session stream: [`HELLO_MAGIC`] then a
//!   [`Mode`] byte and a zero byte; the listener answers [`ACK`];
//! - a datagram's header: its flow id as a QUIC variable-length integer (RFC 9000 §16: 1 byte
//!   for ids below 64, 2 below 16384), then the payload, untouched;
//! - on a stream ([`Mode::Stream`]), each such datagram as a frame behind a 16-bit big-endian
//!   length.

use bytes::{BufMut, Bytes, BytesMut};

/// First bytes of a UDP session stream: protocol and version.
pub const HELLO_MAGIC: &[u8; 6] = b"WGUDP1";
/// Length of the whole hello.
pub const HELLO_LEN: usize = 8;
/// The listener's acceptance of a session.
pub const ACK: &[u8; 4] = b"UDP!";
/// Largest flow id (the largest QUIC varint).
pub const MAX_FLOW: u64 = (1 << 62) - 1;
/// Largest frame body on a stream: what its 16-bit length can say.
pub const MAX_FRAME: usize = u16::MAX as usize;

/// How datagrams travel on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As QUIC datagrams (RFC 9221): unreliable, unordered, never waiting for each other.
    Datagrams,
    /// As length-prefixed frames on the session stream (a TCP link): reliable and in order.
    Stream,
}

impl Mode {
    fn byte(self) -> u8 {
        match self {
            Mode::Datagrams => b'D',
            Mode::Stream => b'S',
        }
    }
}

/// The connector's hello for `mode`.
pub fn hello(mode: Mode) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..6].copy_from_slice(HELLO_MAGIC);
    out[6] = mode.byte();
    out
}

/// The mode a hello asks for; `None` when it is not a hello of ours.
pub fn parse_hello(bytes: &[u8; HELLO_LEN]) -> Option<Mode> {
    if &bytes[..6] != HELLO_MAGIC || bytes[7] != 0 {
        return None;
    }
    match bytes[6] {
        b'D' => Some(Mode::Datagrams),
        b'S' => Some(Mode::Stream),
        _ => None,
    }
}

/// Bytes the varint encoding of `v` takes (`v` at most [`MAX_FLOW`]).
pub fn varint_len(v: u64) -> usize {
    match v {
        0..=0x3f => 1,
        0x40..=0x3fff => 2,
        0x4000..=0x3fff_ffff => 4,
        _ => 8,
    }
}

fn put_varint(out: &mut BytesMut, v: u64) {
    match varint_len(v) {
        1 => out.put_u8(v as u8),
        2 => out.put_u16(0x4000 | v as u16),
        4 => out.put_u32(0x8000_0000 | v as u32),
        _ => out.put_u64(0xc000_0000_0000_0000 | (v & MAX_FLOW)),
    }
}

/// The varint at the start of `bytes` and its length; `None` when `bytes` is too short.
fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    let raw = bytes.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &raw[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// A datagram of flow `flow` as it travels in a QUIC datagram: header, then payload.
pub fn datagram(flow: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(varint_len(flow) + payload.len());
    put_varint(&mut out, flow);
    out.put_slice(payload);
    out.freeze()
}

/// The flow id and payload of a received datagram; `None` when it has no complete header.
pub fn parse_datagram(mut bytes: Bytes) -> Option<(u64, Bytes)> {
    let (flow, len) = get_varint(&bytes)?;
    let _ = bytes.split_to(len);
    Some((flow, bytes))
}

/// The same datagram as a stream frame: a 16-bit length, then what [`datagram`] makes; `None`
/// when it is longer than a frame can say.
pub fn frame(flow: u64, payload: &[u8]) -> Option<Bytes> {
    let body = varint_len(flow) + payload.len();
    let len = u16::try_from(body).ok()?;
    let mut out = BytesMut::with_capacity(2 + body);
    out.put_u16(len);
    put_varint(&mut out, flow);
    out.put_slice(payload);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_length_boundary() {
        for v in [0, 63, 64, 16383, 16384, 0x3fff_ffff, 0x4000_0000, MAX_FLOW] {
            let d = datagram(v, b"payload");
            assert_eq!(d.len(), varint_len(v) + 7, "{v}");
            assert_eq!(parse_datagram(d), Some((v, Bytes::from_static(b"payload"))));
        }
        // RFC 9000 §A.1's examples.
        assert_eq!(get_varint(&[0x25]), Some((37, 1)));
        assert_eq!(get_varint(&[0x7b, 0xbd]), Some((15293, 2)));
        assert_eq!(
            get_varint(&[0x9d, 0x7f, 0x3e, 0x7d]),
            Some((494_878_333, 4))
        );
    }

    #[test]
    fn a_truncated_or_empty_header_is_refused_not_read_past() {
        assert_eq!(parse_datagram(Bytes::new()), None);
        assert_eq!(parse_datagram(Bytes::from_static(&[0x40])), None);
        assert_eq!(parse_datagram(Bytes::from_static(&[0xc0, 1, 2])), None);
        // A header and no payload is an empty datagram, which UDP allows.
        assert_eq!(
            parse_datagram(Bytes::from_static(&[5])),
            Some((5, Bytes::new()))
        );
    }

    #[test]
    fn frames_carry_a_length_and_refuse_what_it_cannot_say() {
        let f = frame(3, b"abc").unwrap();
        assert_eq!(&f[..], &[0, 4, 3, b'a', b'b', b'c']);
        assert_eq!(
            parse_datagram(f.slice(2..)),
            Some((3, Bytes::from_static(b"abc")))
        );
        assert!(frame(0, &vec![0; MAX_FRAME - 1]).is_some());
        assert!(frame(0, &vec![0; MAX_FRAME]).is_none());
    }

    #[test]
    fn hellos_round_trip_and_strangers_are_not_hellos() {
        for mode in [Mode::Datagrams, Mode::Stream] {
            assert_eq!(parse_hello(&hello(mode)), Some(mode));
        }
        assert_eq!(parse_hello(b"SSH-2.0-"), None);
        assert_eq!(parse_hello(b"WGUDP1X\0"), None);
        assert_eq!(parse_hello(b"WGUDP1D\x01"), None);
    }
}
