//! qcow2 header parse and full L1/L2 walk to a plan; the logic lives in
//! `ember_engine::fuzz_harness::images::image_qcow2` so `cargo test` replays the corpus through it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ember_engine::fuzz_harness::images::image_qcow2(data);
});
