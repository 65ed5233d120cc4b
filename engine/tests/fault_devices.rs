//! Real failing kernel devices (root): a too-small ext4 on a loop device (ENOSPC), a loop
//! device over a sparse file on that full filesystem (a thin pool running out), and a block
//! device that returns EIO on demand (nbdkit's error filter, exported as a file by nbdfuse and
//! attached with `losetup --direct-io=on`; the recipe of
//! /work/shared/reference/faults-and-hostile-inputs.md, Part A).
//!
//! Skipped without root or the tools, unless EMBER_REQUIRE_SYSTEM_TESTS=1 (then they fail).
//! Every loop device, mount and process is torn down by Drop guards, also on failure.

use ember_engine::copy;
use ember_engine::options::{CopyOptions, Summary};
use ember_engine::test_util::{data_ranges, first_difference, run, unwritten_extents};
use ember_engine::wipe::{self, WipeMethod, WipeOptions};
use ember_engine::{Error, ErrorKind};
use rand::{RngCore, SeedableRng};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A loop device, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path, direct: bool) -> Loop {
        let mut args = vec!["-f", "--show"];
        if direct {
            args.push("--direct-io=on");
        }
        args.push(file.to_str().unwrap());
        Loop(PathBuf::from(run("losetup", &args)))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A mount point, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let mounted = |p: &Path| {
            std::fs::read_to_string("/proc/self/mounts")
                .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == p.to_str()))
        };
        for _ in 0..50 {
            if !mounted(&self.0) {
                return;
            }
            let _ = Command::new("umount")
                .arg(&self.0)
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(100));
        }
        // Last resort, so a failing test does not leave a mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A FUSE mount point, unmounted on drop (before its server is killed).
struct FuseMount(PathBuf);

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// A child process, killed by its PID and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn random_file(path: &Path, size: u64, seed: u64) {
    let mut f = File::create(path).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        rng.fill_bytes(&mut buf);
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
}

/// A 64 MiB ext4 on a loop device, mounted in `dir/mnt`. Fields drop in order: mount, loop.
struct SmallFs {
    mnt: PathBuf,
    _mount: Mount,
    _loop: Loop,
}

fn small_ext4(dir: &Path) -> SmallFs {
    small_ext4_with(dir, &[])
}

/// [`small_ext4`] made with `mkfs.ext4` options `extra`.
fn small_ext4_with(dir: &Path, extra: &[&str]) -> SmallFs {
    let img = dir.join("small.img");
    File::create(&img).unwrap().set_len(64 * MIB).unwrap();
    let lo = Loop::attach(&img, false);
    let mut args = vec!["-q", "-F"];
    args.extend_from_slice(extra);
    args.push(lo.0.to_str().unwrap());
    run("mkfs.ext4", &args);
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run("mount", &[lo.0.to_str().unwrap(), mnt.to_str().unwrap()]);
    SmallFs {
        _mount: Mount(mnt.clone()),
        mnt,
        _loop: lo,
    }
}

#[test]
fn copy_onto_too_small_ext4_fails_with_no_space() {
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "mkfs.ext4", "mount", "umount");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    random_file(&src, 128 * MIB, 1);
    let fs = small_ext4(dir.path());
    let dst = fs.mnt.join("dst.img");
    let e = copy::copy(&src, &dst, &CopyOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(dst.to_str().unwrap()), "{msg}");
    assert!(
        matches!(&e, Error::Io { op: "write", .. }),
        "ENOSPC must come from the write that hit it: {e:?}"
    );
    assert!(!dst.exists(), "the partial copy must be removed");
}

/// What [`copy_spread_onto_small_ext4`] saw.
struct Spread {
    summary: Summary,
    /// The copy is byte-identical.
    same: bool,
    /// The copy's data ranges, and how many of its extents are unwritten.
    ranges: Vec<(u64, u64)>,
    unwritten: usize,
    /// The source's ranges holding non-zero bytes.
    nonzero: Vec<(u64, u64)>,
}

