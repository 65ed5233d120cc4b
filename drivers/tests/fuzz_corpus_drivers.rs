//! Replays every checked-in fuzz corpus input of `config_parse`, `names` and `lvm_report` through the
//! harness (`ember_drivers::fuzz_harness`), so that a normal `cargo test` re-checks what the
//! fuzzer found.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    ember_engine::test_util::replay_corpus(target, f);
}

#[test]
fn replay_config_parse_corpus() {
    replay("config_parse", ember_drivers::fuzz_harness::config_parse);
}

#[test]
fn replay_names_corpus() {
    replay("names", ember_drivers::fuzz_harness::names);
}

#[test]
fn replay_lvm_report_corpus() {
    replay("lvm_report", ember_drivers::fuzz_harness::lvm_report);
}

/// The reports captured from lvm2 parse, and map: the corpus is not all rejects.
#[test]
fn lvm_report_seeds_are_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/lvm_report");
    let text = std::fs::read_to_string(dir.join("seed-lvs-pvs.json")).unwrap();
    let lvs = ember_drivers::lvm::report::parse_lvs(&text).unwrap();
    let pvs = ember_drivers::lvm::report::parse_pvs(&text).unwrap();
    let geo = ember_drivers::lvm::layout::Geometry::of_vg("testvg", pvs).unwrap();
    for lv in &lvs {
        ember_drivers::lvm::layout::lv_spans(lv, &geo).unwrap();
    }
    assert_eq!(lvs.len(), 3);
}

/// The real config seeds must parse: the corpus is not all rejects.
#[test]
fn config_seeds_are_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config_parse");
    for seed in ["seed-file.toml", "seed-lvm.toml", "seed-two.toml"] {
        let text = std::fs::read_to_string(dir.join(seed)).unwrap();
        ember_drivers::Config::parse(&text).unwrap_or_else(|e| panic!("{seed}: {e}"));
    }
    let bad = std::fs::read_to_string(dir.join("seed-bad.toml")).unwrap();
    assert!(ember_drivers::Config::parse(&bad).is_err());
}
