//! Differential fuzzing of ExtentMap/ChunkBitmap against a naive model; the logic lives in
//! `ember_engine::fuzz_harness::extents` so `cargo test` replays the corpus through it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ember_engine::fuzz_harness::extents::extent_ops(data);
});
