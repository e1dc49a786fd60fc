//! What this node remembers about names, in two text files under its home, one `NAME VALUE`
//! line each (like ssh's known_hosts):
//!
//! - `known_names`: pins, `NAME KEY`, the name's owner key as first seen (lowercase base32 of
//!   the 33-byte compressed P-256 key, so it is compared whole, not by a fingerprint);
//! - `aliases`: local petnames, `NAME ADDRESS` (`wg…`), which need no registry.
//!
//! Names are written canonically (`bob`, without `.p2p`). Blank lines and `#` comments are
//! kept; a line that does not parse (a hand edit gone wrong, a garbled disk) is skipped with a
//! warning and kept verbatim, so nothing the user wrote is lost on the next save. Saving
//! writes a temporary file beside the real one and renames it over, so a crash never leaves
//! half a file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::name::Name;
use crate::addr::Address;
use crate::identity::{PublicKey, PUBLIC_KEY_LEN};

/// The pins file under the home.
pub const PINS_FILE: &str = "known_names";
/// The aliases file under the home.
pub const ALIASES_FILE: &str = "aliases";

/// A value a file maps names to.
pub trait Value: Sized + Clone {
    /// What the value is called in warnings.
    const WHAT: &'static str;
    /// The first line of a new file.
    const HEADER: &'static str;
    fn parse(text: &str) -> Option<Self>;
    fn text(&self) -> String;
}

impl Value for PublicKey {
    const WHAT: &'static str = "KEY (base32 of a compressed P-256 key)";
    const HEADER: &'static str =
        "# warpgate pins: NAME KEY, the key each name had when first resolved (`warpgate name forget NAME` drops one)";

    fn parse(text: &str) -> Option<Self> {
        let bytes = crate::base32::decode(text).ok()?;
        (bytes.len() == PUBLIC_KEY_LEN)
            .then(|| PublicKey::from_sec1(&bytes))
            .flatten()
    }

    fn text(&self) -> String {
        crate::base32::encode(&self.to_compressed())
    }
}

impl Value for Address {
    const WHAT: &'static str = "ADDRESS (wg…)";
    const HEADER: &'static str =
        "# warpgate aliases: NAME ADDRESS, local names that need no registry (`warpgate name add`)";

    fn parse(text: &str) -> Option<Self> {
        Address::parse(text).ok()
    }

    fn text(&self) -> String {
        self.to_string()
    }
}

#[derive(Clone, Debug)]
enum Line<V> {
    Entry(Name, V),
    /// A comment, a blank line or a line that did not parse: kept as it was.
    Other(String),
}

/// One `NAME VALUE` file, read whole.
#[derive(Clone, Debug)]
pub struct NameFile<V> {
    path: PathBuf,
    lines: Vec<Line<V>>,
}

/// Pins: name → the owner key first seen.
pub type Pins = NameFile<PublicKey>;
/// Aliases: name → address.
pub type Aliases = NameFile<Address>;

impl Pins {
    pub fn load_pins(home: &Path) -> std::io::Result<Self> {
        Self::load(home.join(PINS_FILE))
    }
}

impl Aliases {
    pub fn load_aliases(home: &Path) -> std::io::Result<Self> {
        Self::load(home.join(ALIASES_FILE))
    }
}

impl<V: Value> NameFile<V> {
    /// Reads `path`; a missing file is an empty one. Bytes that are not UTF-8 are replaced,
    /// never a reason to fail.
    pub fn load(path: PathBuf) -> std::io::Result<Self> {
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        Ok(Self::parse(path, &text))
    }

