//! Name syntax: `bob` and `bob.p2p` are the same name. A label of lowercase letters, digits and
//! inner hyphens, 1–63 characters (a DNS label); input is lowercased; `.p2p` is optional. An
//! address (`wg…` with no dot) is never mistaken for a name: callers try the address first.

use std::fmt;

/// The suffix that marks a warpgate name; optional on input, shown on output.
pub const SUFFIX: &str = ".p2p";
/// Longest name label.
pub const MAX_NAME_LEN: usize = 63;

/// A valid name, lowercased, without the `.p2p` suffix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a valid name: use 1-63 lowercase letters, digits and inner hyphens, optionally followed by .p2p (like bob or bob.p2p)")]
pub struct NameError(pub String);

impl Name {
    /// Parses user input: trims, lowercases, drops one `.p2p` suffix, checks the label.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        let label = lower.strip_suffix(SUFFIX).unwrap_or(&lower);
        if Self::valid_label(label) {
            Ok(Self(label.to_string()))
        } else {
            Err(NameError(trimmed.to_string()))
        }
    }

    /// Whether `label` is already in canonical form (for names read from records and the
    /// wire, which must not be lowercased into validity).
    pub fn from_canonical(label: &str) -> Option<Self> {
        Self::valid_label(label).then(|| Self(label.to_string()))
    }

    fn valid_label(label: &str) -> bool {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_NAME_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    }

    /// The label, without the suffix (what records, URLs and pins carry).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    /// The name as users see it: `bob.p2p`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{SUFFIX}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_lose_their_suffix() {
        for (input, label) in [
            ("bob", "bob"),
            ("bob.p2p", "bob"),
            ("  Bob.P2P ", "bob"),
            ("a", "a"),
            ("r2-d2", "r2-d2"),
            ("0", "0"),
        ] {
            assert_eq!(Name::parse(input).unwrap().as_str(), label, "{input}");
        }
        assert_eq!(Name::parse("bob").unwrap().to_string(), "bob.p2p");
        assert_eq!(
            Name::parse(&"x".repeat(63)).unwrap().as_str().len(),
            MAX_NAME_LEN
        );
    }

    #[test]
    fn bad_names_are_refused_with_what_is_allowed() {
        for input in [
            "",
            ".p2p",
            "-bob",
            "bob-",
            "bo b",
            "bob.example",
            "bob.p2p.p2p",
            "bøb",
            "bob_1",
            &"x".repeat(64),
        ] {
            let e = Name::parse(input).unwrap_err();
            assert!(e.to_string().contains("1-63 lowercase letters"), "{input}");
        }
    }

    #[test]
    fn canonical_form_is_not_lowercased_into_validity() {
        assert!(Name::from_canonical("bob").is_some());
        assert!(Name::from_canonical("Bob").is_none());
        assert!(Name::from_canonical("bob.p2p").is_none());
    }
}
