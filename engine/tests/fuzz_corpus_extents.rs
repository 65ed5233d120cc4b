//! Replays every checked-in fuzz corpus input of `extent_ops` through the harness, so that a
//! normal `cargo test` re-checks what the fuzzer found.

#[test]
fn replay_extent_ops_corpus() {
    ember_engine::test_util::replay_corpus(
        "extent_ops",
        ember_engine::fuzz_harness::extents::extent_ops,
    );
}
