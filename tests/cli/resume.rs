//! Crash-safe, resumable copies: `--checkpoint` / `--resume` survive kill -9 and SIGINT.

use crate::util::*;
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[test]
fn copy_survives_repeated_kill_9_and_ends_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sparse_file(&src, 160 << 20, 400, 77);
    // Plus a dense region so there is real data to interrupt.
    fill_pattern(&src, 16 << 20, 48 << 20, 0x3C);
    let dst = dir.path().join("dst");
    let cp = dir.path().join("copy.ckp");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(2026);
    let mut kills = 0;
    let mut finished = false;
    for _ in 0..40 {
        let mut child = ember()
            .args([
                "copy",
                s(&src),
                s(&dst),
                "--checkpoint",
                s(&cp),
                "--checkpoint-interval",
                "50",
                "--bps-limit",
                "24M",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..900)));
        if child.try_wait().unwrap().is_some_and(|st| st.success()) {
            finished = true;
            break;
        }
        let _ = child.kill(); // SIGKILL
        if child.wait().unwrap().success() {
            // It finished between the poll and the kill.
            finished = true;
            break;
        }
        kills += 1;
        assert!(
            cp.exists(),
            "an interrupted copy keeps its checkpoint (incomplete marker)"
        );
    }
    if !finished {
        ok(&["copy", s(&src), s(&dst), "--resume", s(&cp)]);
    }
    assert!(
        kills >= 3,
        "the test must really interrupt the copy ({kills} kills)"
    );
    assert!(!cp.exists(), "a complete copy removes its checkpoint");
    assert!(cmp(&src, &dst), "resumed copy differs after {kills} kills");
    assert!(allocated(&dst) <= allocated(&src));
}

#[test]
fn sigint_saves_the_checkpoint_and_says_how_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, vec![7u8; 48 << 20]).unwrap();
    let dst = dir.path().join("dst");
    let cp = dir.path().join("c.ckp");
    let child = ember()
        .args([
            "copy",
            s(&src),
            s(&dst),
            "--checkpoint",
            s(&cp),
            "--bps-limit",
            "16M",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: kill(2) on our own child's pid with SIGINT.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cancelled after") && err.contains("--resume"),
        "{err}"
    );
    assert!(cp.exists() && dst.exists(), "kept for resuming");
    ok(&["copy", s(&src), s(&dst), "--resume", s(&cp)]);
    assert!(cmp(&src, &dst));
}

#[test]
fn a_checkpoint_for_another_copy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::write(&a, vec![1u8; 4 << 20]).unwrap();
    std::fs::write(&b, vec![2u8; 4 << 20]).unwrap();
    let cp = dir.path().join("c.ckp");
    // A checkpoint left by an interrupted copy a -> x.
    let x = dir.path().join("x");
    let child = ember()
        .args([
            "copy",
            s(&a),
            s(&x),
            "--checkpoint",
            s(&cp),
            "--bps-limit",
            "1M",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait_with_output();
    assert!(cp.exists());
    // Refused before any write: the destination and the checkpoint are left as they are.
    let (x0, cp0) = (std::fs::read(&x).ok(), std::fs::read(&cp).unwrap());
    let e = fails(&["copy", s(&b), s(&x), "--resume", s(&cp)]);
    assert!(e.contains("another copy"), "{e}");
    assert!(
        std::fs::read(&x).ok() == x0,
        "the refused resume wrote to the destination"
    );
    assert!(std::fs::read(&cp).unwrap() == cp0, "the checkpoint changed");
    let e = fails(&[
        "copy",
        s(&a),
        s(&x),
        "--resume",
        s(&dir.path().join("none.ckp")),
    ]);
    assert!(e.contains("does not exist"), "{e}");
    assert!(std::fs::read(&x).ok() == x0);
    std::fs::write(&cp, b"garbage").unwrap();
    let e = fails(&["copy", s(&a), s(&x), "--resume", s(&cp)]);
    assert!(e.contains("unusable"), "{e}");
    assert!(
        std::fs::read(&x).ok() == x0,
        "the refused resume wrote to the destination"
    );
}
