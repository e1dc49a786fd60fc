//! The STUN codec (parse, read_response, read_punch, punch_response, frame_len) and the demux
//! rule (`looks_like_stun`) that decides which datagrams on a shared socket are STUN, not QUIC.
//!
//! Input: one datagram (or TCP frame). It counts as decoded when it parses as STUN.

use std::net::SocketAddr;

use stun_proto::types::attribute::{
    AttributeType, ErrorCode, MappedSocketAddr, RawAttribute, XorMappedAddress,
};
use stun_proto::types::message::{Message, MessageWriteVec};
use stun_proto::types::prelude::*;
use warpgate::stun::codec::{
    binding_request, frame_len, looks_like_stun, parse, punch_request, punch_response, read_punch,
    read_response,
};
use warpgate::stun::Change;

use crate::Sample;

/// Where the answers to probes say the probe came from.
const FROM: &str = "198.51.100.9:40000";

pub fn run(data: &[u8]) -> bool {
    let stun_like = looks_like_stun(data);
    if let Some(len) = frame_len(data) {
        assert!(len >= 20, "a frame is at least its header");
    }
    let punch = read_punch(data);
    // The demux hands only what looks like STUN to the punching code: a probe it would
    // otherwise give to QUIC would be lost.
    assert!(
        punch.is_none() || stun_like,
        "a punch probe the demux would hand to QUIC"
    );
    let Ok(msg) = parse(data) else {
        return false;
    };
    let _ = read_response(&msg);
    let from: SocketAddr = FROM.parse().expect("constant address");
    let _ = punch_response(data, from);
    true
}

pub fn samples() -> Vec<Sample> {
    let request = |change| binding_request(change).expect("binding request").1;
    let (_, probe) = punch_request("4f1c2a9d0b7e3a55").expect("punch request");
    let v4: SocketAddr = "203.0.113.7:4242".parse().expect("address");
    let v6: SocketAddr = "[2001:db8:1::2]:5000".parse().expect("address");
    let plain = request(Change::NONE);
    let parsed = Message::from_bytes(&plain).expect("our request parses");

    // An RFC 5780 server's answer: MAPPED-ADDRESS (old style), OTHER-ADDRESS, RESPONSE-ORIGIN.
    let mut rfc5780 = Message::builder_success(&parsed, MessageWriteVec::new());
    for (ty, addr) in [
        (0x0001, v4),
        (0x802c, "198.51.100.2:3479".parse().expect("address")),
        (0x802b, "198.51.100.1:3478".parse().expect("address")),
    ] {
        rfc5780
            .add_attribute(&MappedSocketAddr::new(addr).to_raw(AttributeType::new(ty)))
            .expect("sample attribute");
    }
    let mut error = Message::builder_error(&parsed, MessageWriteVec::new());
    error
        .add_attribute(
            &ErrorCode::builder(420)
                .reason("Unknown")
                .build()
                .expect("code"),
        )
        .expect("sample attribute");
    let mut xor6 = Message::builder_success(&parsed, MessageWriteVec::new());
    xor6.add_attribute(&XorMappedAddress::new(v6, parsed.transaction_id()))
        .expect("sample attribute");
    xor6.add_attribute(&RawAttribute::new(AttributeType::new(0x7f01), &[1, 2, 3]))
        .expect("sample attribute");
    xor6.add_fingerprint().expect("fingerprint");
    vec![
        ("punch-request".into(), probe.clone()),
        (
            "punch-response-v4".into(),
            punch_response(&probe, v4).expect("punch response"),
        ),
        ("binding-response-rfc5780".into(), rfc5780.finish()),
        ("binding-response-v6".into(), xor6.finish()),
        ("binding-error-420".into(), error.finish()),
        ("binding-request".into(), plain),
        (
            "binding-request-change".into(),
            request(Change::IP_AND_PORT),
        ),
    ]
}
