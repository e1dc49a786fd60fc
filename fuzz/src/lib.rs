//! What the fuzz targets run, kept out of `fuzz_targets/` so the seed generator
//! (`examples/seeds.rs`) and the targets' start-up checks share it: per codec a `run` (the
//! target's body: decode the bytes every way the library does, check the invariants that must
//! hold, report whether anything decoded) and `samples` (valid inputs in the target's layout,
//! the committed seed corpus).
//!
//! Where a decoder sits behind a signature, a target signs the fuzzer's bytes with a fixed key
//! ([`keys`]) so the fuzzer reaches the decoder, not only the rejection in front of it. Every
//! target starts by checking that all its samples still decode ([`check_samples`]): if the
//! library's format drifts from these helpers, the run fails instead of fuzzing a dead end.

pub mod addr;
pub mod keys;
pub mod names;
pub mod portmap;
pub mod resume;
pub mod signal;
pub mod stun;

/// A seed: a file name under `fuzz/corpus/TARGET/` and its bytes.
pub type Sample = (String, Vec<u8>);

/// Panics unless `run` accepts every sample (called by each target's `init`).
pub fn check_samples(target: &str, samples: Vec<Sample>, run: fn(&[u8]) -> bool) {
    for (name, bytes) in samples {
        assert!(
            run(&bytes),
            "{target} sample {name} no longer decodes: the fuzz helpers drifted from the library"
        );
    }
}
