//! `ember_target::fuzz_harness::tgt_show`: the logic lives in the target crate so `cargo test`
//! replays the corpus through it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ember_target::fuzz_harness::tgt_show(data);
});
