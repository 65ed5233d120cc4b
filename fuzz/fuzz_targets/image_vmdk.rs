//! vmdk descriptor grammar, header/footer and grain directory walk; the logic lives in
//! `ember_engine::fuzz_harness::images::image_vmdk` so `cargo test` replays the corpus through it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ember_engine::fuzz_harness::images::image_vmdk(data);
});
