//! Replays every checked-in corpus input of the image fuzz targets (`image_detect`,
//! `image_qcow2`, `image_vmdk`) through their harnesses, so a normal `cargo test` re-checks
//! what the fuzzers found.

fn replay(target: &str, f: fn(&[u8])) {
    ember_engine::test_util::replay_corpus(target, f);
}

#[test]
fn replay_image_detect_corpus() {
    replay(
        "image_detect",
        ember_engine::fuzz_harness::images::image_detect,
    );
}

#[test]
fn replay_image_qcow2_corpus() {
    replay(
        "image_qcow2",
        ember_engine::fuzz_harness::images::image_qcow2,
    );
}

#[test]
fn replay_image_vmdk_corpus() {
    replay("image_vmdk", ember_engine::fuzz_harness::images::image_vmdk);
}
