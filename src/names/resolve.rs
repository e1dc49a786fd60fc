//! Deciding from what every registry said, with no I/O and no clock of its own: which record a
//! name resolves to ([`resolve`]) and whether a claim or release reached a majority
//! ([`tally`]). Registries are never trusted: each record is verified here, and one for
//! another name, an expired one or a forged one is refused whatever serves it.
//!
//! The choice of key:
//! - With a pin, the pinned key wins (its newest record, by sequence number), however many
//!   registries present another; when none presents the pinned key but some present another,
//!   the answer is [`ResolveError::PinMismatch`], never the other key.
//! - With no pin, the key the most registries serve a valid record for. A tie is refused
//!   ([`ResolveError::Ambiguous`]) rather than broken by recency: a registry that wants to
//!   hand out its own key for a name can always sign a newer record, but it cannot outvote
//!   honest registries, and the first answer becomes the pin.

use super::client::ClientError;
use super::name::Name;
use super::record::Record;
use crate::identity::PublicKey;

/// What one registry answered to a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Record bytes, unverified.
    Record(Vec<u8>),
    /// The registry has no record for the name.
    NotFound,
    /// The registry could not be asked, or answered nonsense.
    Failed(String),
}

impl From<Result<Option<Vec<u8>>, ClientError>> for Answer {
    fn from(got: Result<Option<Vec<u8>>, ClientError>) -> Self {
        match got {
            Ok(Some(bytes)) => Answer::Record(bytes),
            Ok(None) => Answer::NotFound,
            Err(e) => Answer::Failed(e.to_string()),
        }
    }
}

/// The record a name resolved to, and what each registry contributed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub record: Record,
    /// Whether the record's key was pinned already (false: this is first use).
    pub was_pinned: bool,
    /// Registries that served a valid record for the chosen key.
    pub agreeing: Vec<String>,
    /// Registries whose answer was not used, and why (another key, invalid, expired, failed).
    pub set_aside: Vec<(String, String)>,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("{name} is pinned to key {pinned}, but the registries present key {presented}: refusing it; if its owner really changed keys, run `warpgate name forget {name}`")]
    PinMismatch {
        name: Name,
        pinned: String,
        presented: String,
    },
    #[error("the registries disagree on {name}'s key ({}) and none is pinned: refusing to pick one; pin one by adding its address as an alias (`warpgate name add`)", .keys.join(" vs "))]
    Ambiguous { name: Name, keys: Vec<String> },
    #[error("no registry has a valid record for {name}{}", details(.set_aside))]
    NotFound {
        name: Name,
        set_aside: Vec<(String, String)>,
    },
    #[error("no registry could be asked about {name}{}", details(.failed))]
    Unreachable {
        name: Name,
        failed: Vec<(String, String)>,
    },
}

fn details(notes: &[(String, String)]) -> String {
    if notes.is_empty() {
        return String::new();
    }
    let notes: Vec<String> = notes.iter().map(|(r, why)| format!("{r}: {why}")).collect();
    format!(" ({})", notes.join("; "))
}