/// Makes `path` a 1 GiB sparse file holding, at each `(offset, len, random)` of `pieces`,
/// `len` bytes of which the first `random` are random and the rest zeros; returns the ranges
/// holding non-zero bytes.
fn spread_source(path: &Path, pieces: &[(u64, usize, usize)]) -> Vec<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    let f = File::create(path).unwrap();
    f.set_len(1 << 30).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
    let mut buf = Vec::new();
    let mut nonzero = Vec::new();
    for &(off, len, random) in pieces {
        buf.clear();
        buf.resize(len, 0);
        rng.fill_bytes(&mut buf[..random]);
        f.write_all_at(&buf, off).unwrap();
        if random > 0 {
            nonzero.push((off, random as u64));
        }
    }
    f.sync_all().unwrap();
    nonzero
}

/// Copies `src` (made by [`spread_source`], which returned `nonzero`) to `dst` with `opts`,
/// which must succeed, and looks at the copy.
fn copy_spread(src: &Path, dst: &Path, opts: &CopyOptions, nonzero: Vec<(u64, u64)>) -> Spread {
    Spread {
        summary: copy::copy(src, dst, opts).unwrap(),
        same: first_difference(src, dst).is_none(),
        ranges: data_ranges(dst),
        unwritten: unwritten_extents(dst),
        nonzero,
    }
}

/// Copies a [`spread_source`] of `pieces`, each `data` bytes, onto a new file of a 64 MiB ext4
/// (about 50 MiB free) with the default options.
fn copy_spread_onto_small_ext4(pieces: &[(u64, usize)], data: usize) -> Spread {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let pieces: Vec<_> = pieces.iter().map(|&(off, r)| (off, data, r)).collect();
    let nonzero = spread_source(&src, &pieces);
    let fs = small_ext4(dir.path());
    copy_spread(
        &src,
        &fs.mnt.join("dst.img"),
        &CopyOptions::default(),
        nonzero,
    )
}

#[test]
fn far_apart_data_on_a_full_enough_ext4_is_allocated_first_and_exactly() {
    // 128 pieces of 4 KiB, one every 8 MiB: ext4 would reserve 8 MiB around each write, 1 GiB
    // on a file system with ~50 MiB free, so the rule allocates them first; every fourth piece
    // is all zeros and is given back after the writes.
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "mkfs.ext4", "mount", "umount", "filefrag");
    let pieces: Vec<_> = (0..128u64)
        .map(|i| (i * 8 * MIB, if i % 4 == 0 { 0 } else { 4096 }))
        .collect();
    let c = copy_spread_onto_small_ext4(&pieces, 4096);
    let allocated_first = c.summary.io.unwrap().allocate_first;
    assert!(allocated_first, "the rule allocates first here");
    assert!(c.same);
    assert_eq!(c.unwritten, 0, "the zero pieces were given back");
    assert_eq!(c.ranges, c.nonzero);
}

#[test]
fn data_ranges_that_do_not_fit_are_not_allocated_first_and_the_copy_still_fits() {
    // 30 ranges of 2 MiB, one every 32 MiB (60 MiB, more than the ~50 MiB free), each only
    // 512 KiB of data and then zeros: allocating them first would not fit, the copy does.
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "mkfs.ext4", "mount", "umount", "filefrag");
    let pieces: Vec<_> = (0..30u64).map(|i| (i * 32 * MIB, 512 << 10)).collect();
    let c = copy_spread_onto_small_ext4(&pieces, 2 << 20);
    let allocated_first = c.summary.io.unwrap().allocate_first;
    assert!(!allocated_first, "60 MiB cannot be allocated first");
    assert!(c.same);
    assert_eq!(c.ranges, c.nonzero);
}

