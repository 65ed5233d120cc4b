//! Replays every checked-in fuzz corpus input of `alloc_seek` (odd SEEK_DATA/SEEK_HOLE answers)
//! through the harness, so that a normal `cargo test` re-checks what the fuzzer found.

#[test]
fn replay_alloc_seek_corpus() {
    ember_engine::test_util::replay_corpus(
        "alloc_seek",
        ember_engine::fuzz_harness::alloc::alloc_seek,
    );
}
