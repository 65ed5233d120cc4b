//! Replays every checked-in fuzz corpus input of `tgt_show` and `target_strings` through the
//! harness (`ember_target::fuzz_harness`), so that a normal `cargo test` re-checks what the
//! fuzzer found.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    ember_engine::test_util::replay_corpus(target, f);
}

#[test]
fn replay_tgt_show_corpus() {
    replay("tgt_show", ember_target::fuzz_harness::tgt_show);
}

#[test]
fn replay_target_strings_corpus() {
    replay("target_strings", ember_target::fuzz_harness::target_strings);
}

/// The captured tgt output and the seeds parse: the corpus is not all rejects.
#[test]
fn seeds_are_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for seed in ["seed-show-acls", "seed-show-sessions"] {
        let text = std::fs::read_to_string(dir.join("tgt_show").join(seed)).unwrap();
        assert!(!ember_target::tgt::parse_show_targets(&text)
            .unwrap()
            .is_empty());
    }
    let conf = std::fs::read_to_string(dir.join("tgt_show/seed-conf")).unwrap();
    ember_target::tgt::TgtConf::parse(&conf).unwrap();
    let ledger = std::fs::read_to_string(dir.join("tgt_show/seed-ledger")).unwrap();
    assert_eq!(ember_target::tgt::parse_ledger(&ledger).unwrap().len(), 2);
    let loc = std::fs::read(dir.join("target_strings/seed-location")).unwrap();
    ember_target::parse_provider_location(std::str::from_utf8(&loc[1..]).unwrap()).unwrap();
    let auth = std::fs::read(dir.join("target_strings/seed-auth")).unwrap();
    assert!(
        ember_target::parse_provider_auth(std::str::from_utf8(&auth[1..]).unwrap())
            .unwrap()
            .is_some()
    );
    // A connector whose initiator carries a newline is read, but refused as an initiator name.
    let c = std::fs::read(dir.join("target_strings/seed-connector-newline")).unwrap();
    let c: ember_target::Connector = serde_json::from_slice(&c[1..]).unwrap();
    assert!(ember_target::iqn::validate_initiator_name(c.initiator.as_deref().unwrap()).is_err());
}
