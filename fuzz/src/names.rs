//! Names: the syntax (`Name::parse` of user input, `Name::from_canonical` of wire text) and the
//! signed statements (`Record::open`, `Release::open`).
//!
//! Input: a mode byte, then bytes. Mode (byte % 4):
//! - 0: the bytes (lossily as UTF-8) are a name as typed;
//! - 1: the bytes are a statement, opened as received;
//! - 2: the bytes are a record without its owner key and signature (version ‖ kind ‖ fields):
//!   the owner's KEY field is put after the kind and the whole signed by the fixed owner, so the
//!   fuzzer reaches the field decoders behind the signature;
//! - 3: as 2, for a release.

use warpgate::addr::{Address, Candidate, CandidateKind};
use warpgate::identity::Identity;
use warpgate::names::name::MAX_NAME_LEN;
use warpgate::names::record::MAX_LIFETIME_SECS;
use warpgate::names::{Name, Record, Release};

use crate::keys::{owner_key, owner_sign};
use crate::Sample;

/// Domain labels of statements (src/names/record.rs keeps them private; the samples, checked
/// when a target starts, prove these still produce signatures the library accepts).
const RECORD_LABEL: &[u8] = b"warpgate name record v1\0";
const RELEASE_LABEL: &[u8] = b"warpgate name release v1\0";

/// Field types of a statement.
mod field {
    pub const NAME: u8 = 0x01;
    pub const KEY: u8 = 0x02;
    pub const ADDRESS: u8 = 0x03;
    pub const SEQ: u8 = 0x04;
    pub const ISSUED_AT: u8 = 0x05;
    pub const EXPIRES_AT: u8 = 0x06;
}

pub fn run(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    match mode % 4 {
        0 => name(&String::from_utf8_lossy(rest)),
        1 => {
            let record = Record::open(rest).inspect(record_holds).is_ok();
            let release = Release::open(rest).is_ok();
            record || release
        }
        2 => {
            let bytes = signed_statement(RECORD_LABEL, rest);
            let _ = Release::open(&bytes);
            Record::open(&bytes)
                .inspect(|r| {
                    record_holds(r);
                    assert_eq!(r.key, owner_key());
                })
                .is_ok()
        }
        _ => {
            let bytes = signed_statement(RELEASE_LABEL, rest);
            let _ = Record::open(&bytes);
            Release::open(&bytes)
                .inspect(|r| assert_eq!(r.key, owner_key()))
                .is_ok()
        }
    }
}

/// A name accepted from input is canonical, displays as something that parses back to it, and
/// canonical text parses as itself.
fn name(text: &str) -> bool {
    if let Some(canonical) = Name::from_canonical(text) {
        assert_eq!(Name::parse(text).as_ref(), Ok(&canonical));
    }
    Name::parse(text)
        .inspect(|name| {
            assert!(name.as_str().len() <= MAX_NAME_LEN);
            assert_eq!(Name::from_canonical(name.as_str()).as_ref(), Some(name));
            assert_eq!(Name::parse(&name.to_string()).as_ref(), Ok(name));
        })
        .is_ok()
}

/// What `Record::open` promises about a record it returns.
fn record_holds(record: &Record) {
    assert_eq!(record.address.key, record.key);
    let life = record.expires_at.checked_sub(record.issued_at);
    assert!(life.is_some_and(|life| life > 0 && life <= MAX_LIFETIME_SECS));
}

/// `rest`'s version and kind, the owner's KEY field, the rest of `rest`, the owner's signature.
fn signed_statement(label: &[u8], rest: &[u8]) -> Vec<u8> {
    let (head, tail) = rest.split_at(rest.len().min(2));
    let mut body = head.to_vec();
    push(&mut body, field::KEY, &owner_key().to_compressed());
    body.extend_from_slice(tail);
    let signature = owner_sign(&[label, &body].concat());
    body.extend_from_slice(&signature);
    body
}

fn push(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    let len = u16::try_from(value.len()).expect("sample fields are short");
    out.push(ty);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

pub fn samples() -> Vec<Sample> {
    const ISSUED: u64 = 1_800_000_000;
    let with_mode = |mode: u8, bytes: &[u8]| [&[mode], bytes].concat();
    let address = |key| {
        Address::new(
            key,
            vec![Candidate {
                kind: CandidateKind::Public,
                addr: "203.0.113.7:4000".parse().expect("sample socket address"),
            }],
        )
    };

    // Statements signed by a throwaway identity through the library (mode 1).
    let identity = Identity::generate();
    let record = Record {
        name: Name::parse("bob").expect("sample name"),
        key: identity.public_key(),
        address: address(identity.public_key()),
        seq: 3,
        issued_at: ISSUED,
        expires_at: ISSUED + 7 * 86400,
    };
    let release = Release {
        name: record.name.clone(),
        key: record.key,
        seq: 4,
        issued_at: ISSUED + 60,
    };

    // Unsigned bodies for the fixed owner (modes 2 and 3), with an unknown field in each.
    let mut record_body = vec![1, 1];
    push(&mut record_body, field::NAME, b"alice");
    push(
        &mut record_body,
        field::ADDRESS,
        &address(owner_key()).to_bytes(),
    );
    push(&mut record_body, field::SEQ, &7u64.to_be_bytes());
    push(&mut record_body, field::ISSUED_AT, &ISSUED.to_be_bytes());
    push(&mut record_body, 0x7f, &[1, 2, 3]);
    push(
        &mut record_body,
        field::EXPIRES_AT,
        &(ISSUED + 86400).to_be_bytes(),
    );
    let mut release_body = vec![1, 2];
    push(&mut release_body, field::NAME, b"alice");
    push(&mut release_body, field::SEQ, &8u64.to_be_bytes());
    push(&mut release_body, 0x7f, &[]);
    push(
        &mut release_body,
        field::ISSUED_AT,
        &(ISSUED + 10).to_be_bytes(),
    );

    vec![
        ("name-plain".into(), with_mode(0, b"bob")),
        ("name-typed".into(), with_mode(0, b"  R2-D2.P2P\n")),
        (
            "record-raw".into(),
            with_mode(1, &record.sign(&identity).expect("sample record signs")),
        ),
        (
            "release-raw".into(),
            with_mode(1, &release.sign(&identity).expect("sample release signs")),
        ),
        ("record-signed".into(), with_mode(2, &record_body)),
        ("release-signed".into(), with_mode(3, &release_body)),
    ]
}
