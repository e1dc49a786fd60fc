//! Fuzzes the home gateway's answers (NAT-PMP and PCP): see `warpgate_fuzz::portmap` for the input layout and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warpgate_fuzz::{check_samples, portmap};

fuzz_target!(
    init: check_samples("portmap", portmap::samples(), portmap::run),
    |data: &[u8]| {
        portmap::run(data);
    }
);
