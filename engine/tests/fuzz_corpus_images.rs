//! Replays every checked-in corpus input of the image fuzz targets (`image_detect`,
//! `image_qcow2`, `image_vmdk`) through their harnesses, so a normal `cargo test` re-checks
//! what the fuzzers found.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {}", dir.display());
    for p in &files {
        let data = std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(r.is_ok(), "corpus input {} fails", p.display());
    }
    println!("{target}: replayed {} corpus inputs", files.len());
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
