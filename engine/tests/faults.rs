//! In-process fault injection: copy, wipe, image plans and compare run on a real io_uring
//! backend wrapped in `uring::faulty::FaultyBackend` (through the `io_hook` option), and must
//! turn every injected fault into either a correct result or a clear error, never into a
//! silent wrong result.

use ember_engine::copy::{self, Destination, Job, Source};
use ember_engine::options::CopyOptions;
use ember_engine::plan::{Op, Plan};
use ember_engine::tuning::Tune;
use ember_engine::uring::faulty::{Action, Faults, OpMatch, Rule};
use ember_engine::verify;
use ember_engine::wipe::{self, Verify, WipeMethod, WipeOptions};
use ember_engine::{Error, ErrorKind};
use rand::{RngCore, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const BS: usize = 64 << 10;

/// A source of `size` random bytes (seeded) and the path of a not-yet-existing destination.
fn setup(dir: &Path, size: u64, seed: u64) -> (PathBuf, PathBuf) {
    let src = dir.join("src.img");
    let mut data = vec![0u8; size as usize];
    rand::rngs::SmallRng::seed_from_u64(seed).fill_bytes(&mut data);
    std::fs::write(&src, &data).unwrap();
    (src, dir.join("dst.img"))
}

/// An image plan over `src` (opened here) into `dst`.
fn run_plan(src: &Path, plan: &Plan, dst: &Path, o: &CopyOptions) -> ember_engine::Result<()> {
    let image = std::fs::File::open(src).unwrap();
    Job::new(Source::Image(image, src, plan), Destination::path(dst), o)
        .run()
        .map(drop)
}

/// Small blocks at a shallow depth, as given (the faults are placed by block).
fn opts(faults: &Arc<Faults>) -> CopyOptions {
    CopyOptions {
        block_size: BS,
        queue_depth: 4,
        tune: Tune {
            block_size: false,
            ..Tune::default()
        },
        io_hook: Some(faults.hook()),
        io_timeout: Duration::from_secs(1),
        ..CopyOptions::default()
    }
}

fn same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(x.len(), y.len(), "sizes differ");
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at {i}", a.display(), b.display());
    }
}

/// The `Error::Io` fields, or a panic naming what came instead.
fn io_fields(e: &Error) -> (&'static str, PathBuf, u64, Option<i32>) {
    match e {
        Error::Io {
            op,
            path,
            offset,
            source,
        } => (op, path.clone(), *offset, source.raw_os_error()),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn short_reads_and_writes_still_copy_byte_identical() {
    // Buffered: short transfers of any length, the remainder resubmitted where it stopped.
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 4 * MIB, 1);
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Read, Action::Short(1000)).times(40),
        Rule::new(OpMatch::Write, Action::Short(4096 + 7)).times(40),
        Rule::new(OpMatch::Read, Action::Short(1)).nth(50).times(5),
    ]);
    let o = CopyOptions {
        direct: false,
        ..opts(&faults)
    };
    let s = copy::copy(&src, &dst, &o).unwrap();
    assert_eq!(s.bytes_written, 4 * MIB);
    assert_eq!(faults.stats().shortened, 85, "{:?}", faults.stats());
    same_bytes(&src, &dst);
}

#[test]
fn short_direct_transfers_still_copy_byte_identical() {
    // O_DIRECT: a device's short transfer is whole sectors; the aligned remainder goes on
    // through O_DIRECT.
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 4 * MIB, 19);
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Read, Action::Short(3 * 4096)).times(30),
        Rule::new(OpMatch::Write, Action::Short(4096)).times(30),
    ]);
    let s = copy::copy(&src, &dst, &opts(&faults)).unwrap();
    assert_eq!(s.bytes_written, 4 * MIB);
    assert_eq!(faults.stats().shortened, 60, "{:?}", faults.stats());
    same_bytes(&src, &dst);
}

#[test]
fn eagain_three_times_is_retried_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 2 * MIB, 2);
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Read, Action::Fail(libc::EAGAIN))
            .at(MIB)
            .times(3),
        Rule::new(OpMatch::Write, Action::Fail(libc::EINTR))
            .nth(5)
            .times(3),
    ]);
    copy::copy(&src, &dst, &opts(&faults)).unwrap();
    assert_eq!(faults.stats().failed, 6);
    same_bytes(&src, &dst);
}