#[test]
fn allocating_first_that_runs_out_of_space_midway_is_given_back_and_the_copy_fits() {
    // Allocating first pinned, onto an ext4 with no blocks kept for root (`-m 0`, so root may
    // allocate exactly what statvfs calls available): the data ranges add up to 4 KiB less than
    // that, so the check before the pass lets it start, but ~1,700 separate extents need
    // extent-tree blocks too, and fallocate fails with ENOSPC near the end of the pass.
    // Everything allocated must be given back, or the copy (which writes only each range's
    // non-zero first 4 KiB) would have no room and leave unwritten extents behind.
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "mkfs.ext4", "mount", "umount", "filefrag");
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    let fs = small_ext4_with(dir.path(), &["-m", "0"]);
    // What the engine's check before the pass sees as available.
    let (free, _) = ember_engine::sys::free_space(File::open(&fs.mnt).unwrap().as_fd()).unwrap();
    const RANGE: u64 = 32 << 10;
    let total = free - 4096;
    let pieces: Vec<_> = (0..total.div_ceil(RANGE))
        .map(|i| (i * (512 << 10), RANGE.min(total - i * RANGE) as usize, 4096))
        .collect();
    assert!(pieces.last().unwrap().0 < 1 << 30);
    let src = dir.path().join("src.img");
    let nonzero = spread_source(&src, &pieces);
    let opts = CopyOptions {
        allocate_first: true,
        ..CopyOptions::default()
    };
    let c = copy_spread(&src, &fs.mnt.join("dst.img"), &opts, nonzero);
    assert!(
        !c.summary.io.unwrap().allocate_first,
        "{total} bytes of ranges do not fit in {free} free with their extent tree"
    );
    assert!(c.same);
    assert_eq!(c.unwritten, 0, "what was allocated was given back");
    assert_eq!(c.ranges, c.nonzero);
}

#[test]
fn copy_onto_thin_loop_device_running_out_fails_with_no_space() {
    // A 256 MiB sparse file on a 64 MiB ext4, attached with direct I/O: the block device
    // accepts the size check and then runs out of space in the middle (a full thin pool).
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "mkfs.ext4", "mount", "umount");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    random_file(&src, 128 * MIB, 2);
    let fs = small_ext4(dir.path());
    let thin = fs.mnt.join("thin.img");
    File::create(&thin).unwrap().set_len(256 * MIB).unwrap();
    let lo = Loop::attach(&thin, true);
    let e = copy::copy(&src, &lo.0, &CopyOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
    assert!(e.to_string().contains(lo.0.to_str().unwrap()), "{e}");
    drop(lo);
}

/// nbdkit (error filter over a file) -> nbdfuse -> loop device with direct I/O. Errors are
/// returned for every request while `trigger` exists. Fields drop in order.
struct ErrorDevice {
    dev: PathBuf,
    trigger: PathBuf,
    _loop: Loop,
    _fuse: FuseMount,
    _nbdfuse: Proc,
    _nbdkit: Proc,
}

/// Waits until `ready()`, failing early (with its stderr) if `proc` exits first.
fn wait_ready(what: &str, proc: &mut Proc, log: &Path, mut ready: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = proc.0.try_wait() {
            let err = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} exited before it was ready ({status}): {err}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what} was not ready after 60 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Proc {
    let err = File::create(log).unwrap();
    Proc(
        cmd.stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}")),
    )
}

