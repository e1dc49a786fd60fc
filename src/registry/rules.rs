//! The registry's rules as pure functions (docs/names.md): given the row stored for a name (if
//! any), the verified statement that arrived, the time and the policy, what happens. No I/O and
//! no clock: [`super::store`] runs them inside its write transaction, and the tests below drive
//! them with tables.

use crate::identity::PublicKey;
use crate::names::{Name, Record, Release};
use crate::timing::NAME_MAX_FUTURE;

/// The server's knobs that the rules depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Seconds an expired name stays reserved to its owner.
    pub grace: u64,
    /// Names one key may hold (live or in grace).
    pub max_names: u32,
}

/// What the store holds for a name: the last accepted record and the fields the rules use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub key: PublicKey,
    pub seq: u64,
    pub issued_at: u64,
    pub expires_at: u64,
    pub bytes: Vec<u8>,
}

impl Stored {
    pub fn new(record: &Record, bytes: &[u8]) -> Self {
        Self {
            key: record.key,
            seq: record.seq,
            issued_at: record.issued_at,
            expires_at: record.expires_at,
            bytes: bytes.to_vec(),
        }
    }

    /// Served to lookups: not expired.
    pub fn is_live(&self, now: u64) -> bool {
        now < self.expires_at
    }

    /// Still its owner's: live, or expired for less than the grace.
    pub fn is_held(&self, now: u64, grace: u64) -> bool {
        now < self.expires_at.saturating_add(grace)
    }
}

/// Why a write is refused; each maps to one HTTP status in [`super::http`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 422: the statement is invalid (signature, name, time, sequence).
    Invalid(String),
    /// 409: the name is held by another key.
    Taken { owner: PublicKey },
    /// 403: the key already holds as many names as it may.
    Quota { max: u32 },
    /// 404: nothing to release.
    NotHeld,
}

/// An accepted claim or renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A free name now belongs to the record's key.
    Claimed,
    /// The owner's newer record replaces the stored one.
    Renewed,
    /// The very record already stored: nothing to write.
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Claimed => "claimed",
            Outcome::Renewed => "renewed",
            Outcome::Unchanged => "unchanged",
        }
    }
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal::Invalid(message.into())
}

/// Opens a record sent for `path` at `now`: signature, address key and lifetime
/// ([`Record::open`]), then the name, expiry and issue time.
pub fn check_record(bytes: &[u8], path: &Name, now: u64) -> Result<Record, Refusal> {
    let record = Record::open(bytes).map_err(|e| invalid(e.to_string()))?;
    if record.name != *path {
        return Err(invalid(format!(
            "the record is for {}, not {path}",
            record.name
        )));
    }
    if record.is_expired(now) {
        return Err(invalid("the record has expired"));
    }
    if record.issued_at > now.saturating_add(NAME_MAX_FUTURE.as_secs()) {
        return Err(invalid(format!(
            "the record is issued more than {} s in the future (check the clock)",
            NAME_MAX_FUTURE.as_secs()
        )));
    }
    Ok(record)
}

/// Opens a release sent for `path`: signature and name.
pub fn check_release(bytes: &[u8], path: &Name) -> Result<Release, Refusal> {
    let release = Release::open(bytes).map_err(|e| invalid(e.to_string()))?;
    if release.name != *path {
        return Err(invalid(format!(
            "the release is for {}, not {path}",
            release.name
        )));
    }
    Ok(release)
}

/// Decides a checked `record` (signed as `bytes`) against the `stored` row for its name.
/// `held_elsewhere` counts the other names the record's key holds at `now`.
pub fn decide_claim(
    stored: Option<&Stored>,
    record: &Record,
    bytes: &[u8],
    held_elsewhere: u32,
    now: u64,
    policy: Policy,
) -> Result<Outcome, Refusal> {
    match stored.filter(|s| s.is_held(now, policy.grace)) {
        Some(s) if s.key != record.key => Err(Refusal::Taken { owner: s.key }),
        Some(s) if record.seq > s.seq => Ok(Outcome::Renewed),
        Some(s) if record.seq == s.seq && bytes == s.bytes.as_slice() => Ok(Outcome::Unchanged),
        Some(s) => Err(invalid(format!(
            "the record's sequence number {} is not above the stored one ({})",
            record.seq, s.seq
        ))),
        None if held_elsewhere >= policy.max_names => Err(Refusal::Quota {
            max: policy.max_names,
        }),
        None => Ok(Outcome::Claimed),
    }
}

