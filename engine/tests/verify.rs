//! End-to-end verification (`CopyOptions::verify`) catches what a plain successful copy hides:
//! misdirected writes. Test data stamps every 4 KiB block with its offset and a generation (as
//! fio's verify headers do), so an independent reader can tell a misplaced block from a right
//! one, not only flipped bits.

use ember_engine::copy;
use ember_engine::options::CopyOptions;
use ember_engine::tuning::Tune;
use ember_engine::uring::faulty::{Action, Faults, OpMatch, Rule};
use ember_engine::ErrorKind;
use std::path::Path;
use std::sync::Arc;

const BLOCK: usize = 4096;
const GENERATION: u64 = 7;

/// `size` bytes where every 4 KiB block starts with (offset, generation) and is filled with a
/// byte derived from both.
fn stamped(path: &Path, size: usize) {
    let mut data = vec![0u8; size];
    for (i, b) in data.chunks_mut(BLOCK).enumerate() {
        let off = (i * BLOCK) as u64;
        b.fill((off / BLOCK as u64 % 251) as u8 + 1);
        b[..8].copy_from_slice(&off.to_le_bytes());
        b[8..16].copy_from_slice(&GENERATION.to_le_bytes());
    }
    std::fs::write(path, data).unwrap();
}

/// The first block whose stamp does not name its own offset and generation.
fn first_misplaced(path: &Path) -> Option<u64> {
    let data = std::fs::read(path).unwrap();
    data.chunks(BLOCK).enumerate().find_map(|(i, b)| {
        let off = (i * BLOCK) as u64;
        let ok = u64::from_le_bytes(b[..8].try_into().unwrap()) == off
            && u64::from_le_bytes(b[8..16].try_into().unwrap()) == GENERATION;
        (!ok).then_some(off)
    })
}

/// Small blocks at a shallow depth, as given (the fault is placed by write).
fn opts(faults: Option<&Arc<Faults>>, verify: bool) -> CopyOptions {
    CopyOptions {
        block_size: 64 << 10,
        queue_depth: 4,
        tune: Tune {
            block_size: false,
            ..Tune::default()
        },
        verify,
        io_hook: faults.map(|f| f.hook()),
        ..CopyOptions::default()
    }
}

#[test]
fn verify_passes_a_good_copy_and_reads_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    stamped(&src, 4 << 20);
    let s = copy::copy(&src, &dst, &opts(None, true)).unwrap();
    assert_eq!(s.verified_bytes, Some(4 << 20));
    assert_eq!(first_misplaced(&dst), None);
}

#[test]
fn a_misdirected_write_goes_unseen_without_verify_and_fails_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    stamped(&src, 4 << 20);
    // The 5th write lands 64 KiB early.
    let rule = || {
        Rule::new(OpMatch::Write, Action::Misdirect(-(64 << 10)))
            .nth(5)
            .times(1)
    };

    let plain = dir.path().join("plain");
    let faults = Faults::new(vec![rule()]);
    copy::copy(&src, &plain, &opts(Some(&faults), false)).expect("the copy itself reports success");
    assert!(
        first_misplaced(&plain).is_some(),
        "the stamps show the damage"
    );

    let checked = dir.path().join("checked");
    let faults = Faults::new(vec![rule()]);
    let e = copy::copy(&src, &checked, &opts(Some(&faults), true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::VerifyFailed, "{e}");
    assert!(e.to_string().contains("checked"), "{e}");
    assert!(
        !checked.exists(),
        "a copy that failed verification is not left looking complete"
    );
}