fn error_device(dir: &Path, size: u64) -> ErrorDevice {
    let back = dir.join("back.img");
    File::create(&back).unwrap().set_len(size).unwrap();
    let sock = dir.join("nbd.sock");
    let trigger = dir.join("inject");
    // Both servers write their pid file only once they serve: nbdkit once its socket listens
    // (the socket file alone appears at bind(), before listen()), nbdfuse once the FUSE file
    // answers. Waiting for the socket file let nbdfuse connect too early under load.
    let (kit_pid, kit_log) = (dir.join("nbdkit.pid"), dir.join("nbdkit.log"));
    let mut nbdkit = spawn_logged(
        Command::new("nbdkit")
            .arg("-f")
            .arg("-P")
            .arg(&kit_pid)
            .arg("-U")
            .arg(&sock)
            .arg("--filter=error")
            .arg("file")
            .arg(&back)
            .arg("error=EIO")
            .arg("error-rate=100%")
            .arg(format!("error-file={}", trigger.display())),
        &kit_log,
    );
    wait_ready("nbdkit", &mut nbdkit, &kit_log, || kit_pid.exists());
    let mnt = dir.join("fuse");
    std::fs::create_dir(&mnt).unwrap();
    let disk = mnt.join("disk");
    let (fuse_pid, fuse_log) = (dir.join("nbdfuse.pid"), dir.join("nbdfuse.log"));
    let mut nbdfuse = spawn_logged(
        Command::new("nbdfuse")
            .arg("-P")
            .arg(&fuse_pid)
            .arg(&disk)
            .arg("--unix")
            .arg(&sock),
        &fuse_log,
    );
    let fuse = FuseMount(mnt);
    wait_ready("nbdfuse", &mut nbdfuse, &fuse_log, || {
        fuse_pid.exists() && std::fs::metadata(&disk).is_ok_and(|m| m.len() == size)
    });
    let lo = Loop::attach(&disk, true);
    ErrorDevice {
        dev: lo.0.clone(),
        trigger,
        _loop: lo,
        _fuse: fuse,
        _nbdfuse: nbdfuse,
        _nbdkit: nbdkit,
    }
}

impl ErrorDevice {
    fn errors(&self, on: bool) {
        if on {
            File::create(&self.trigger).unwrap();
        } else {
            let _ = std::fs::remove_file(&self.trigger);
        }
    }
}

#[test]
fn copy_from_eio_device_fails_naming_device_and_offset() {
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "nbdkit", "nbdfuse", "fusermount3");
    let dir = tempfile::tempdir().unwrap();
    let d = error_device(dir.path(), 16 * MIB);
    // Fill the device with data while it is healthy.
    let data = dir.path().join("data.img");
    random_file(&data, 16 * MIB, 3);
    copy::copy(&data, &d.dev, &CopyOptions::default()).expect("healthy device");

    d.errors(true);
    let dst = dir.path().join("dst.img");
    let e = copy::copy(&d.dev, &dst, &CopyOptions::default()).unwrap_err();
    d.errors(false);
    assert_eq!(e.kind(), ErrorKind::Io, "{e:?}");
    match &e {
        Error::Io {
            op, path, offset, ..
        } => {
            assert_eq!((*op, path), ("read", &d.dev));
            assert!(*offset < 16 * MIB);
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(d.dev.to_str().unwrap()) && msg.contains("offset"),
        "{msg}"
    );
    assert!(
        !dst.exists(),
        "no partial copy (and no zeros for unreadable data) may remain"
    );

    // Once the device heals the same copy succeeds and is exact.
    copy::copy(&d.dev, &dst, &CopyOptions::default()).unwrap();
    ember_engine::test_util::assert_same_bytes(&data, &dst);
}

#[test]
fn image_from_eio_device_fails_and_leaves_no_image() {
    use ember_engine::format::convert::{volume_to_image, FromVolumeOptions};
    use ember_engine::format::Format;
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "nbdkit", "nbdfuse", "fusermount3", "qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let d = error_device(dir.path(), 16 * MIB);
    let data = dir.path().join("data.img");
    random_file(&data, 16 * MIB, 4);
    copy::copy(&data, &d.dev, &CopyOptions::default()).expect("healthy device");
    let out = dir.path().join("out.qcow2");
    let opts = |compress| FromVolumeOptions {
        format: Some(Format::Qcow2),
        compress,
        ..Default::default()
    };
    d.errors(true);
    for compress in [false, true] {
        let e = volume_to_image(&d.dev, &out, &opts(compress)).unwrap_err();
        assert!(
            matches!(&e, Error::Io { op: "read", path, .. } if path == &d.dev),
            "compress={compress}: expected a read error on the device, got {e:?}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("out.qcow2"))
            .collect();
        assert!(
            left.is_empty(),
            "no image, not even a temporary one: {left:?}"
        );
    }
    d.errors(false);
    for compress in [false, true] {
        let _ = std::fs::remove_file(&out);
        volume_to_image(&d.dev, &out, &opts(compress)).expect("healthy device");
        let st = Command::new("qemu-img")
            .args(["compare", "-q", "-f", "raw", "-F", "qcow2"])
            .arg(&data)
            .arg(&out)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "compress={compress}: image differs from the data"
        );
    }
}

