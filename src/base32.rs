//! Lowercase, unpadded base32 (RFC 4648 alphabet): the text of addresses and node ids, safe to
//! copy, paste and read aloud. Decoding untrusted text never panics.

use data_encoding::BASE32_NOPAD;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Base32Error {
    #[error("invalid character {0:?} (allowed: a-z and 2-7)")]
    BadCharacter(char),
    #[error("its length is not valid base32")]
    BadLength,
}

/// Encodes `bytes` as lowercase, unpadded base32.
pub fn encode(bytes: &[u8]) -> String {
    BASE32_NOPAD.encode(bytes).to_ascii_lowercase()
}

/// Decodes lowercase (or uppercase), unpadded base32.
pub fn decode(text: &str) -> Result<Vec<u8>, Base32Error> {
    if let Some(bad) = text
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '2'..='7'))
    {
        return Err(Base32Error::BadCharacter(bad));
    }
    BASE32_NOPAD
        .decode(text.to_ascii_uppercase().as_bytes())
        .map_err(|_| Base32Error::BadLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let bytes = [0u8, 1, 2, 250, 255, 17, 99];
        let text = encode(&bytes);
        assert_eq!(text, text.to_ascii_lowercase());
        assert_eq!(decode(&text).unwrap(), bytes);
        assert_eq!(decode(&text.to_ascii_uppercase()).unwrap(), bytes);
        assert_eq!(decode("ab1"), Err(Base32Error::BadCharacter('1')));
        assert_eq!(decode("a"), Err(Base32Error::BadLength));
    }
}
