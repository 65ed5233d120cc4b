//! The I/O shape follows the storage (engine/src/tuning.rs), and a copy through the page cache
//! to a disk keeps its pages bounded (engine/src/pagecache.rs). Real tmpfs, real loop devices,
//! real page cache: what is asserted is what the kernel reports (`fincore`), never a time.

use ember_engine::copy::{self, Destination, Job, Source};
use ember_engine::options::CopyOptions;
use ember_engine::test_util::{data_ranges, first_difference, skip, unwritten_extents};
use ember_engine::tuning::{Medium, Tune, DEVICE_IN_FLIGHT, MEMORY_QUEUE_DEPTH, RULE_DEVICE};
use rand::{RngCore, SeedableRng};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn random_file(path: &Path, size: u64, seed: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        rng.fill_bytes(&mut buf);
        f.write_all(&buf).unwrap();
    }
}

/// A private folder on tmpfs (/dev/shm), removed at the end; `None` (skipped) without one.
fn tmpfs_dir(test: &str) -> Option<tempfile::TempDir> {
    if fs_type(Path::new("/dev/shm")) == "tmpfs" {
        Some(tempfile::tempdir_in("/dev/shm").unwrap())
    } else {
        skip(test, "/dev/shm is not a tmpfs");
        None
    }
}

/// The file system type of `path` as `stat -f -c %T` names it (empty when stat fails).
fn fs_type(path: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[test]
fn files_on_tmpfs_use_the_page_cache_and_a_shallow_queue_unless_pinned() {
    let Some(mem) = tmpfs_dir("files_on_tmpfs_use_the_page_cache") else {
        return;
    };
    let disk = tempfile::tempdir().unwrap();
    let src = mem.path().join("src.raw");
    random_file(&src, 16 * MIB, 1);

    // tmpfs -> tmpfs: both ends buffered, shallow queue; bytes exact.
    let dst = mem.path().join("dst.raw");
    let s = copy::copy(&src, &dst, &CopyOptions::default()).unwrap();
    let io = s.io.expect("a copy reports its I/O shape");
    assert_eq!(io.media, (Some(Medium::Memory), Medium::Memory));
    assert_eq!(io.direct, (false, false));
    assert_eq!(
        s.direct,
        (false, false),
        "what was registered follows the shape"
    );
    assert_eq!(io.queue_depth, MEMORY_QUEUE_DEPTH);
    // Every file in memory: worker threads instead of the ring.
    assert!(io.threads >= 1);
    assert_eq!(s.backend, "threads");
    assert_eq!(first_difference(&src, &dst), None);

    // tmpfs -> disk: the disk keeps O_DIRECT and the deep queue.
    let on_disk = disk.path().join("dst.raw");
    let s = copy::copy(&src, &on_disk, &CopyOptions::default()).unwrap();
    let io = s.io.unwrap();
    assert_eq!(io.media, (Some(Medium::Memory), Medium::Device));
    assert_eq!(io.direct, (false, true));
    assert_eq!(io.queue_depth, CopyOptions::default().queue_depth);
    assert_eq!((io.threads, s.backend), (0, "io_uring"));
    assert_eq!(first_difference(&src, &on_disk), None);

    // disk -> disk: as asked.
    let again = disk.path().join("again.raw");
    let io = copy::copy(&on_disk, &again, &CopyOptions::default())
        .unwrap()
        .io
        .unwrap();
    assert_eq!(io.media, (Some(Medium::Device), Medium::Device));
    assert_eq!((io.direct, io.rule), ((true, true), RULE_DEVICE));

    // Pinned: used as given, also on tmpfs.
    let pinned = CopyOptions {
        queue_depth: 16,
        tune: Tune::PINNED,
        ..CopyOptions::default()
    };
    let dst2 = mem.path().join("pinned.raw");
    let io = copy::copy(&src, &dst2, &pinned).unwrap().io.unwrap();
    assert_eq!((io.queue_depth, io.rule, io.threads), (16, "as asked", 0));
    assert_eq!(first_difference(&src, &dst2), None);
}

/// Everything a copy does, on the worker threads: holes kept, zero blocks found in the data
/// left as holes, old bytes of an existing destination zeroed where the source has holes, a
/// read-back verify, progress to the end; then a wipe of the file. Checked byte by byte.
#[test]
fn runs_on_memory_files_keep_every_guarantee_on_worker_threads() {
    let Some(mem) = tmpfs_dir("runs_on_memory_files_keep_every_guarantee") else {
        return;
    };
    let src = mem.path().join("src.raw");
    let size = 40 * MIB + 12288;
    {
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(size).unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(9);
        let mut data = vec![0u8; 3 * MIB as usize];
        for (i, at) in [0, 7 * MIB + 4096, 20 * MIB, 37 * MIB]
            .into_iter()
            .enumerate()
        {
            rng.fill_bytes(&mut data);
            if i == 2 {
                // Allocated zeros inside the data: a hole in the copy.
                data[MIB as usize..2 * MIB as usize].fill(0);
            }
            std::os::unix::fs::FileExt::write_at(&f, &data, at).unwrap();
        }
        std::os::unix::fs::FileExt::write_at(&f, b"tail", size - 4).unwrap();
    }
    let dst = mem.path().join("dst.raw");
    std::fs::write(&dst, vec![0xAB; size as usize]).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = done.clone();
    let o = CopyOptions {
        force: true,
        verify: true,
        progress: Some(std::sync::Arc::new(move |d, _| {
            seen.store(d, std::sync::atomic::Ordering::Relaxed)
        })),
        ..CopyOptions::default()
    };
    let s = copy::copy(&src, &dst, &o).unwrap();
    assert_eq!(s.backend, "threads");
    assert_eq!(first_difference(&src, &dst), None);
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), size);
    assert_eq!(done.load(std::sync::atomic::Ordering::Relaxed), size);
    // The zeroed MiB of data and the source's holes hold no blocks in the copy.
    let blocks = |p: &Path| std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(p).unwrap());
    assert!(
        blocks(&dst) <= blocks(&src) - 2048,
        "zero blocks were written"
    );

    let w = ember_engine::wipe::wipe(&dst, &Default::default()).unwrap();
    assert_eq!(w.length, size);
    let bytes = std::fs::read(&dst).unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert!(bytes.iter().all(|b| *b == 0), "the wipe left data");
}