#[test]
fn eagain_forever_fails_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 2 * MIB, 3);
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Read, Action::Fail(libc::EAGAIN)).at(MIB + 100)
    ]);
    let e = copy::copy(&src, &dst, &opts(&faults)).unwrap_err();
    let (op, path, offset, errno) = io_fields(&e);
    assert_eq!(
        (op, path, offset, errno),
        ("read", src, MIB, Some(libc::EAGAIN))
    );
    // First try plus 16 retries, then give up.
    assert_eq!(faults.stats().failed, 17);
    assert!(
        !dst.exists(),
        "a failed copy must not leave its destination"
    );
}

#[test]
fn eio_on_read_names_read_path_offset_and_removes_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 4 * MIB, 4);
    let bad = 3 * MIB + 12345;
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Read, Action::Fail(libc::EIO)).at(bad)
    ]);
    let e = copy::copy(&src, &dst, &opts(&faults)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    let block = bad / BS as u64 * BS as u64;
    let (op, path, offset, errno) = io_fields(&e);
    assert_eq!(
        (op, &path, offset, errno),
        ("read", &src, block, Some(libc::EIO))
    );
    let msg = e.to_string();
    assert!(
        msg.contains("read")
            && msg.contains(src.to_str().unwrap())
            && msg.contains(&block.to_string()),
        "{msg}"
    );
    assert!(!dst.exists(), "partial copy left at {}", dst.display());
}

#[test]
fn eio_on_read_into_existing_file_with_force_fails() {
    // An existing destination is not ours to delete; the copy must still fail loudly.
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 2 * MIB, 5);
    std::fs::write(&dst, b"old contents").unwrap();
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Read, Action::Fail(libc::EIO)).nth(7)
    ]);
    let o = CopyOptions {
        force: true,
        ..opts(&faults)
    };
    let e = copy::copy(&src, &dst, &o).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(io_fields(&e).0, "read");
    assert!(dst.exists(), "an existing destination is not deleted");
}

#[test]
fn eio_on_a_read_started_before_the_holes_are_punched_fails_the_copy() {
    // A window of an existing file is a destination whose holes are punched before any write,
    // with the first reads already in flight: a read failing among them fails the copy, and
    // the file around the window is left as it was.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sparse.img");
    let mut data = vec![0u8; (4 * MIB) as usize];
    rand::rngs::SmallRng::seed_from_u64(12).fill_bytes(&mut data[..MIB as usize]);
    rand::rngs::SmallRng::seed_from_u64(13).fill_bytes(&mut data[(3 * MIB) as usize..]);
    std::fs::write(&src, &data).unwrap();
    // Holes for the discovery to find, between the two data megabytes.
    let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    ember_engine::sys::punch_hole(std::os::fd::AsFd::as_fd(&f), MIB, 2 * MIB).unwrap();
    drop(f);
    let vol = dir.path().join("vol.img");
    std::fs::write(&vol, vec![0xA5u8; (6 * MIB) as usize]).unwrap();
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Read, Action::Fail(libc::EIO)).nth(2)
    ]);
    let o = opts(&faults);
    let window = || {
        Destination::Path(ember_engine::endpoint::Window {
            path: vol.clone(),
            offset: MIB,
            len: Some(4 * MIB),
        })
    };
    let e = Job::new(Source::path(&src), window(), &o)
        .run()
        .unwrap_err();
    assert_eq!(io_fields(&e).0, "read", "{e}");
    assert_eq!(io_fields(&e).3, Some(libc::EIO));
    let got = std::fs::read(&vol).unwrap();
    assert_eq!(got.len(), (6 * MIB) as usize, "the file keeps its size");
    assert!(got[..MIB as usize].iter().all(|b| *b == 0xA5), "head kept");
    assert!(
        got[(5 * MIB) as usize..].iter().all(|b| *b == 0xA5),
        "tail kept"
    );
    // The same copy without the fault: the window holds the source, holes read as zeros.
    let o = CopyOptions {
        io_hook: None,
        ..opts(&faults)
    };
    let s = Job::new(Source::path(&src), window(), &o).run().unwrap();
    assert_eq!(s.zero_modes, vec![ember_engine::zeroing::ZeroMode::Punch]);
    let got = std::fs::read(&vol).unwrap();
    assert!(
        got[(MIB as usize)..(5 * MIB) as usize] == data[..],
        "window holds the source"
    );
    assert!(got[..MIB as usize].iter().all(|b| *b == 0xA5), "head kept");
    assert!(
        got[(5 * MIB) as usize..].iter().all(|b| *b == 0xA5),
        "tail kept"
    );
}

#[test]
fn enospc_on_write_is_no_space_naming_the_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 4 * MIB, 6);
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Write, Action::Fail(libc::ENOSPC)).nth(10)
    ]);
    let e = copy::copy(&src, &dst, &opts(&faults)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
    let (op, path, offset, _) = io_fields(&e);
    assert_eq!((op, &path), ("write", &dst));
    assert_eq!(offset % BS as u64, 0);
    assert!(e.to_string().contains(dst.to_str().unwrap()));
    assert!(!dst.exists());
}

