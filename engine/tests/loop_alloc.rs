//! Allocation of a loop device learned from its backing file (root, `losetup`): the holes of
//! the file, shifted by the device's offset in it, are the device's holes; data written
//! through the device's page cache and not yet written back counts; a backing file that is no
//! longer the one at its path is never trusted (the device is then read whole).
//!
//! Skipped without root or losetup, unless EMBER_REQUIRE_SYSTEM_TESTS=1 (then they fail).

use ember_engine::alloc::data_map;
use ember_engine::copy;
use ember_engine::options::CopyOptions;
use ember_engine::test_util::{assert_same_bytes, data_ranges, run};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

/// A loop device over `file` from `offset`, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path, offset: u64) -> Loop {
        let off = offset.to_string();
        Loop(PathBuf::from(run(
            "losetup",
            &["-f", "--show", "-o", &off, file.to_str().unwrap()],
        )))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A 64 MiB sparse file: 8 KiB of data at 1 MiB + 64 KiB, 4 KiB at 40 MiB.
fn sparse_file(dir: &Path) -> PathBuf {
    let p = dir.join("backing.img");
    let f = File::create(&p).unwrap();
    f.set_len(64 * MIB).unwrap();
    f.write_at(&[0xa5; 8192], MIB + 64 * 1024).unwrap();
    f.write_at(&[0x5a; 4096], 40 * MIB).unwrap();
    f.sync_all().unwrap();
    p
}

/// A temporary folder with [`sparse_file`] in it attached at `offset`.
fn sparse_loop(offset: u64) -> (tempfile::TempDir, Loop) {
    let dir = tempfile::tempdir().unwrap();
    let lo = Loop::attach(&sparse_file(dir.path()), offset);
    (dir, lo)
}

/// Copies the device to a new file in `dir`, which must then hold the same bytes.
fn copy_out(lo: &Loop, dir: &Path) -> (PathBuf, ember_engine::options::Summary) {
    let dst = dir.join("copy.img");
    let s = copy::copy(&lo.0, &dst, &CopyOptions::default()).unwrap();
    assert_same_bytes(&lo.0, &dst);
    (dst, s)
}

#[test]
fn a_loop_devices_holes_are_its_backing_files_shifted_by_its_offset() {
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup");
    let (_dir, lo) = sparse_loop(MIB);
    let m = data_map(&lo.0).unwrap();
    assert!(m.contains_range(64 * 1024..64 * 1024 + 8192), "{m:?}");
    assert!(m.contains_range(39 * MIB..39 * MIB + 4096), "{m:?}");
    // Only the file's data blocks, nothing of the 63 MiB of holes.
    assert!(m.total_len() <= 64 * 1024, "{m:?}");
    assert!(m.iter().all(|r| r.end <= 63 * MIB), "{m:?}");
}

#[test]
fn data_written_through_the_devices_cache_is_data_before_it_is_written_back() {
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup");
    let (dir, lo) = sparse_loop(0);
    // A buffered write to the device stays in the device's page cache for seconds: the file
    // still has a hole there until the discovery writes it through.
    let dev = OpenOptions::new().write(true).open(&lo.0).unwrap();
    dev.write_at(&[0x3c; 4096], 20 * MIB).unwrap();
    let m = data_map(&lo.0).unwrap();
    assert!(m.contains_range(20 * MIB..20 * MIB + 4096), "{m:?}");
    // And a copy of the device carries it.
    copy_out(&lo, dir.path());
    drop(dev);
}

#[test]
fn copying_a_loop_device_reads_only_its_data_and_keeps_the_holes() {
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup");
    let (dir, lo) = sparse_loop(0);
    let (dst, s) = copy_out(&lo, dir.path());
    assert!(s.bytes_read <= 64 * 1024, "{s:?}");
    let allocated: u64 = data_ranges(&dst).iter().map(|r| r.1).sum();
    assert!(allocated <= 64 * 1024, "{:?}", data_ranges(&dst));
}

/// A bind mount, unmounted on drop.
struct Bind(PathBuf);

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_backing_file_hidden_or_deleted_at_its_path_is_not_trusted() {
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup", "mount", "umount");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backing.img");
    let f = File::create(&file).unwrap();
    f.write_at(&vec![0x77; 4 * MIB as usize], 0).unwrap();
    f.sync_all().unwrap();
    let lo = Loop::attach(&file, 0);
    let whole = |lo: &Loop| {
        let m = data_map(&lo.0).unwrap();
        assert_eq!(m.total_len(), 4 * MIB, "{m:?}");
        let _ = std::fs::remove_file(dir.path().join("copy.img"));
        let (dst, _) = copy_out(lo, dir.path());
        assert_eq!(std::fs::read(&dst).unwrap(), vec![0x77; 4 * MIB as usize]);
    };
    // The path the kernel names now shows another file (a bind mount over it, as a container
    // or a careless admin makes): its holes would make a copy lose every byte.
    let empty = dir.path().join("empty.img");
    File::create(&empty).unwrap().set_len(4 * MIB).unwrap();
    run(
        "mount",
        &["--bind", empty.to_str().unwrap(), file.to_str().unwrap()],
    );
    let bind = Bind(file.clone());
    whole(&lo);
    drop(bind);
    // Deleted: the kernel names it "<path> (deleted)", and a file of that very name is not it.
    std::fs::remove_file(&file).unwrap();
    let decoy = dir.path().join("backing.img (deleted)");
    File::create(&decoy).unwrap().set_len(4 * MIB).unwrap();
    whole(&lo);
}