/// A tmpfs that fills up mid-copy fails the copy with the file system's error: nothing is
/// reported done that the workers could not write.
#[test]
fn a_full_tmpfs_fails_the_copy_on_worker_threads() {
    ember_engine::require_root!();
    let Some(mem) = tmpfs_dir("a_full_tmpfs_fails_the_copy") else {
        return;
    };
    let small = tempfile::tempdir().unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(small.path())
        .status()
        .unwrap();
    assert!(st.success(), "mount a small tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(small.path());
    let src = mem.path().join("src.raw");
    random_file(&src, 24 * MIB, 4);
    let dst = small.path().join("dst.raw");
    let e = copy::copy(&src, &dst, &CopyOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("dst.raw"), "{msg}");
    assert_eq!(
        e.kind(),
        ember_engine::error::ErrorKind::NoSpace,
        "the file system's error: {msg}"
    );
}

/// A source of small scattered extents gets small buffers and a deeper queue (as many bytes
/// in flight as asked), unless the depth was given; the copy is exact either way.
#[test]
fn small_pieces_of_data_deepen_the_queue_unless_pinned() {
    let disk = tempfile::tempdir().unwrap();
    let src = disk.path().join("frag.raw");
    {
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(64 * MIB).unwrap();
        for i in 0..1024u64 {
            let block = [(i % 255) as u8 + 1; 4096];
            std::os::unix::fs::FileExt::write_at(&f, &block, i * 64 * 1024).unwrap();
        }
    }
    let dst = disk.path().join("dst.raw");
    let s = copy::copy(&src, &dst, &CopyOptions::default()).unwrap();
    let io = s.io.unwrap();
    assert_eq!(io.media, (Some(Medium::Device), Medium::Device));
    assert_eq!(io.queue_depth, ember_engine::tuning::SMALL_IO_QUEUE_DEPTH);
    assert_eq!(first_difference(&src, &dst), None);

    let pinned = CopyOptions {
        force: true,
        tune: Tune {
            queue_depth: false,
            ..Tune::default()
        },
        ..CopyOptions::default()
    };
    let io = copy::copy(&src, &dst, &pinned).unwrap().io.unwrap();
    assert_eq!(io.queue_depth, CopyOptions::default().queue_depth);
    assert_eq!(first_difference(&src, &dst), None);
}

/// The kernel's largest request for the device holding `dir`'s file system, read from sysfs
/// (a partition's from its disk), when there is one.
fn max_request_of(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    let kb = std::fs::read_to_string(sys.join("queue/max_sectors_kb"))
        .or_else(|_| std::fs::read_to_string(sys.join("../queue/max_sectors_kb")))
        .ok()?;
    Some(kb.trim().parse::<u64>().ok()? << 10)
}

/// The request size the device rule should pick for a device limit of `limit` bytes: its
/// largest power of two, from the default 1 MiB block up to 4 MiB.
fn request_for(limit: Option<u64>) -> u64 {
    limit
        .map_or(MIB, |r| 1u64 << (63 - r.leading_zeros()))
        .clamp(MIB, 4 * MIB)
}

/// Between devices through O_DIRECT: 52 MiB in flight, in requests the device takes whole (1 to
/// 4 MiB); the data arrives exact; a block size or depth given keeps the run as asked, and the
/// CLI's flags pin them.
#[test]
fn copies_between_devices_keep_52_mib_in_flight_in_requests_the_device_takes() {
    let disk = tempfile::tempdir().unwrap();
    let src = disk.path().join("src.raw");
    random_file(&src, 24 * MIB, 5);
    let dst = disk.path().join("dst.raw");
    let s = copy::copy(&src, &dst, &CopyOptions::default()).unwrap();
    let io = s.io.unwrap();
    assert_eq!(io.media, (Some(Medium::Device), Medium::Device));
    assert_eq!(io.rule, RULE_DEVICE);
    let expected = request_for(max_request_of(disk.path()));
    assert_eq!(io.block_size as u64, expected);
    assert_eq!(
        io.block_size as u64 * u64::from(io.queue_depth),
        DEVICE_IN_FLIGHT
    );
    assert_eq!(first_difference(&src, &dst), None);

    for tune in [
        Tune {
            block_size: false,
            ..Tune::default()
        },
        Tune {
            queue_depth: false,
            ..Tune::default()
        },
    ] {
        let asked = CopyOptions {
            force: true,
            tune,
            ..CopyOptions::default()
        };
        let io = copy::copy(&src, &dst, &asked).unwrap().io.unwrap();
        assert_eq!(
            (io.block_size, io.queue_depth, io.rule),
            (asked.block_size, asked.queue_depth, "as asked")
        );
        assert_eq!(first_difference(&src, &dst), None);
    }
}

/// Write requests with data the block device `name` has completed: `/sys/block/NAME/stat`
/// counts a flush (the final fdatasync) among the writes too, and alone in field 16.
fn data_writes(name: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).unwrap();
    let field = |i: usize| -> u64 { stat.split_whitespace().nth(i).unwrap().parse().unwrap() };
    field(4) - field(15)
}