#[test]
fn ecanceled_write_fails_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 2 * MIB, 7);
    let faults = Faults::new(vec![Rule::new(
        OpMatch::Write,
        Action::Fail(libc::ECANCELED),
    )
    .at(MIB)]);
    let e = copy::copy(&src, &dst, &opts(&faults)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert_eq!(
        io_fields(&e),
        ("write", dst.clone(), MIB, Some(libc::ECANCELED))
    );
    assert!(!dst.exists());
}

#[test]
fn zero_byte_read_before_the_end_is_an_error_not_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 2 * MIB, 8);
    let faults = Faults::new(vec![Rule::new(OpMatch::Read, Action::Short(0)).at(MIB)]);
    let e = copy::copy(&src, &dst, &opts(&faults)).unwrap_err();
    let (op, path, offset, _) = io_fields(&e);
    assert_eq!((op, path, offset), ("read", src, MIB));
    match &e {
        Error::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof, "{e:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!dst.exists());
}

#[test]
fn hung_read_times_out_within_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 4 * MIB, 9);
    let faults = Faults::new(vec![Rule::new(OpMatch::Read, Action::Hang).at(2 * MIB)]);
    let t = Instant::now();
    let e = copy::copy(&src, &dst, &opts(&faults)).unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e:?}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    match &e {
        Error::TimedOut {
            op, path, offset, ..
        } => assert_eq!((*op, path, *offset), ("read", &src, 2 * MIB)),
        other => panic!("{other:?}"),
    }
    assert_eq!(faults.stats().hung, 1);
    assert!(!dst.exists());
}

#[test]
fn hung_write_times_out_within_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 2 * MIB, 10);
    let faults = Faults::new(vec![Rule::new(OpMatch::Write, Action::Hang).nth(3)]);
    let t = Instant::now();
    let e = copy::copy(&src, &dst, &opts(&faults)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(e.to_string().contains(dst.to_str().unwrap()), "{e}");
    match &e {
        Error::TimedOut {
            op, path, offset, ..
        } => {
            assert_eq!((*op, path), ("write", &dst));
            assert!(*offset % BS as u64 == 0 && *offset < 2 * MIB, "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!dst.exists());
}

#[test]
fn flipped_byte_on_read_is_copied_and_only_compare_finds_it() {
    // A device that returns wrong data without an error cannot be noticed by the copy itself:
    // this documents why verification (compare / --verify) matters.
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 4 * MIB, 11);
    let bad = MIB + 777;
    let faults = Faults::new(vec![Rule::new(OpMatch::Read, Action::Corrupt)
        .at(bad)
        .times(1)]);
    copy::copy(&src, &dst, &opts(&faults)).expect("the copy cannot see silent corruption");
    assert_eq!(faults.stats().corrupted, 1);
    // Independent of the engine: std reads see the one flipped byte, and compare reports it.
    assert_eq!(
        ember_engine::test_util::first_difference(&src, &dst),
        Some(bad)
    );
    let (s, d) = (std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    let differing = s.iter().zip(&d).filter(|(x, y)| x != y).count();
    assert_eq!(differing, 1, "exactly one byte was flipped");
    let c = verify::compare(&src, &dst).unwrap();
    assert!(!c.identical);
    assert_eq!(c.first_difference, Some(bad));
}

#[test]
fn hung_read_during_compare_times_out() {
    // Exercises the scan loop (compare, wipe verification): before the fix it waited forever.
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = setup(dir.path(), 2 * MIB, 12);
    let b = dir.path().join("b.img");
    std::fs::copy(&a, &b).unwrap();
    let faults = Faults::new(vec![Rule::new(OpMatch::Read, Action::Hang).nth(4)]);
    let t = Instant::now();
    let e = verify::compare_with(&a, &b, &opts(&faults)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn eio_during_compare_is_an_error_not_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = setup(dir.path(), 2 * MIB, 13);
    let b = dir.path().join("b.img");
    std::fs::copy(&a, &b).unwrap();
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Read, Action::Fail(libc::EIO)).at(MIB)
    ]);
    let e = verify::compare_with(&a, &b, &opts(&faults)).unwrap_err();
    assert_eq!(io_fields(&e).0, "read");
    assert_eq!(io_fields(&e).2, MIB);
}

fn wipe_opts(faults: &Arc<Faults>) -> WipeOptions {
    WipeOptions {
        method: WipeMethod::Write,
        block_size: BS,
        queue_depth: 4,
        tune: Tune {
            block_size: false,
            ..Tune::default()
        },
        io_hook: Some(faults.hook()),
        io_timeout: Duration::from_secs(1),
        ..WipeOptions::default()
    }
}

#[test]
fn failed_wipe_write_is_an_error_never_ok() {
    let dir = tempfile::tempdir().unwrap();
    let (target, _) = setup(dir.path(), 4 * MIB, 14);
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Write, Action::Fail(libc::EIO)).at(3 * MIB)
    ]);
    let e = wipe::wipe(&target, &wipe_opts(&faults)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    let (op, path, offset, _) = io_fields(&e);
    assert_eq!((op, &path, offset), ("write zeros", &target, 3 * MIB));
    // The range that failed still holds its old data: the caller must not call it wiped.
    let data = std::fs::read(&target).unwrap();
    assert!(data[3 * MIB as usize..3 * MIB as usize + BS]
        .iter()
        .any(|b| *b != 0));
}