/// Decides a checked `release` against the `stored` row for its name.
///
/// Beyond the signature, a release must be newer than the record it ends in both sequence and
/// issue time, so an old release replayed later cannot end a name its owner claimed again.
pub fn decide_release(
    stored: Option<&Stored>,
    release: &Release,
    now: u64,
    policy: Policy,
) -> Result<(), Refusal> {
    let Some(s) = stored.filter(|s| s.is_held(now, policy.grace)) else {
        return Err(Refusal::NotHeld);
    };
    if s.key != release.key {
        return Err(Refusal::Taken { owner: s.key });
    }
    if release.seq <= s.seq {
        return Err(invalid(format!(
            "the release's sequence number {} is not above the record's ({})",
            release.seq, s.seq
        )));
    }
    if release.issued_at < s.issued_at {
        return Err(invalid("the release is older than the record it would end"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Address;
    use crate::identity::Identity;

    const NOW: u64 = 1_800_000_000;
    const POLICY: Policy = Policy {
        grace: 100,
        max_names: 2,
    };

    fn record(owner: &Identity, name: &str, seq: u64, issued_at: u64, life: u64) -> Record {
        Record {
            name: Name::parse(name).unwrap(),
            key: owner.public_key(),
            address: Address::new(owner.public_key(), Vec::new()),
            seq,
            issued_at,
            expires_at: issued_at + life,
        }
    }

    fn signed(owner: &Identity, r: &Record) -> Vec<u8> {
        r.sign(owner).unwrap()
    }

    #[test]
    fn records_are_checked_for_name_expiry_and_future() {
        let alice = Identity::generate();
        let bob = Name::parse("bob").unwrap();
        let cases: [(&str, u64, u64, bool); 6] = [
            // name, issued_at, lifetime, accepted
            ("bob", NOW - 10, 3600, true),
            ("bob", NOW + 300, 3600, true),
            ("bob", NOW + 301, 3600, false),
            ("bob", NOW - 3600, 3600, false), // expires exactly now
            ("bob", NOW - 3600, 3601, true),
            ("carol", NOW, 3600, false),
        ];
        for (name, issued_at, life, ok) in cases {
            let r = record(&alice, name, 1, issued_at, life);
            let got = check_record(&signed(&alice, &r), &bob, NOW);
            assert_eq!(got.is_ok(), ok, "{name} {issued_at} {life}: {got:?}");
            if ok {
                assert_eq!(got.unwrap(), r);
            }
        }
        let mut forged = signed(&alice, &record(&alice, "bob", 1, NOW, 60));
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            check_record(&forged, &bob, NOW),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            check_record(b"junk", &bob, NOW),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn claims_follow_the_rules() {
        let (alice, mallory) = (Identity::generate(), Identity::generate());
        let stored_r = record(&alice, "bob", 5, NOW - 50, 100); // expires at NOW + 50
        let stored = Stored::new(&stored_r, &signed(&alice, &stored_r));
        let expired_r = record(&alice, "bob", 5, NOW - 150, 100); // expired 50 s ago
        let in_grace = Stored::new(&expired_r, &signed(&alice, &expired_r));
        let stale_r = record(&alice, "bob", 5, NOW - 250, 100); // grace ended 50 s ago
        let past_grace = Stored::new(&stale_r, &signed(&alice, &stale_r));

        let alice_new = record(&alice, "bob", 6, NOW, 100);
        let alice_old = record(&alice, "bob", 4, NOW, 100);
        let alice_same_seq = record(&alice, "bob", 5, NOW, 100);
        let mallory_r = record(&mallory, "bob", 9, NOW, 100);
        let taken = Err(Refusal::Taken {
            owner: alice.public_key(),
        });
        let quota = Err(Refusal::Quota { max: 2 });
        type Case<'a> = (&'a str, Option<&'a Stored>, &'a Identity, &'a Record, u32);
        let cases: Vec<(Case, Result<Outcome, Refusal>)> = vec![
            (
                ("free", None, &mallory, &mallory_r, 0),
                Ok(Outcome::Claimed),
            ),
            (("free, quota full", None, &mallory, &mallory_r, 2), quota),
            (
                ("free, quota left", None, &mallory, &mallory_r, 1),
                Ok(Outcome::Claimed),
            ),
            (
                ("owner newer", Some(&stored), &alice, &alice_new, 9),
                Ok(Outcome::Renewed),
            ),
            (
                ("other key", Some(&stored), &mallory, &mallory_r, 0),
                taken.clone(),
            ),
            (
                ("in grace, owner", Some(&in_grace), &alice, &alice_new, 0),
                Ok(Outcome::Renewed),
            ),
            (
                (
                    "in grace, other key",
                    Some(&in_grace),
                    &mallory,
                    &mallory_r,
                    0,
                ),
                taken,
            ),
            (
                (
                    "past grace, other",
                    Some(&past_grace),
                    &mallory,
                    &mallory_r,
                    0,
                ),
                Ok(Outcome::Claimed),
            ),
            (
                (
                    "past grace, owner, lower seq",
                    Some(&past_grace),
                    &alice,
                    &alice_old,
                    0,
                ),
                Ok(Outcome::Claimed),
            ),
            (
                (
                    "past grace, quota full",
                    Some(&past_grace),
                    &mallory,
                    &mallory_r,
                    2,
                ),
                Err(Refusal::Quota { max: 2 }),
            ),
        ];
        for ((what, stored, owner, r, held), want) in cases {
            let got = decide_claim(stored, r, &signed(owner, r), held, NOW, POLICY);
            assert_eq!(got, want, "{what}");
        }
        // Same sequence: the very bytes are unchanged; other bytes are refused, as is a lower one.
        assert_eq!(
            decide_claim(Some(&stored), &stored_r, &stored.bytes, 0, NOW, POLICY),
            Ok(Outcome::Unchanged)
        );
        for r in [&alice_same_seq, &alice_old] {
            let got = decide_claim(Some(&stored), r, &signed(&alice, r), 0, NOW, POLICY);
            assert!(
                matches!(&got, Err(Refusal::Invalid(m)) if m.contains("sequence")),
                "{got:?}"
            );
        }
    }

    #[test]
    fn releases_follow_the_rules() {
        let (alice, mallory) = (Identity::generate(), Identity::generate());
        let stored_r = record(&alice, "bob", 5, NOW - 50, 100);
        let stored = Stored::new(&stored_r, &signed(&alice, &stored_r));
        let stale_r = record(&alice, "bob", 5, NOW - 250, 100);
        let past_grace = Stored::new(&stale_r, &signed(&alice, &stale_r));
        let release = |who: &Identity, seq: u64, issued_at: u64| Release {
            name: Name::parse("bob").unwrap(),
            key: who.public_key(),
            seq,
            issued_at,
        };
        let cases = [
            ("owner", Some(&stored), release(&alice, 6, NOW), Ok(())),
            (
                "nothing stored",
                None,
                release(&alice, 6, NOW),
                Err(Refusal::NotHeld),
            ),
            (
                "past grace",
                Some(&past_grace),
                release(&alice, 6, NOW),
                Err(Refusal::NotHeld),
            ),
            (
                "other key",
                Some(&stored),
                release(&mallory, 6, NOW),
                Err(Refusal::Taken {
                    owner: alice.public_key(),
                }),
            ),
        ];
        for (what, stored, r, want) in cases {
            assert_eq!(decide_release(stored, &r, NOW, POLICY), want, "{what}");
        }
        // Not newer than the record: by sequence, or replayed from before the record.
        for r in [release(&alice, 5, NOW), release(&alice, 6, NOW - 51)] {
            let got = decide_release(Some(&stored), &r, NOW, POLICY);
            assert!(matches!(got, Err(Refusal::Invalid(_))), "{r:?}: {got:?}");
        }
        // A release is checked for its name and signature.
        let bob = Name::parse("bob").unwrap();
        let carol = Release {
            name: Name::parse("carol").unwrap(),
            ..release(&alice, 6, NOW)
        };
        let bytes = carol.sign(&alice).unwrap();
        assert!(matches!(
            check_release(&bytes, &bob),
            Err(Refusal::Invalid(_))
        ));
        let good = release(&alice, 6, NOW).sign(&alice).unwrap();
        assert_eq!(check_release(&good, &bob).unwrap(), release(&alice, 6, NOW));
        let mut forged = good.clone();
        forged[4] ^= 1;
        assert!(check_release(&forged, &bob).is_err());
    }
}
