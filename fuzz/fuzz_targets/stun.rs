//! Fuzzes the STUN codec and the STUN/QUIC demux rule: see `warpgate_fuzz::stun` for the input layout and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warpgate_fuzz::{check_samples, stun};

fuzz_target!(
    init: check_samples("stun", stun::samples(), stun::run),
    |data: &[u8]| {
        stun::run(data);
    }
);