#[test]
fn wipe_survives_short_writes_and_eagain() {
    let dir = tempfile::tempdir().unwrap();
    let (target, _) = setup(dir.path(), 4 * MIB, 15);
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Write, Action::Short(4096)).times(20),
        Rule::new(OpMatch::Write, Action::Fail(libc::EAGAIN))
            .nth(30)
            .times(3),
    ]);
    let s = wipe::wipe(
        &target,
        &WipeOptions {
            verify: Verify::Full,
            ..wipe_opts(&faults)
        },
    )
    .unwrap();
    assert_eq!(s.bytes_zeroed, 4 * MIB);
    assert!(std::fs::read(&target).unwrap().iter().all(|b| *b == 0));
    let st = faults.stats();
    assert_eq!((st.shortened, st.failed), (20, 3));
}

#[test]
fn wipe_enospc_and_hang_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (target, _) = setup(dir.path(), 2 * MIB, 16);
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Write, Action::Fail(libc::ENOSPC)).nth(2)
    ]);
    let e = wipe::wipe(&target, &wipe_opts(&faults)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);

    let faults = Faults::new(vec![Rule::new(OpMatch::Write, Action::Hang).nth(2)]);
    let t = Instant::now();
    let e = wipe::wipe(&target, &wipe_opts(&faults)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn wipe_verification_catches_data_that_reads_back_non_zero() {
    // The writes "succeed" but the device hands back a non-zero byte: verify must fail.
    let dir = tempfile::tempdir().unwrap();
    let (target, _) = setup(dir.path(), 2 * MIB, 17);
    let faults = Faults::new(vec![Rule::new(OpMatch::Read, Action::Corrupt)
        .at(MIB + 5)
        .times(1)]);
    let e = wipe::wipe(
        &target,
        &WipeOptions {
            verify: Verify::Full,
            ..wipe_opts(&faults)
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::VerifyFailed, "{e:?}");
    assert!(e.to_string().contains(&(MIB + 5).to_string()), "{e}");
}

#[test]
fn image_plan_read_error_fails_and_removes_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = setup(dir.path(), 2 * MIB, 18);
    // An "image" whose clusters are stored in reverse order.
    let half = MIB;
    let plan = Plan {
        logical_size: 3 * MIB,
        dst_base: 0,
        ops: vec![
            Op::Copy {
                src: half,
                dst: 0,
                len: half,
            },
            Op::Copy {
                src: 0,
                dst: 2 * MIB,
                len: half,
            },
        ],
        unit: 0,
    };
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Read, Action::Fail(libc::EIO)).at(100)
    ]);
    let e = run_plan(&src, &plan, &dst, &opts(&faults)).unwrap_err();
    assert_eq!(io_fields(&e), ("read", src.clone(), 0, Some(libc::EIO)));
    assert!(!dst.exists());

    // The same plan with only short reads and EAGAIN completes correctly.
    let faults = Faults::new(vec![
        Rule::new(OpMatch::Read, Action::Short(8192)).times(10),
        Rule::new(OpMatch::Any, Action::Fail(libc::EAGAIN))
            .nth(4)
            .times(2),
    ]);
    run_plan(&src, &plan, &dst, &opts(&faults)).unwrap();
    let (s, d) = (std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    assert_eq!(d.len() as u64, 3 * MIB);
    assert!(d[..MIB as usize] == s[MIB as usize..]);
    assert!(d[MIB as usize..2 * MIB as usize].iter().all(|b| *b == 0));
    assert!(d[2 * MIB as usize..] == s[..MIB as usize]);
}
