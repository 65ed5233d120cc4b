//! Replays every checked-in fuzz corpus input of `alloc_seek` through the harness, so that a
//! normal `cargo test` re-checks what the fuzzer found.

use std::path::Path;

#[test]
fn replay_alloc_seek_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/alloc_seek");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {}", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
        let r = std::panic::catch_unwind(|| ember_engine::fuzz_harness::alloc::alloc_seek(&data));
        assert!(r.is_ok(), "corpus input {} fails", f.display());
    }
    println!("replayed {} corpus inputs", files.len());
}
