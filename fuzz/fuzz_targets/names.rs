//! Fuzzes the name parser and the signed name statements: see `warpgate_fuzz::names` for the input layout and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warpgate_fuzz::{check_samples, names};

fuzz_target!(
    init: check_samples("names", names::samples(), names::run),
    |data: &[u8]| {
        names::run(data);
    }
);
