//! Tables of registry answers, pins and clocks against the record (or refusal) they must give.

use super::*;
use crate::addr::{Address, Candidate, CandidateKind};
use crate::identity::Identity;

const NOW: u64 = 1_800_000_000;

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

/// A record for `label` by `owner`, sequence `seq`, valid from an hour ago for `life` seconds.
fn signed(owner: &Identity, label: &str, seq: u64, life: u64) -> Vec<u8> {
    let address = Address::new(
        owner.public_key(),
        vec![Candidate {
            kind: CandidateKind::Public,
            addr: "203.0.113.7:4000".parse().unwrap(),
        }],
    );
    Record {
        name: name(label),
        key: owner.public_key(),
        address,
        seq,
        issued_at: NOW - 3600,
        expires_at: NOW - 3600 + life,
    }
    .sign(owner)
    .unwrap()
}

fn ok(owner: &Identity, seq: u64) -> Answer {
    Answer::Record(signed(owner, "bob", seq, 86_400))
}

fn answers(list: Vec<Answer>) -> Vec<(String, Answer)> {
    list.into_iter()
        .enumerate()
        .map(|(i, a)| (format!("r{i}"), a))
        .collect()
}

#[test]
fn the_pinned_key_wins_with_its_newest_record() {
    let (owner, mallory) = (Identity::generate(), Identity::generate());
    let pin = owner.public_key();
    let cases = [
        // (answers, seq chosen, registries agreeing)
        (vec![ok(&owner, 1)], 1, vec!["r0"]),
        (
            vec![ok(&owner, 1), ok(&owner, 3), ok(&owner, 2)],
            3,
            vec!["r0", "r1", "r2"],
        ),
        // Two registries present another key; the pin still decides.
        (
            vec![ok(&mallory, 9), ok(&owner, 2), ok(&mallory, 9)],
            2,
            vec!["r1"],
        ),
        (
            vec![
                Answer::NotFound,
                Answer::Failed("down".into()),
                ok(&owner, 4),
            ],
            4,
            vec!["r2"],
        ),
    ];
    for (list, seq, agreeing) in cases {
        let got = resolve(&name("bob"), &answers(list), Some(&pin), NOW).unwrap();
        assert_eq!(got.record.key, pin);
        assert_eq!(got.record.seq, seq);
        assert!(got.was_pinned);
        assert_eq!(got.agreeing, agreeing);
    }
}

#[test]
fn another_key_than_the_pinned_one_is_refused_naming_both() {
    let (owner, mallory) = (Identity::generate(), Identity::generate());
    let pin = owner.public_key();
    // Only the other key is served (the owner's own record expired, say).
    let list = vec![
        ok(&mallory, 5),
        Answer::Record(signed(&owner, "bob", 1, 60)),
    ];
    let e = resolve(&name("bob"), &answers(list), Some(&pin), NOW).unwrap_err();
    assert_eq!(
        e,
        ResolveError::PinMismatch {
            name: name("bob"),
            pinned: pin.fingerprint(),
            presented: mallory.public_key().fingerprint(),
        }
    );
    let message = e.to_string();
    assert!(message.contains(&pin.fingerprint()), "{message}");
    assert!(message.contains(&mallory.public_key().fingerprint()));
    assert!(message.contains("warpgate name forget bob.p2p"));
}

