//! Codec tests: every kind round-trips; wrong recipients, tampering, forged signatures and
//! bounds are refused; a seeded mutation loop never panics the decoder.

use super::*;

fn offer() -> Payload {
    Payload::Offer(Offer {
        tcp: vec![],
        udp: vec![
            Candidate {
                kind: CandidateKind::Local,
                addr: "192.168.1.2:4000".parse().unwrap(),
            },
            Candidate {
                kind: CandidateKind::Public,
                addr: "[2001:db8::1]:4000".parse().unwrap(),
            },
        ],
        strategies: vec!["reverse".into(), "tcp_punch".into()],
        nonce: [7; 16],
        relayed: vec!["198.51.100.1:49152".parse().unwrap()],
        mapping: SocketMapping::Random,
    })
}

fn message(from: &Keys, to: &Keys, payload: Payload) -> Message {
    Message {
        from: from.public_key(),
        to: to.public_key().id(),
        id: MessageId::random(),
        reply: Inbox::random(),
        timestamp_ms: 1_700_000_000_000,
        payload,
    }
}

#[test]
fn every_kind_round_trips() {
    let (alice, bob) = (Keys::random(), Keys::random());
    for payload in [
        offer(),
        Payload::Answer(Answer {
            udp: vec![],
            tcp: vec![],
            nonce: [1; 16],
            fire_in_ms: 100,
            relayed: vec![],
            mapping: SocketMapping::Kept,
        }),
        Payload::Ping(Ping {
            nonce: 9,
            sent_ms: 10,
        }),
        Payload::Pong(Pong {
            nonce: 9,
            ping_sent_ms: 10,
            sent_ms: 11,
        }),
        Payload::Ack(MessageId([3; 16])),
    ] {
        let m = message(&alice, &bob, payload);
        let sealed = m.seal(&alice, &bob.public_key()).unwrap();
        assert_eq!(Message::open(&bob, &sealed), Ok(m));
    }
}

#[test]
fn wrong_recipient_and_tampering_are_rejected() {
    let (alice, bob, eve) = (Keys::random(), Keys::random(), Keys::random());
    let m = message(&alice, &bob, offer());
    let sealed = m.seal(&alice, &bob.public_key()).unwrap();
    assert_eq!(
        Message::open(&eve, &sealed),
        Err(MessageError::Undecryptable)
    );
    // Sealed to eve but addressed (inside) to bob: eve must not accept it as hers.
    let misaddressed = m.seal(&alice, &eve.public_key()).unwrap();
    assert_eq!(
        Message::open(&eve, &misaddressed),
        Err(MessageError::Misaddressed)
    );
    // Claims to be from alice, signed by eve.
    let forged = encrypt(
        &bob.public_key(),
        &m.encode_with_signature(&eve.sign(&m.signed_bytes().unwrap()))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        Message::open(&bob, &forged),
        Err(MessageError::BadSignature)
    );
    assert_eq!(MessageError::BadSignature.class(), DropClass::Forged);
}

#[test]
fn the_reply_inbox_is_signed() {
    let (alice, bob) = (Keys::random(), Keys::random());
    let m = message(&alice, &bob, offer());
    let mut inner = m
        .encode_with_signature(&alice.sign(&m.signed_bytes().unwrap()))
        .unwrap();
    assert_eq!(Message::decode_inner(&inner).map(|d| d.reply), Ok(m.reply));
    // Someone who could rewrite the plaintext cannot point the replies elsewhere.
    let at = PUBLIC_KEY_LEN + NODE_ID_LEN + 16;
    inner[at] ^= 1;
    assert_eq!(
        Message::decode_inner(&inner),
        Err(MessageError::BadSignature)
    );
}