    /// Parses `text` as the contents of `path` (named in warnings).
    pub fn parse(path: PathBuf, text: &str) -> Self {
        if text.trim().is_empty() {
            // A new file starts with a line saying what it is.
            let lines = vec![Line::Other(V::HEADER.to_string())];
            return Self { path, lines };
        }
        let mut lines = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                lines.push(Line::Other(line.to_string()));
                continue;
            }
            let mut words = trimmed.split_whitespace();
            let entry = match (words.next(), words.next(), words.next()) {
                (Some(name), Some(value), None) => Name::parse(name).ok().zip(V::parse(value)),
                _ => None,
            };
            match entry {
                Some((name, value)) => lines.push(Line::Entry(name, value)),
                None => {
                    tracing::warn!(
                        "{}:{}: skipping a line that is not NAME {}",
                        path.display(),
                        number + 1,
                        V::WHAT
                    );
                    lines.push(Line::Other(line.to_string()));
                }
            }
        }
        Self { path, lines }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of `name` (the first line for it, if a hand edit left several).
    pub fn get(&self, name: &Name) -> Option<&V> {
        self.entries().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&Name, &V)> {
        self.lines.iter().filter_map(|line| match line {
            Line::Entry(name, value) => Some((name, value)),
            Line::Other(_) => None,
        })
    }

    /// Sets `name` to `value`, in place of its line if it had one (later duplicates go).
    pub fn set(&mut self, name: &Name, value: V) {
        let mut value = Some(value);
        self.lines.retain_mut(|line| match line {
            Line::Entry(n, v) if n == name => match value.take() {
                Some(new) => {
                    *v = new;
                    true
                }
                None => false,
            },
            _ => true,
        });
        if let Some(value) = value {
            self.lines.push(Line::Entry(name.clone(), value));
        }
    }

    /// Drops every line for `name`; whether there was one.
    pub fn remove(&mut self, name: &Name) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|line| !matches!(line, Line::Entry(n, _) if n == name));
        self.lines.len() != before
    }

    /// The file's text, as [`NameFile::save`] writes it.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            match line {
                Line::Entry(name, value) => {
                    text.push_str(name.as_str());
                    text.push(' ');
                    text.push_str(&value.text());
                }
                Line::Other(other) => text.push_str(other),
            }
            text.push('\n');
        }
        text
    }

    /// Writes the file atomically: a temporary file beside it, synced, renamed over it.
    pub fn save(&self) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(self.to_text().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    #[test]
    fn pins_round_trip_through_the_file_keeping_comments() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Identity::generate(), Identity::generate());
        let mut pins = Pins::load_pins(dir.path()).unwrap();
        assert_eq!(pins.entries().count(), 0);
        pins.set(&name("bob.p2p"), a.public_key());
        pins.set(&name("alice"), b.public_key());
        pins.save().unwrap();
        let text = std::fs::read_to_string(dir.path().join(PINS_FILE)).unwrap();
        assert!(text.starts_with("# warpgate pins"), "{text}");
        assert!(text.contains(&format!("bob {}\n", a.public_key().text())));

        let mut pins = Pins::load_pins(dir.path()).unwrap();
        assert_eq!(pins.get(&name("bob")), Some(&a.public_key()));
        assert_eq!(pins.get(&name("alice")), Some(&b.public_key()));
        pins.set(&name("bob"), b.public_key());
        assert!(pins.remove(&name("alice")));
        assert!(!pins.remove(&name("alice")));
        pins.save().unwrap();
        let pins = Pins::load_pins(dir.path()).unwrap();
        assert_eq!(
            pins.entries().collect::<Vec<_>>(),
            vec![(&name("bob"), &b.public_key())]
        );
        // The header comment stayed; no temporary file is left behind.
        assert!(pins.to_text().starts_with("# warpgate pins"));
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn garbled_lines_are_skipped_and_kept() {
        let key = Identity::generate().public_key();
        let good = format!("bob {}", key.text());
        let text = format!(
            "# mine\n\n{good}\nBob.P2P {k}\nnot a pin line\n-bad- {k}\ncarol zzzz\ndave {k} extra\n\u{fffd}\u{0}\x07 {k}\neve {short}\n",
            k = key.text(),
            short = &key.text()[..20],
        );
        let mut pins = Pins::parse("known_names".into(), &text);
        // "Bob.P2P" is bob again (input is lowercased); the first line for a name counts.
        assert_eq!(pins.entries().count(), 2);
        assert_eq!(pins.get(&name("bob")), Some(&key));
        assert_eq!(pins.get(&name("carol")), None);
        pins.set(&name("bob"), key);
        let out = pins.to_text();
        // One line for bob now; every unreadable line is still there, as written.
        assert_eq!(out.matches(&key.text()).count(), 4, "{out}");
        for kept in ["# mine", "not a pin line", "carol zzzz", "dave "] {
            assert!(out.contains(kept), "{kept} lost: {out}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let key = Identity::generate().public_key();
        let seed = format!("bob {}\nalice wgaaaa\n# c\n", key.text()).into_bytes();
        for _ in 0..500 {
            let mut junk = seed.clone();
            for _ in 0..6 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state as usize) % junk.len();
                junk[i] = (state >> 40) as u8;
            }
            let text = String::from_utf8_lossy(&junk);
            let _ = Pins::parse("p".into(), &text).to_text();
            let _ = Aliases::parse("a".into(), &text).to_text();
        }
    }

    #[test]
    fn aliases_map_names_to_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let address = Address::new(Identity::generate().public_key(), Vec::new());
        let mut aliases = Aliases::load_aliases(dir.path()).unwrap();
        aliases.set(&name("home"), address.clone());
        aliases.save().unwrap();
        let aliases = Aliases::load_aliases(dir.path()).unwrap();
        assert_eq!(aliases.get(&name("home.p2p")), Some(&address));
        assert!(aliases.to_text().contains(&format!("home {address}\n")));
    }
}