#[test]
fn wipe_onto_eio_device_fails() {
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "nbdkit", "nbdfuse", "fusermount3");
    let dir = tempfile::tempdir().unwrap();
    let d = error_device(dir.path(), 16 * MIB);
    d.errors(true);
    for method in [WipeMethod::Write, WipeMethod::Auto] {
        let e = wipe::wipe(
            &d.dev,
            &WipeOptions {
                method,
                ..WipeOptions::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Io),
            "{method:?}: expected an I/O error, got {e:?}"
        );
        assert!(e.to_string().contains(d.dev.to_str().unwrap()), "{e}");
    }
    d.errors(false);
    wipe::wipe(
        &d.dev,
        &WipeOptions {
            method: WipeMethod::Write,
            ..WipeOptions::default()
        },
    )
    .expect("healthy device wipes");
    let back = std::fs::read(&d.dev).unwrap();
    assert_eq!(back.len() as u64, 16 * MIB);
    assert!(back.iter().all(|b| *b == 0), "the healed wipe left data");
}

#[test]
fn device_and_filesystem_are_released_when_a_job_returns() {
    // A driver deletes or detaches a volume right after wiping or copying it: the engine must
    // hold nothing open on it once the call returns (io_uring's registered files included).
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "mkfs.ext4", "mount", "umount");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vol.img");
    random_file(&img, 8 * MIB, 4);
    let lo = Loop::attach(&img, true);
    for i in 0..5 {
        let o = WipeOptions {
            method: WipeMethod::Write,
            ..WipeOptions::default()
        };
        wipe::wipe(&lo.0, &o).unwrap_or_else(|e| panic!("wipe {i} right after the last: {e:?}"));
    }
    drop(lo);

    let src = dir.path().join("src.img");
    random_file(&src, 4 * MIB, 5);
    let fs = small_ext4(dir.path());
    let dst = fs.mnt.join("dst.img");
    copy::copy(&src, &dst, &CopyOptions::default()).unwrap();
    let o = Command::new("umount").arg(&fs.mnt).output().unwrap();
    assert!(
        o.status.success(),
        "umount right after the copy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn buffered_copy_onto_thin_device_running_out_fails_never_succeeds() {
    // Loop device WITHOUT direct I/O over a sparse file on a full fs, copied with buffered
    // writes: the writes land in the page cache and the error only surfaces when they are
    // flushed: when the bounded writeback waits for a window, or at the final fdatasync
    // (fsyncgate). Either way the copy fails as a failed flush, never reports success.
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "mkfs.ext4", "mount", "umount");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    random_file(&src, 96 * MIB, 6);
    let fs = small_ext4(dir.path());
    let thin = fs.mnt.join("thin.img");
    File::create(&thin).unwrap().set_len(256 * MIB).unwrap();
    let lo = Loop::attach(&thin, false);
    let o = CopyOptions {
        direct: false,
        ..CopyOptions::default()
    };
    let e = copy::copy(&src, &lo.0, &o).expect_err("a copy that did not reach storage succeeded");
    eprintln!("buffered thin-device failure: {e:?}");
    // Every write "succeeded" into the page cache: the failure is the flush's, on the device,
    // and the kernel reports the lost ENOSPC as EIO there.
    match &e {
        Error::Flush { path, source } => {
            assert_eq!(path, &lo.0, "{e:?}");
            assert_eq!(source.raw_os_error(), Some(5), "EIO: {e:?}");
        }
        other => panic!("expected Error::Flush, got {other:?}"),
    }
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains(lo.0.to_str().unwrap()), "{e}");
    drop(lo);
}
