//! format detection + inspection of arbitrary bytes (auto and declared formats); the logic lives in
//! `ember_engine::fuzz_harness::images::image_detect` so `cargo test` replays the corpus through it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ember_engine::fuzz_harness::images::image_detect(data);
});
