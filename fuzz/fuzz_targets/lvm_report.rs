//! `ember_drivers::fuzz_harness::lvm_report`: the logic lives in the drivers crate so `cargo test`
//! replays the corpus through it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ember_drivers::fuzz_harness::lvm_report(data);
});