/// A loop device over a disk file takes requests of 1280 KiB: 1 MiB ones, 52 of them; and with
/// the buffers in huge pages each one arrives as a single request (in 4 KiB pages a 1 MiB
/// buffer is up to 256 segments, and a loop device takes 128, so it could be split in two).
#[test]
fn a_loop_device_over_disk_gets_requests_it_takes_whole() {
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup");
    let disk = tempfile::tempdir().unwrap();
    let backing = disk.path().join("lo.img");
    let lo = Loop::over(&backing, 32 * MIB);
    let name = lo.0.file_name().unwrap().to_string_lossy().into_owned();
    let limit: u64 = std::fs::read_to_string(format!("/sys/block/{name}/queue/max_sectors_kb"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let src = disk.path().join("src.raw");
    random_file(&src, 16 * MIB, 3);
    let before = data_writes(&name);
    let s = Job::new(
        Source::path(&src),
        Destination::path(&lo.0),
        &CopyOptions::default(),
    )
    .run()
    .unwrap();
    let requests = data_writes(&name) - before;
    let io = s.io.unwrap();
    assert_eq!(io.media, (Some(Medium::Device), Medium::Device));
    assert_eq!(io.rule, RULE_DEVICE);
    let expected = request_for(Some(limit << 10));
    assert_eq!(io.block_size as u64, expected, "max_sectors_kb {limit}");
    if io.huge_pages {
        assert_eq!(requests, 16 * MIB / expected, "one request per buffer");
    } else {
        skip(
            "a_loop_device_over_disk_gets_requests_it_takes_whole (one request per buffer)",
            "transparent huge pages are off here",
        );
    }
    let mut head = vec![0u8; 16 * MIB as usize];
    std::io::Read::read_exact(&mut std::fs::File::open(&lo.0).unwrap(), &mut head).unwrap();
    assert!(head == std::fs::read(&src).unwrap());
}

struct Loop(PathBuf);

impl Loop {
    /// A loop device over `backing`, created `len` bytes long.
    fn over(backing: &Path, len: u64) -> Loop {
        std::fs::File::create(backing)
            .unwrap()
            .set_len(len)
            .unwrap();
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Loop(PathBuf::from(String::from_utf8(o.stdout).unwrap().trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn a_loop_device_over_tmpfs_is_memory_and_keeps_o_direct() {
    ember_engine::require_root!();
    ember_engine::require_tool!("losetup");
    let Some(mem) = tmpfs_dir("a_loop_device_over_tmpfs_is_memory") else {
        return;
    };
    let backing = mem.path().join("lo.img");
    let lo = Loop::over(&backing, 32 * MIB);
    let src = mem.path().join("src.raw");
    random_file(&src, 16 * MIB, 2);
    let o = CopyOptions::default();
    let s = Job::new(Source::path(&src), Destination::path(&lo.0), &o)
        .run()
        .unwrap();
    let io = s.io.unwrap();
    assert_eq!(io.media, (Some(Medium::Memory), Medium::Memory));
    // Through the loop device's own page cache every byte would be cached twice.
    assert_eq!(io.direct, (false, true));
    let mut head = vec![0u8; 16 * MIB as usize];
    std::io::Read::read_exact(&mut std::fs::File::open(&lo.0).unwrap(), &mut head).unwrap();
    assert!(head == std::fs::read(&src).unwrap());
}

/// Bytes of `path` in the page cache, as `fincore` reports them.
fn resident(path: &Path) -> u64 {
    let o = Command::new("fincore")
        .args(["-b", "-n", "-o", "RES"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn a_buffered_copy_on_disk_leaves_at_most_a_few_windows_of_either_file_in_the_page_cache() {
    ember_engine::require_tool!("fincore");
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.raw");
    random_file(&src, 256 * MIB, 3);
    // Clean, so that dropping its pages can take them all.
    std::fs::File::open(&src).unwrap().sync_all().unwrap();
    assert!(
        resident(&src) > 0,
        "the source was just written through the page cache"
    );
    let dst = d.path().join("dst.raw");
    let o = CopyOptions {
        direct: false,
        ..CopyOptions::default()
    };
    let s = copy::copy(&src, &dst, &o).unwrap();
    assert_eq!(s.direct, (false, false));
    // Every window but the last two was written back, waited for and dropped; the kernel may
    // keep fewer pages still, never the whole copy.
    let kept = resident(&dst);
    assert!(
        kept <= 3 * ember_engine::pagecache::WINDOW,
        "{kept} bytes of a 256 MiB buffered copy are still cached"
    );
    // The source's pages were dropped behind the reads, the last window at the end.
    let read_kept = resident(&src);
    assert!(
        read_kept <= ember_engine::pagecache::READ_WINDOW,
        "{read_kept} bytes of a 256 MiB buffered source are still cached"
    );
    assert_eq!(first_difference(&src, &dst), None);
}

#[test]
fn data_allocated_first_on_ext4_ends_allocated_exactly_where_the_data_is() {
    let disk = tempfile::tempdir().unwrap();
    if fs_type(disk.path()) != "ext2/ext3" {
        skip(
            "data_allocated_first_on_ext4",
            "the temporary folder is not on ext4",
        );
        return;
    }
    // 256 pieces of 4 KiB, one every 64 KiB: every fifth all zeros; then a 1 MiB extent
    // whose second and last 4 KiB are zeros.
    let src = disk.path().join("src.raw");
    let f = std::fs::File::create(&src).unwrap();
    let size = 32 * MIB;
    f.set_len(size).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
    let mut piece = vec![0u8; 4096];
    let mut expected = Vec::new();
    use std::os::unix::fs::FileExt;
    for i in 0..256u64 {
        if i % 5 == 0 {
            piece.fill(0);
        } else {
            rng.fill_bytes(&mut piece);
            expected.push((i * 64 * 1024, 4096));
        }
        f.write_all_at(&piece, i * 64 * 1024).unwrap();
    }
    let mut extent = vec![0u8; MIB as usize];
    rng.fill_bytes(&mut extent);
    extent[4096..8192].fill(0);
    let tail = extent.len() - 4096;
    extent[tail..].fill(0);
    f.write_all_at(&extent, 20 * MIB).unwrap();
    expected.extend([(20 * MIB, 4096), (20 * MIB + 8192, MIB - 3 * 4096)]);
    drop(f);

    // Asked for: allocated first, and every zero piece given back afterwards.
    let dst = disk.path().join("first.raw");
    let opts = CopyOptions {
        allocate_first: true,
        tune: Tune {
            allocate: false,
            ..Tune::default()
        },
        ..CopyOptions::default()
    };
    let s = copy::copy(&src, &dst, &opts).unwrap();
    assert!(s.io.unwrap().allocate_first, "allocated first when asked");
    assert_eq!(first_difference(&src, &dst), None);
    assert_eq!(
        data_ranges(&dst),
        expected,
        "allocated exactly the non-zero data"
    );
    assert_eq!(
        unwritten_extents(&dst),
        0,
        "the zero pieces were given back"
    );

    // Left to the rule: a few pieces in a file system with room for ext4's reservations do not
    // pay for a pass of their own.
    let dst = disk.path().join("rule.raw");
    let s = copy::copy(&src, &dst, &CopyOptions::default()).unwrap();
    assert!(!s.io.unwrap().allocate_first);
    assert_eq!(first_difference(&src, &dst), None);
    assert_eq!(data_ranges(&dst), expected);
}
