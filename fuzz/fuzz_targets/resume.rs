//! Fuzzes the resume note and verdict decoders: see `warpgate_fuzz::resume` for the input layout and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warpgate_fuzz::{check_samples, resume};

fuzz_target!(
    init: check_samples("resume", resume::samples(), resume::run),
    |data: &[u8]| {
        resume::run(data);
    }
);