/// Chooses `name`'s record from every registry's answer (`(registry, answer)`), given the
/// pinned key if any and the time `now` (unix seconds).
pub fn resolve(
    name: &Name,
    answers: &[(String, Answer)],
    pin: Option<&PublicKey>,
    now: u64,
) -> Result<Resolution, ResolveError> {
    let mut valid: Vec<(&str, Record)> = Vec::new();
    let mut set_aside = Vec::new();
    let mut failed = 0;
    for (registry, answer) in answers {
        let why = match answer {
            Answer::Record(bytes) => match Record::open(bytes) {
                Ok(record) if record.name != *name => {
                    format!("served a record for another name ({})", record.name)
                }
                Ok(record) if record.is_expired(now) => "served an expired record".into(),
                Ok(record) => {
                    valid.push((registry, record));
                    continue;
                }
                Err(e) => format!("served an invalid record: {e}"),
            },
            Answer::NotFound => continue,
            Answer::Failed(e) => {
                failed += 1;
                e.clone()
            }
        };
        set_aside.push((registry.clone(), why));
    }
    if valid.is_empty() {
        return Err(if failed == answers.len() && failed > 0 {
            ResolveError::Unreachable {
                name: name.clone(),
                failed: set_aside,
            }
        } else {
            ResolveError::NotFound {
                name: name.clone(),
                set_aside,
            }
        });
    }
    let served = most_served(&valid);
    let (key, was_pinned) = match (pin, served.as_slice()) {
        (Some(pinned), _) if valid.iter().any(|(_, r)| r.key == *pinned) => (*pinned, true),
        (Some(pinned), [(presented, _), ..]) => {
            return Err(ResolveError::PinMismatch {
                name: name.clone(),
                pinned: pinned.fingerprint(),
                presented: presented.fingerprint(),
            })
        }
        (None, [(key, _)]) => (*key, false),
        (None, [(key, n), (_, m), ..]) if n > m => (*key, false),
        (_, tied) => {
            let top = tied.first().map_or(0, |(_, n)| *n);
            return Err(ResolveError::Ambiguous {
                name: name.clone(),
                keys: tied
                    .iter()
                    .filter(|(_, n)| *n == top)
                    .map(|(k, _)| k.fingerprint())
                    .collect(),
            });
        }
    };
    let mut agreeing = Vec::new();
    let mut best: Option<Record> = None;
    for (registry, record) in valid {
        if record.key != key {
            let why = format!("presented another key ({})", record.key.fingerprint());
            set_aside.push((registry.to_string(), why));
            continue;
        }
        agreeing.push(registry.to_string());
        // Newest first by sequence; on a tie (the same claim re-signed) the later expiry.
        let newer = match &best {
            Some(b) => (record.seq, record.expires_at) > (b.seq, b.expires_at),
            None => true,
        };
        if newer {
            best = Some(record);
        }
    }
    // The chosen key is one some registry served, so there is a best record.
    let Some(record) = best else {
        return Err(ResolveError::NotFound {
            name: name.clone(),
            set_aside,
        });
    };
    Ok(Resolution {
        record,
        was_pinned,
        agreeing,
        set_aside,
    })
}

/// The keys served, each with how many registries served it, most served first (ties in the
/// order first seen).
fn most_served(valid: &[(&str, Record)]) -> Vec<(PublicKey, usize)> {
    let mut counts: Vec<(PublicKey, usize)> = Vec::new();
    for (_, record) in valid {
        match counts.iter_mut().find(|(k, _)| *k == record.key) {
            Some((_, n)) => *n += 1,
            None => counts.push((record.key, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
}

/// What one registry did with a claim or a release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// The name belongs to another key there: its fingerprint as the registry gave it.
    Taken(String),
    Failed,
}

impl<T> From<&Result<T, ClientError>> for Outcome {
    fn from(result: &Result<T, ClientError>) -> Self {
        match result {
            Ok(_) => Outcome::Accepted,
            Err(ClientError::Taken { owner }) => Outcome::Taken(owner.clone()),
            Err(_) => Outcome::Failed,
        }
    }
}

/// The verdict on a claim or release sent to every configured registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// At least half of the configured registries (and at least one) accepted it.
    Quorum { accepted: usize, configured: usize },
    /// No quorum, and some registry says the name is another key's (the owner it named most).
    Taken { owner: String },
    /// No quorum, and no registry said the name is taken.
    NoQuorum { accepted: usize, configured: usize },
}

/// Whether `accepted` of `configured` registries is enough: at least half of them, and at least
/// one. A majority, except that half is enough for an even count: with two registries, one
/// being down does not stop a claim. Two keys that each won half are caught by every lookup,
/// which refuses a tie unless a pin decides it.
pub fn is_quorum(accepted: usize, configured: usize) -> bool {
    accepted > 0 && accepted * 2 >= configured
}

/// Judges the outcomes of one claim or release, one per configured registry.
pub fn tally(outcomes: &[Outcome]) -> Verdict {
    let configured = outcomes.len();
    let accepted = outcomes.iter().filter(|o| **o == Outcome::Accepted).count();
    if is_quorum(accepted, configured) {
        return Verdict::Quorum {
            accepted,
            configured,
        };
    }
    let mut owners: Vec<(&str, usize)> = Vec::new();
    for outcome in outcomes {
        if let Outcome::Taken(owner) = outcome {
            match owners.iter_mut().find(|(o, _)| o == owner) {
                Some((_, n)) => *n += 1,
                None => owners.push((owner, 1)),
            }
        }
    }
    owners.sort_by_key(|o| std::cmp::Reverse(o.1));
    match owners.first() {
        Some((owner, _)) => Verdict::Taken {
            owner: owner.to_string(),
        },
        None => Verdict::NoQuorum {
            accepted,
            configured,
        },
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
