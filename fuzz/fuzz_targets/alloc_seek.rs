//! The SEEK_DATA/SEEK_HOLE walk fed odd answers; the logic lives in
//! `ember_engine::fuzz_harness::alloc` so `cargo test` replays the corpus through it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ember_engine::fuzz_harness::alloc::alloc_seek(data);
});
