//! Properties of the SEEK_DATA/SEEK_HOLE walk under odd filesystem answers: data beyond EOF,
//! holes before data, zero-length runs, going backwards, overlaps, errors on the nth call.
//! The checks live in `ember_engine::fuzz_harness::alloc::check_script` (shared with the
//! `alloc_seek` fuzz target); the explicit cases below pin the expected outcome of each class.

use ember_engine::alloc::walk;
use ember_engine::extent::ExtentMap;
use ember_engine::fuzz_harness::alloc::{check_script, Answer, ScriptSeeker};
use proptest::prelude::*;
use std::path::Path;

use Answer::*;

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        2 => Just(Enxio),
        1 => prop::sample::select(vec![
            libc::EINVAL,
            libc::EOPNOTSUPP,
            libc::EIO,
            libc::ENXIO,
            libc::EINTR
        ])
        .prop_map(Errno),
        2 => Just(Same),
        6 => (1u64..1 << 20).prop_map(Ahead),
        2 => any::<u64>().prop_map(Ahead),
        2 => (0u64..1 << 20).prop_map(Behind),
        2 => (0u64..1 << 20).prop_map(PastEnd),
        1 => any::<u64>().prop_map(Abs),
        1 => (0u64..4096).prop_map(|n| Abs(u64::MAX - n)),
    ]
}

fn window() -> impl Strategy<Value = std::ops::Range<u64>> {
    prop_oneof![
        (0u64..1 << 30, 0u64..1 << 30).prop_map(|(s, l)| s..s + l),
        (0u64..4096).prop_map(|l| u64::MAX - l..u64::MAX),
        any::<(u64, u64)>().prop_map(|(a, b)| a.min(b)..a.max(b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn walk_is_sound_for_any_answers(w in window(), script in prop::collection::vec(answer(), 0..40)) {
        let _ = check_script(w, &script);
    }

    /// Only well-formed answers (data ahead, hole after it): the walk must succeed.
    #[test]
    fn well_formed_answers_always_succeed(
        w in window(),
        steps in prop::collection::vec((0u64..1 << 20, 1u64..1 << 20), 0..20),
    ) {
        let mut script = Vec::new();
        for (gap, len) in steps {
            script.push(Ahead(gap));
            script.push(Ahead(len));
        }
        prop_assert!(check_script(w, &script).is_ok());
    }
}

/// The map holding exactly `r`.
fn one(r: std::ops::Range<u64>) -> ExtentMap {
    ExtentMap::from_ranges(std::iter::once(r))
}

fn run(window: std::ops::Range<u64>, script: &[Answer]) -> ember_engine::Result<ExtentMap> {
    check_script(window, script)
}

#[test]
fn data_beyond_eof_is_clipped_or_ends_the_walk() {
    // Data at the window's end or beyond: no data in the window.
    assert!(run(0..1000, &[PastEnd(0)]).unwrap().is_empty());
    assert!(run(0..1000, &[PastEnd(5000)]).unwrap().is_empty());
    // A hole beyond EOF: the run is clipped to the window.
    let m = run(0..1000, &[Ahead(100), PastEnd(1 << 40)]).unwrap();
    assert_eq!(m, one(100..1000));
    // Data before the window's start (a seek at the start can't, but a filesystem could).
    let m = run(500..1000, &[Same, Ahead(100)]).unwrap();
    assert_eq!(m, one(500..600));
}

#[test]
fn hole_before_or_at_data_is_an_error() {
    assert!(run(0..1000, &[Ahead(10), Behind(1)]).is_err());
    // Zero-length data run.
    assert!(run(0..1000, &[Ahead(10), Same]).is_err());
}

#[test]
fn data_going_backwards_is_an_error_not_a_loop() {
    // Second SEEK_DATA answers before the previous hole: would re-walk (overlap) forever.
    assert!(run(0..1000, &[Ahead(10), Ahead(10), Behind(15)]).is_err());
    assert!(run(0..1000, &[Ahead(10), Ahead(10), Abs(0)]).is_err());
}

#[test]
fn errors_fail_except_unsupported_on_the_first_call() {
    assert_eq!(run(0..1000, &[Errno(libc::EINVAL)]).unwrap(), one(0..1000));
    assert_eq!(
        run(0..1000, &[Errno(libc::EOPNOTSUPP)]).unwrap(),
        one(0..1000)
    );
    assert!(run(0..1000, &[Errno(libc::EIO)]).is_err());
    // EINVAL later is a real error, never "all holes" nor "all data".
    assert!(run(0..1000, &[Ahead(0), Ahead(10), Errno(libc::EINVAL)]).is_err());
    // SEEK_HOLE errors always fail, even right after the first SEEK_DATA.
    assert!(run(0..1000, &[Same, Errno(libc::EOPNOTSUPP)]).is_err());
    for n in 0..8 {
        let mut script: Vec<Answer> = (0..8).map(|_| Ahead(10)).collect();
        script.insert(n, Errno(libc::EIO));
        assert!(run(0..1_000_000, &script).is_err(), "EIO at call {n}");
    }
}

#[test]
fn vanished_hole_means_data_to_the_window_end() {
    let m = run(0..1000, &[Ahead(10), Enxio]).unwrap();
    assert_eq!(m, one(10..1000));
}

#[test]
fn many_small_runs_terminate() {
    // 1-byte runs over a 10 000-byte window: 20 000 calls, each advancing.
    let script: Vec<Answer> = (0..20_000).map(|_| Ahead(1)).collect();
    let mut s = ScriptSeeker::new(1..10_001, script);
    let m = walk(&mut s, Path::new("x"), 1..10_001).unwrap();
    assert!(s.log.len() <= 20_001);
    m.check_invariants().unwrap();
}
