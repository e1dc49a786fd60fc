//! Fuzzes the address decoder (binary record and text form): see `warpgate_fuzz::addr` for the input layout and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warpgate_fuzz::{addr, check_samples};

fuzz_target!(
    init: check_samples("addr", addr::samples(), addr::run),
    |data: &[u8]| {
        addr::run(data);
    }
);
