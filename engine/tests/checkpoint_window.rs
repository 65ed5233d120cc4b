//! Resumable copies of byte windows (what the drivers use for an LV's extents on a PV).

use ember_engine::copy::{Destination, Job, Source};
use ember_engine::endpoint::Window;
use ember_engine::options::{Checkpoint, CopyOptions, Summary};
use ember_engine::tuning::Tune;

fn copy_window(s: &Window, d: &Window, opts: &CopyOptions) -> ember_engine::Result<Summary> {
    Job::new(Source::Path(s.clone()), Destination::Path(d.clone()), opts).run()
}
use ember_engine::ErrorKind;
use rand::{RngCore, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1 << 20;

#[test]
fn an_interrupted_window_copy_resumes_to_the_exact_bytes_and_touches_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("pv-a");
    let dst = dir.path().join("pv-b");
    let mut data = vec![0u8; (40 * MIB) as usize];
    rand::rngs::SmallRng::seed_from_u64(5).fill_bytes(&mut data);
    // A hole inside the source window: must read back as zeros over the old data.
    data[(10 * MIB) as usize..(12 * MIB) as usize].fill(0);
    std::fs::write(&src, &data).unwrap();
    std::fs::write(&dst, vec![0xEEu8; (48 * MIB) as usize]).unwrap();
    let (sw, dw) = (
        Window::range(&src, MIB, 32 * MIB),
        Window::range(&dst, 6 * MIB, 32 * MIB),
    );
    let cp = Checkpoint {
        path: dir.path().join("w.ckp"),
        interval: Duration::from_millis(1),
    };

    // First attempt: cancelled once half is done.
    let cancel = Arc::new(AtomicBool::new(false));
    let c2 = cancel.clone();
    let opts = CopyOptions {
        block_size: MIB as usize,
        queue_depth: 2,
        // As given: the cancel lands between blocks of this size.
        tune: Tune::PINNED,
        cancel: Some(cancel),
        progress: Some(Arc::new(move |done, total| {
            if done * 2 >= total {
                c2.store(true, Ordering::Relaxed);
            }
        })),
        checkpoint: Some(cp.clone()),
        ..CopyOptions::default()
    };
    let e = copy_window(&sw, &dw, &opts).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(cp.path.exists(), "checkpoint kept for resuming");

    // Resume: completes, removes the checkpoint.
    let opts = CopyOptions {
        block_size: MIB as usize,
        checkpoint: Some(cp.clone()),
        ..CopyOptions::default()
    };
    let s = copy_window(&sw, &dw, &opts).unwrap();
    assert!(
        s.bytes_skipped >= 8 * MIB,
        "done chunks were skipped: {s:?}"
    );
    assert!(!cp.path.exists());
    let out = std::fs::read(&dst).unwrap();
    assert_eq!(
        &out[(6 * MIB) as usize..(38 * MIB) as usize],
        &data[MIB as usize..(33 * MIB) as usize]
    );
    assert!(
        out[..(6 * MIB) as usize].iter().all(|b| *b == 0xEE),
        "before the window"
    );
    assert!(
        out[(38 * MIB) as usize..].iter().all(|b| *b == 0xEE),
        "after the window"
    );

    // A checkpoint for another window is refused.
    let cp2 = Checkpoint {
        path: dir.path().join("w2.ckp"),
        interval: Duration::from_millis(1),
    };
    let cancel = Arc::new(AtomicBool::new(true));
    let opts = CopyOptions {
        cancel: Some(cancel),
        checkpoint: Some(cp2.clone()),
        ..CopyOptions::default()
    };
    assert!(copy_window(&sw, &dw, &opts).is_err());
    let other = Window::range(&dst, 7 * MIB, 32 * MIB);
    let opts = CopyOptions {
        checkpoint: Some(cp2),
        ..CopyOptions::default()
    };
    let e = copy_window(&sw, &other, &opts).unwrap_err();
    assert!(e.to_string().contains("another copy"), "{e}");
}