#[test]
fn without_a_pin_the_most_served_key_wins_and_a_tie_is_refused() {
    let (a, b, c) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let bob = name("bob");
    let got = resolve(
        &bob,
        &answers(vec![ok(&a, 1), ok(&b, 7), ok(&a, 2)]),
        None,
        NOW,
    )
    .unwrap();
    assert_eq!((got.record.key, got.record.seq), (a.public_key(), 2));
    assert!(!got.was_pinned);
    assert_eq!(got.agreeing, vec!["r0", "r2"]);
    assert_eq!(got.set_aside.len(), 1);
    assert!(got.set_aside[0].1.contains("another key"));
    // One registry alone is enough when it is the only one that knows the name.
    let got = resolve(&bob, &answers(vec![Answer::NotFound, ok(&b, 1)]), None, NOW).unwrap();
    assert_eq!(got.record.key, b.public_key());
    // A tie is no basis for a pin, however new one side's record is.
    for (list, tied) in [
        (vec![ok(&a, 1), ok(&b, 99)], 2),
        (vec![ok(&a, 1), ok(&b, 1), ok(&c, 1)], 3),
        (
            vec![ok(&a, 1), ok(&b, 1), ok(&a, 2), ok(&b, 2), ok(&c, 3)],
            2,
        ),
    ] {
        let e = resolve(&bob, &answers(list), None, NOW).unwrap_err();
        let ResolveError::Ambiguous { keys, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(keys.len(), tied, "{e}");
        assert!(keys.contains(&a.public_key().fingerprint()));
        assert!(keys.contains(&b.public_key().fingerprint()));
    }
}

#[test]
fn forged_foreign_and_expired_records_are_set_aside() {
    let (owner, mallory) = (Identity::generate(), Identity::generate());
    let bob = name("bob");
    let good = signed(&owner, "bob", 1, 86_400);
    let mut tampered = good.clone();
    tampered[10] ^= 1;
    // Mallory re-signs the owner's record (address and all) under her key: the address's key
    // gives her away.
    let mut resigned = Record::open(&good).unwrap();
    resigned.key = mallory.public_key();
    let resigned = resigned.sign(&mallory).unwrap();
    let bad = [
        (Answer::Record(tampered), "invalid"),
        (Answer::Record(resigned), "another key than the record's"),
        (Answer::Record(b"junk".to_vec()), "invalid"),
        (
            Answer::Record(signed(&owner, "alice", 9, 86_400)),
            "another name (alice.p2p)",
        ),
        (Answer::Record(signed(&owner, "bob", 9, 3600)), "expired"),
    ];
    for (answer, why) in bad {
        // Alone, each leaves nothing to resolve to, and says why.
        let e = resolve(&bob, &answers(vec![answer.clone()]), None, NOW).unwrap_err();
        assert!(matches!(e, ResolveError::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains(why), "{e} lacks {why:?}");
        // Beside a good record, it is ignored.
        let list = answers(vec![answer, Answer::Record(good.clone())]);
        let got = resolve(&bob, &list, Some(&owner.public_key()), NOW).unwrap();
        assert_eq!(got.record.seq, 1);
        assert_eq!(got.set_aside.len(), 1);
    }
}

#[test]
fn nothing_found_and_nothing_reachable_are_told_apart() {
    let bob = name("bob");
    let down = || Answer::Failed("unreachable: connection refused".into());
    let e = resolve(&bob, &answers(vec![down(), down()]), None, NOW).unwrap_err();
    assert!(matches!(e, ResolveError::Unreachable { ref failed, .. } if failed.len() == 2));
    assert!(
        e.to_string()
            .contains("r1: unreachable: connection refused"),
        "{e}"
    );
    let e = resolve(&bob, &answers(vec![down(), Answer::NotFound]), None, NOW).unwrap_err();
    assert!(matches!(e, ResolveError::NotFound { .. }), "{e:?}");
    let e = resolve(&bob, &answers(vec![Answer::NotFound]), None, NOW).unwrap_err();
    assert_eq!(e.to_string(), "no registry has a valid record for bob.p2p");
}

#[test]
fn claims_need_at_least_half_of_the_configured_registries() {
    use Outcome::{Accepted as A, Failed as F};
    let t = |o: &str| Outcome::Taken(o.into());
    let majority = |accepted, configured| Verdict::Quorum {
        accepted,
        configured,
    };
    let none = |accepted, configured| Verdict::NoQuorum {
        accepted,
        configured,
    };
    let taken = |owner: &str| Verdict::Taken {
        owner: owner.into(),
    };
    let cases = [
        (vec![A], majority(1, 1)),
        (vec![A, A, F], majority(2, 3)),
        (vec![A, A, t("x")], majority(2, 3)),
        (vec![A, F], majority(1, 2)),
        (vec![A, A, F, F], majority(2, 4)),
        (vec![A, F, F, F], none(1, 4)),
        (vec![A, F, F], none(1, 3)),
        (vec![A, A, A, F], majority(3, 4)),
        (vec![F, F], none(0, 2)),
        (vec![], none(0, 0)),
        (vec![A, t("x"), F], taken("x")),
        (vec![t("y"), t("x"), t("x")], taken("x")),
    ];
    for (outcomes, want) in cases {
        assert_eq!(tally(&outcomes), want, "{outcomes:?}");
    }
    let results: [Result<(), ClientError>; 3] = [
        Ok(()),
        Err(ClientError::Taken { owner: "k".into() }),
        Err(ClientError::NotHeld),
    ];
    let outcomes: Vec<Outcome> = results.iter().map(Outcome::from).collect();
    assert_eq!(outcomes, vec![A, t("k"), F]);
}
