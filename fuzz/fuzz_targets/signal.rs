//! Fuzzes signalling message open and decode: see `warpgate_fuzz::signal` for the input layout and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warpgate_fuzz::{check_samples, signal};

fuzz_target!(
    init: check_samples("signal", signal::samples(), signal::run),
    |data: &[u8]| {
        signal::run(data);
    }
);