#[test]
fn bounds_are_enforced_on_encode() {
    let (alice, bob) = (Keys::random(), Keys::random());
    let mut big = message(&alice, &bob, offer());
    if let Payload::Offer(o) = &mut big.payload {
        o.strategies = vec!["a".repeat(MAX_STRATEGY_LEN + 1)];
    }
    assert!(matches!(
        big.seal(&alice, &bob.public_key()),
        Err(MessageError::PayloadBounds(_))
    ));
    assert_eq!(
        Message::open(&bob, &vec![0u8; MAX_MESSAGE_LEN + 1]),
        Err(MessageError::TooLarge(MAX_MESSAGE_LEN + 1))
    );
    let m = message(&alice, &bob, offer());
    let sealed = m.seal(&alice, &bob.public_key()).unwrap();
    assert!(sealed.len() < 400, "an offer is {} bytes", sealed.len());
}

/// xorshift64*: deterministic, dependency-free randomness for the fuzz loops.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn fuzz_open_and_decode_never_panic() {
    let (alice, bob) = (Keys::random(), Keys::random());
    let m = message(&alice, &bob, offer());
    let sealed = m.seal(&alice, &bob.public_key()).unwrap();
    let inner = m
        .encode_with_signature(&alice.sign(&m.signed_bytes().unwrap()))
        .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let base = if round % 2 == 0 { &sealed } else { &inner };
        let mut input = base.clone();
        match round % 4 {
            0 => input.truncate(rng.below(base.len())),
            1 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(input.len());
                    input[i] ^= 1 << rng.below(8);
                }
            }
            2 => {
                input = (0..rng.below(600)).map(|_| rng.next() as u8).collect();
                if rng.below(2) == 0 && input.len() > 4 {
                    input[..4].copy_from_slice(&header());
                }
            }
            _ => input.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        }
        let _ = Message::open(&bob, &input);
        let _ = Message::decode_inner(&input);
        // Plaintext bodies with random bytes but valid framing reach the postcard decoder.
        let kind = (rng.below(7)) as u8;
        let _ = Payload::decode_body(kind, &input[..rng.below(input.len())]);
    }
    // An untouched message still opens after all that.
    assert!(Message::open(&bob, &sealed).is_ok());
}

#[test]
fn a_mapping_this_build_does_not_know_reads_as_unknown() {
    let Payload::Offer(offer) = offer() else {
        unreachable!()
    };
    let mut body = postcard::to_allocvec(&offer).unwrap();
    assert_eq!(body.last(), Some(&3), "the mapping is the last byte");
    for (byte, mapping) in [
        (0, SocketMapping::Unknown),
        (1, SocketMapping::Kept),
        (2, SocketMapping::Sequential),
        (3, SocketMapping::Random),
        (4, SocketMapping::Unknown),
        (0xff, SocketMapping::Unknown),
    ] {
        *body.last_mut().unwrap() = byte;
        match Payload::decode_body(kind::OFFER, &body) {
            Ok(Payload::Offer(o)) => assert_eq!(o.mapping, mapping, "byte {byte}"),
            other => panic!("byte {byte}: {other:?}"),
        }
    }
    // An offer without it (an older build's) is refused like any malformed body.
    body.pop();
    assert_eq!(
        Payload::decode_body(kind::OFFER, &body),
        Err(MessageError::BadBody)
    );
}

/// A mapped candidate crosses the wire as public: the one-flag kind older peers read.
#[test]
fn a_mapped_candidate_travels_as_public() {
    let (alice, bob) = (Keys::random(), Keys::random());
    let mapped = Candidate {
        kind: CandidateKind::Mapped,
        addr: "203.0.113.17:41000".parse().unwrap(),
    };
    let Payload::Offer(mut o) = offer() else {
        unreachable!()
    };
    o.udp = vec![mapped];
    let m = message(&alice, &bob, Payload::Offer(o));
    let sealed = m.seal(&alice, &bob.public_key()).unwrap();
    let Ok(Message {
        payload: Payload::Offer(got),
        ..
    }) = Message::open(&bob, &sealed)
    else {
        panic!("the offer does not open");
    };
    assert_eq!(
        got.udp,
        vec![Candidate {
            kind: CandidateKind::Public,
            addr: mapped.addr
        }]
    );
}
