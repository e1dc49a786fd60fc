//! Signalling messages as a node receives them: `Message::open` (HPKE decryption, then the
//! plaintext decoder), `Message::decode_inner` (framing, sender key, signature, body) and the
//! postcard bodies behind the signature.
//!
//! Input: a mode byte, then bytes. Mode (byte % 4):
//! - 0: the bytes are a sealed message for the fixed recipient, opened as received;
//! - 1: the bytes are a plaintext, decoded and verified as is;
//! - 2: the bytes are a plaintext after the sender key (recipient id ‖ message id ‖ reply inbox ‖
//!   timestamp ‖ kind ‖ body length ‖ body), signed by the fixed sender, then decoded: this reaches the
//!   body decoder, which a fuzzer cannot reach through a signature of its own;
//! - 3: as 2, then also sealed to the fixed recipient and opened (decryption that succeeds,
//!   the recipient check).

use warpgate::addr::{Candidate, CandidateKind};
use warpgate::nat::SocketMapping;
use warpgate::signal::message::{encrypt, Message};
use warpgate::signal::{Answer, Inbox, MessageError, MessageId, Offer, Payload, Ping, Pong};

use crate::keys::{signed_inner, RECIPIENT, SENDER};
use crate::Sample;

pub fn run(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let opened = match mode % 4 {
        0 => Message::open(&RECIPIENT, rest),
        1 => Message::decode_inner(rest),
        2 => Message::decode_inner(&signed_inner(&SENDER, rest)),
        _ => encrypt(&RECIPIENT.public_key(), &signed_inner(&SENDER, rest))
            .and_then(|sealed| Message::open(&RECIPIENT, &sealed)),
    };
    match opened {
        Ok(message) => {
            round_trips(&message);
            true
        }
        Err(e) => {
            let _ = e.class();
            false
        }
    }
}

/// A message from the fixed sender that the decoder accepted, re-signed by that sender,
/// decodes to the same message; only a body too large for a sealed message may refuse to
/// encode (mode 2 decodes plaintexts larger than any that can arrive sealed).
fn round_trips(message: &Message) {
    if message.from != SENDER.public_key() {
        return;
    }
    match message.signed_bytes() {
        Ok(covered) => {
            let inner = message
                .encode_with_signature(&SENDER.sign(&covered))
                .expect("encodes like signed_bytes did");
            assert_eq!(Message::decode_inner(&inner).as_ref(), Ok(message));
        }
        Err(e) => assert!(matches!(e, MessageError::TooLarge(_)), "{e}"),
    }
}

/// One message of each kind, in every mode.
pub fn samples() -> Vec<Sample> {
    let candidate = |kind, addr: &str| Candidate {
        kind,
        addr: addr.parse().expect("sample socket address"),
    };
    let udp = vec![
        candidate(CandidateKind::Local, "192.168.1.2:4000"),
        candidate(CandidateKind::Public, "[2001:db8::1]:4000"),
    ];
    let tcp = vec![candidate(CandidateKind::Public, "203.0.113.7:4001")];
    let relayed = vec!["198.51.100.1:49152".parse().expect("sample socket address")];
    let payloads = [
        (
            "offer",
            Payload::Offer(Offer {
                udp: udp.clone(),
                tcp: tcp.clone(),
                strategies: vec!["reverse".into(), "tcp_punch".into()],
                nonce: [7; 16],
                relayed: relayed.clone(),
                mapping: SocketMapping::Unknown,
            }),
        ),
        (
            "answer",
            Payload::Answer(Answer {
                udp,
                tcp,
                nonce: [7; 16],
                fire_in_ms: 120,
                relayed,
                mapping: SocketMapping::Unknown,
            }),
        ),
        (
            "ping",
            Payload::Ping(Ping {
                nonce: 42,
                sent_ms: 1_800_000_000_000,
            }),
        ),
        (
            "pong",
            Payload::Pong(Pong {
                nonce: 42,
                ping_sent_ms: 1_800_000_000_000,
                sent_ms: 1_800_000_000_050,
            }),
        ),
        ("ack", Payload::Ack(MessageId([9; 16]))),
    ];
    let mut out = Vec::new();
    for (n, (kind, payload)) in payloads.into_iter().enumerate() {
        let message = Message {
            from: SENDER.public_key(),
            to: RECIPIENT.public_key().id(),
            id: MessageId([n as u8; 16]),
            reply: if n % 2 == 0 {
                Inbox::LISTENING
            } else {
                Inbox([0xa5; 16])
            },
            timestamp_ms: 1_800_000_000_000,
            payload,
        };
        let inner = message
            .encode_with_signature(&[0; 64])
            .expect("sample encodes");
        let rest = &inner[33..inner.len() - 64];
        let with_mode = |mode: u8, bytes: &[u8]| [&[mode], bytes].concat();
        let sealed = message
            .seal(&SENDER, &RECIPIENT.public_key())
            .expect("sample seals");
        out.push((format!("open-{kind}"), with_mode(0, &sealed)));
        out.push((
            format!("inner-{kind}"),
            with_mode(1, &signed_inner(&SENDER, rest)),
        ));
        out.push((format!("signed-{kind}"), with_mode(2, rest)));
        out.push((format!("sealed-{kind}"), with_mode(3, rest)));
    }
    out
}
