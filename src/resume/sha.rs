//! SHA-256 whose running state can be saved and picked up again: the receiver hashes what it
//! writes to `FILE.part` as it writes it and keeps the state in the sidecar
//! ([`super::part`]), so a resumed transfer offers the hash of everything received without
//! reading any of it back. Built on sha2's block function; the digest is plain SHA-256 (the
//! sender checks its file with `sha2::Sha256`).

use sha2::digest::block_buffer::{BlockBuffer, Eager};
use sha2::digest::typenum::U64;

/// SHA-256's initial hash value (FIPS 180-4 §5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
/// SHA-256's block size.
const BLOCK: usize = 64;
/// Bytes of [`RunningSha256::to_bytes`].
pub const STATE_BYTES: usize = 32 + 8 + BLOCK;

/// A SHA-256 computation part way through: the chaining value after every whole block, the
/// bytes of the unfinished block, and how many whole blocks there were. Whole blocks go to
/// sha2's block function straight from the caller's buffer, as `sha2::Sha256` does it.
#[derive(Clone)]
pub struct RunningSha256 {
    state: [u32; 8],
    blocks: u64,
    buffer: BlockBuffer<U64, Eager>,
}

impl Default for RunningSha256 {
    fn default() -> Self {
        Self {
            state: IV,
            blocks: 0,
            buffer: BlockBuffer::default(),
        }
    }
}

impl PartialEq for RunningSha256 {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Eq for RunningSha256 {}

impl std::fmt::Debug for RunningSha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSha256")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl RunningSha256 {
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.blocks * BLOCK as u64 + self.buffer.get_pos() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn update(&mut self, data: &[u8]) {
        let (state, blocks) = (&mut self.state, &mut self.blocks);
        self.buffer.digest_blocks(data, |whole| {
            sha2::compress256(state, whole);
            *blocks += whole.len() as u64;
        });
    }

    /// The SHA-256 of everything hashed so far (the state itself is left as it is).
    pub fn digest(&self) -> [u8; 32] {
        let mut end = self.clone();
        let bits = self.len().wrapping_mul(8);
        let state = &mut end.state;
        end.buffer.len64_padding_be(bits, |block| {
            sha2::compress256(state, std::slice::from_ref(block))
        });
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(end.state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The state as bytes: chaining value (8 × u32 LE), length (u64 LE), then the unfinished
    /// block (64 bytes, zero-padded).
    pub fn to_bytes(&self) -> [u8; STATE_BYTES] {
        let mut out = [0u8; STATE_BYTES];
        for (bytes, word) in out[..32].chunks_exact_mut(4).zip(self.state) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        out[32..40].copy_from_slice(&self.len().to_le_bytes());
        let tail = self.buffer.get_data();
        out[40..40 + tail.len()].copy_from_slice(tail);
        out
    }

    /// The state [`RunningSha256::to_bytes`] wrote; `None` when the unfinished block's padding
    /// is not zero (not a state this type could have written).
    pub fn from_bytes(bytes: &[u8; STATE_BYTES]) -> Option<Self> {
        let mut state = [0u32; 8];
        for (word, chunk) in state.iter_mut().zip(bytes[..32].chunks_exact(4)) {
            *word = u32::from_le_bytes(chunk.try_into().ok()?);
        }
        let len = u64::from_le_bytes(bytes[32..40].try_into().ok()?);
        let filled = (len % BLOCK as u64) as usize;
        let (tail, padding) = bytes[40..].split_at(filled);
        if padding.iter().any(|&b| b != 0) {
            return None;
        }
        Some(Self {
            state,
            blocks: len / BLOCK as u64,
            buffer: BlockBuffer::try_new(tail).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 253) as u8).collect()
    }

    #[test]
    fn matches_sha256_at_every_length_around_the_block_edges() {
        for len in (0..200).chain([1000, 4095, 4096, 4097, 100_000]) {
            let bytes = data(len);
            let mut running = RunningSha256::default();
            running.update(&bytes);
            assert_eq!(running.len(), len as u64);
            assert_eq!(
                running.digest(),
                <[u8; 32]>::from(Sha256::digest(&bytes)),
                "{len}"
            );
        }
    }

    #[test]
    fn updates_in_any_pieces_and_resumes_from_its_bytes() {
        let bytes = data(70_001);
        let expected: [u8; 32] = Sha256::digest(&bytes).into();
        for piece in [1, 3, 63, 64, 65, 1000, 65_536] {
            let mut running = RunningSha256::default();
            for (i, chunk) in bytes.chunks(piece).enumerate() {
                running.update(chunk);
                // Saved and restored half way through, as a resumed transfer does.
                if i == bytes.len() / piece / 2 {
                    let saved = running.to_bytes();
                    running = RunningSha256::from_bytes(&saved).unwrap();
                }
            }
            assert_eq!(running.digest(), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn a_state_with_junk_past_its_unfinished_block_is_refused() {
        let mut running = RunningSha256::default();
        running.update(b"abc");
        let mut bytes = running.to_bytes();
        assert_eq!(RunningSha256::from_bytes(&bytes), Some(running));
        bytes[40 + 3] = 1;
        assert_eq!(RunningSha256::from_bytes(&bytes), None);
    }
}
