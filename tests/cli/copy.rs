//! `ember copy` and `ember compare`.

use crate::util::*;
use ember_engine::{require_root, require_tool};
use std::os::unix::fs::FileExt;

fn copy_and_check(size: u64, extents: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    sparse_file(&src, size, extents, seed);
    let out = ok(&["copy", s(&src), s(&dst), "--json"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["logical_size"], size);
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), size);
    assert!(cmp(&src, &dst), "cmp differs for size {size} seed {seed}");
    assert_eq!(
        ok(&["compare", s(&src), s(&dst)]).trim(),
        format!("identical ({size} bytes)")
    );
    // Holes stay holes: the copy allocates no more than the source.
    assert!(
        allocated(&dst) <= allocated(&src),
        "dst allocates {} > src {}",
        allocated(&dst),
        allocated(&src)
    );
    assert!(st_blocks_bytes(&dst) <= st_blocks_bytes(&src));
    let written = j["bytes_written"].as_u64().unwrap();
    let skipped = j["bytes_skipped"].as_u64().unwrap();
    let zeroed = j["bytes_zeroed"].as_u64().unwrap();
    assert_eq!(
        written + skipped + zeroed,
        size,
        "every byte accounted for: {j}"
    );
}

#[test]
fn copies_seeded_sparse_files_of_odd_sizes() {
    for (i, size) in [
        4096u64,
        1 << 20,
        (64 << 20) + 123,
        (3 << 20) + 4095,
        7 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        copy_and_check(size, 1 + i * 7, 42 + i as u64);
    }
}

#[test]
fn copies_empty_all_hole_all_data_and_tail_data() {
    let dir = tempfile::tempdir().unwrap();
    // Empty.
    let e = dir.path().join("empty");
    std::fs::File::create(&e).unwrap();
    let e2 = dir.path().join("empty2");
    ok(&["copy", s(&e), s(&e2)]);
    assert_eq!(std::fs::metadata(&e2).unwrap().len(), 0);
    // All hole.
    let h = dir.path().join("hole");
    std::fs::File::create(&h)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let h2 = dir.path().join("hole2");
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["copy", s(&h), s(&h2), "--json"])).unwrap();
    assert_eq!(j["bytes_written"], 0);
    assert_eq!(allocated(&h2), 0);
    assert!(cmp(&h, &h2));
    // All data, unaligned size.
    let d = dir.path().join("data");
    let buf: Vec<u8> = (0..(5 << 20) + 777).map(|i| (i % 253) as u8 + 1).collect();
    std::fs::write(&d, &buf).unwrap();
    let d2 = dir.path().join("data2");
    ok(&["copy", s(&d), s(&d2)]);
    assert!(cmp(&d, &d2));
    // Data at the very end (last byte), unaligned size.
    let t = dir.path().join("tail");
    let f = std::fs::File::create(&t).unwrap();
    f.set_len((9 << 20) + 5).unwrap();
    f.write_at(b"end", (9 << 20) + 2).unwrap();
    drop(f);
    let t2 = dir.path().join("tail2");
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "copy",
        s(&t),
        s(&t2),
        "--block-size",
        "64K",
        "--queue-depth",
        "4",
        "--json",
    ]))
    .unwrap();
    assert!(cmp(&t, &t2));
    assert_eq!(read_range(&t2, (9 << 20) + 2, 3), b"end");
    // Given flags are used as given; left out, the engine's rule chooses (reported).
    assert_eq!(j["io"]["rule"], "as asked");
    assert_eq!(
        (
            j["io"]["block_size"].as_u64(),
            j["io"]["queue_depth"].as_u64()
        ),
        (Some(64 << 10), Some(4))
    );
    let t3 = dir.path().join("tail3");
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "copy",
        s(&d),
        s(&t3),
        "--block-size",
        "1M",
        "--json",
    ]))
    .unwrap();
    assert_eq!(j["io"]["rule"], "as asked");
    assert_eq!(j["io"]["block_size"].as_u64(), Some(1 << 20));
    assert!(cmp(&d, &t3));
}

#[test]
fn zero_blocks_become_holes_unless_allocation_is_preserved() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // 8 MiB of written zeros then 1 MiB of data.
    let mut buf = vec![0u8; 9 << 20];
    buf[8 << 20..].fill(7);
    std::fs::write(&src, &buf).unwrap();
    let a = dir.path().join("a");
    ok(&["copy", s(&src), s(&a)]);
    assert!(cmp(&src, &a));
    assert!(
        allocated(&a) <= 2 << 20,
        "zeros were written as data: {}",
        allocated(&a)
    );
    let b = dir.path().join("b");
    ok(&["copy", s(&src), s(&b), "--preserve-allocation"]);
    assert!(cmp(&src, &b));
    assert_eq!(allocated(&b), 9 << 20);
}

#[test]
fn buffered_and_sync_fallback_paths_copy_identically() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sparse_file(&src, (20 << 20) + 1, 30, 7);
    let a = dir.path().join("a");
    ok(&["copy", s(&src), s(&a), "--no-direct", "--no-sync"]);
    assert!(cmp(&src, &a));
    let b = dir.path().join("b");
    let o = ember()
        .env("EMBER_NO_URING", "1")
        .args(["copy", s(&src), s(&b), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["backend"], "sync");
    assert!(cmp(&src, &b));
}

#[test]
fn overwrite_needs_force_and_then_matches_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sparse_file(&src, 16 << 20, 10, 3);
    let dst = dir.path().join("dst");
    fill_pattern_new(&dst, 32 << 20, 0xAB);
    let err = fails(&["copy", s(&src), s(&dst)]);
    assert!(err.contains("--force"), "{err}");
    let kept = std::fs::read(&dst).unwrap();
    assert!(
        kept.len() == 32 << 20 && kept.iter().all(|b| *b == 0xAB),
        "refused copy must not touch the destination"
    );
    ok(&["copy", s(&src), s(&dst), "--force"]);
    assert!(
        cmp(&src, &dst),
        "old data must not survive where the source has holes"
    );
}

fn fill_pattern_new(p: &std::path::Path, len: u64, byte: u8) {
    std::fs::write(p, vec![byte; len as usize]).unwrap();
}

#[test]
fn clear_errors_for_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    sparse_file(&src, 1 << 20, 2, 1);
    let missing = dir.path().join("missing");
    let e = fails(&["copy", s(&missing), s(&dir.path().join("x"))]);
    assert!(e.contains("missing") && e.contains("No such file"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    assert!(!dir.path().join("x").exists());
    let before = std::fs::read(&src).unwrap();
    let e = fails(&["copy", s(&src), s(&src), "--force"]);
    assert!(e.contains("same file"), "{e}");
    assert!(std::fs::read(&src).unwrap() == before, "source untouched");
    let link = dir.path().join("link");
    std::fs::hard_link(&src, &link).unwrap();
    let e = fails(&["copy", s(&src), s(&link), "--force"]);
    assert!(e.contains("same file"), "{e}");
    assert!(std::fs::read(&src).unwrap() == before, "source untouched");
    let e = fails(&[
        "copy",
        s(&src),
        s(&dir.path().join("y")),
        "--block-size",
        "3000",
    ]);
    assert!(e.contains("block size"), "{e}");
    let e = fails(&[
        "copy",
        s(&src),
        s(&dir.path().join("y")),
        "--queue-depth",
        "0",
    ]);
    assert!(e.contains("queue depth"), "{e}");
    let e = fails(&[
        "copy",
        s(&src),
        s(&dir.path().join("y")),
        "--bps-limit",
        "lots",
    ]);
    assert!(e.contains("invalid size"), "{e}");
    assert!(
        !dir.path().join("y").exists(),
        "refused options create nothing"
    );
    let e = fails(&["copy", s(&src), s(&dir.path().join("no/such/dir/y"))]);
    assert!(e.contains("No such file"), "{e}");
    let e = fails(&["copy", s(dir.path()), s(&dir.path().join("z"))]);
    assert!(e.contains("directory"), "{e}");
}

#[test]
fn compare_reports_first_difference() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    sparse_file(&a, 10 << 20, 5, 9);
    let b = dir.path().join("b");
    ok(&["copy", s(&a), s(&b)]);
    let f = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
    f.write_at(&[0x5a], (7 << 20) + 13).unwrap();
    f.write_at(&[0x5b], (9 << 20) + 1).unwrap();
    drop(f);
    let o = run(&["compare", s(&a), s(&b), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["identical"], false);
    // Unless the source had exactly 0x5a there, the first difference is that byte.
    let orig = read_range(&a, (7 << 20) + 13, 1)[0];
    if orig != 0x5a {
        assert_eq!(j["first_difference"], (7 << 20) + 13);
    }
    let o = run(&["compare", s(&a), s(&dir.path().join("nope"))]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn throttled_copy_is_cancelled_cleanly_by_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, vec![1u8; 64 << 20]).unwrap();
    let dst = dir.path().join("dst");
    let child = ember()
        .args(["copy", s(&src), s(&dst), "--bps-limit", "8M"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    // SAFETY: kill(2) on our own child's pid with SIGINT.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cancelled after") && err.contains(&format!(" of {} bytes", 64 << 20)),
        "{err}"
    );
    assert!(
        !dst.exists(),
        "a cancelled copy must not leave a file that looks complete"
    );
}

#[test]
fn bps_limit_slows_the_copy_down() {
    // Behaviour, not performance: 6 MiB at 8 MiB/s cannot finish in under half a second.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::write(&src, vec![3u8; 6 << 20]).unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "copy",
        s(&src),
        s(&dir.path().join("d")),
        "--bps-limit",
        "8M",
        "--json",
    ]))
    .unwrap();
    assert!(j["seconds"].as_f64().unwrap() >= 0.5, "{j}");
}

#[test]
fn loop_device_destination_reads_zeros_over_old_data() {
    require_root!();
    require_tool!("losetup");
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    fill_pattern_new(&backing, 48 << 20, 0xEE);
    let lo = LoopDev::new(&backing, false);
    let src = dir.path().join("src");
    sparse_file(&src, (32 << 20) + 512, 12, 11);
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["copy", s(&src), s(&lo.dev), "--json"])).unwrap();
    assert!(j["bytes_zeroed"].as_u64().unwrap() > 0, "{j}");
    // Independent check: the device's first 32 MiB + 512 equal the source byte for byte
    // (holes over the old 0xEE pattern read zero), the rest is untouched.
    let n = (32 << 20) + 512;
    assert_eq!(read_range(&lo.dev, 0, n), std::fs::read(&src).unwrap());
    assert!(read_range(&lo.dev, n, (48 << 20) - n)
        .iter()
        .all(|b| *b == 0xEE));
    // A destination smaller than the source is refused before any write: the device is first
    // filled with a marker byte (through the device), and after the refusal every byte of it
    // still holds the marker, so no data, zero or hole-punch write reached it.
    let dev = std::fs::OpenOptions::new()
        .write(true)
        .open(&lo.dev)
        .unwrap();
    dev.write_all_at(&vec![0x5A; 48 << 20], 0).unwrap();
    dev.sync_all().unwrap();
    drop(dev);
    let big = dir.path().join("big");
    sparse_file(&big, 64 << 20, 3, 5);
    let e = fails(&["copy", s(&big), s(&lo.dev)]);
    assert!(e.contains("smaller than the source"), "{e}");
    let after = read_range(&lo.dev, 0, 48 << 20);
    assert!(
        after.iter().all(|b| *b == 0x5A),
        "the refused copy wrote at offset {:?}",
        after.iter().position(|b| *b != 0x5A)
    );
    // --dest-zeroed trusts the caller: holes are not zeroed.
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "copy",
        s(&src),
        s(&lo.dev),
        "--dest-zeroed",
        "--json",
    ]))
    .unwrap();
    assert_eq!(j["bytes_zeroed"], 0);
}

#[test]
fn demo_runs_the_engine_and_the_file_backend_lifecycle_without_config() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let o = ember()
        .args([
            "demo",
            "--dir",
            s(&dir.path().join("demo")),
            "--size",
            "64M",
        ])
        .env("HOME", &home)
        .env_remove("EMBER_CONFIG")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for step in [
        "identical",
        "create volume",
        "snapshot",
        "clone",
        "extend",
        "stats",
        "zero-wiped",
    ] {
        assert!(out.contains(step), "missing step {step}: {out}");
    }
    // Everything the lifecycle created was deleted again.
    let data = dir.path().join("demo/volumes/data");
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "volumes left in {data:?}"
    );
}

#[test]
fn zero_4k_blocks_inside_data_stay_holes_on_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // 2 MiB written as data; 256 KiB of zeros in the middle and the last 4 KiB zero.
    let mut buf = vec![0x42u8; 2 << 20];
    buf[(512 << 10)..(768 << 10)].fill(0);
    let n = buf.len();
    buf[n - 4096..].fill(0);
    std::fs::write(&src, &buf).unwrap();
    assert_eq!(allocated(&src), 2 << 20);
    let dst = dir.path().join("dst");
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["copy", s(&src), s(&dst), "--json"])).unwrap();
    assert!(cmp(&src, &dst));
    assert_eq!(j["bytes_written"], (2 << 20) - (256 << 10) - 4096, "{j}");
    assert_eq!(allocated(&dst), (2 << 20) - (256 << 10) - 4096);
    // With --preserve-allocation every byte is written.
    let keep = dir.path().join("keep");
    ok(&["copy", s(&src), s(&keep), "--preserve-allocation"]);
    assert_eq!(allocated(&keep), 2 << 20);
}

/// `ember copy SRC DST --json FLAGS` (which must succeed): its summary and its peak resident
/// set in KiB.
fn copy_resident(
    src: &std::path::Path,
    dst: &std::path::Path,
    flags: &[&str],
) -> (serde_json::Value, u64) {
    let mut cmd = ember();
    cmd.args(["copy", s(src), s(dst), "--json"]).args(flags);
    let (out, rss_kib) = ok_with_peak_rss(cmd);
    (serde_json::from_str(&out).unwrap(), rss_kib)
}

/// A small run keeps a small pool: 32 MiB of data keeps at most 8 MiB in flight (a quarter of
/// what it moves, at least 8 MiB), not the device rule's 52 MiB. It peaked at 37 MiB resident
/// before, 14 MiB since. (On tmpfs the memory rule's pool is smaller still.)
#[test]
fn a_small_copy_keeps_a_small_pool() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::File::create(&src).unwrap();
    fill_pattern(&src, 0, 32 << 20, 0x5a);
    let dst = dir.path().join("dst");
    let (j, rss_kib) = copy_resident(&src, &dst, &[]);
    assert_eq!(j["bytes_written"], 32u64 << 20, "{j}");
    assert!(
        rss_kib <= 24 << 10,
        "a 32 MiB copy peaked at {rss_kib} KiB resident: {}",
        j["io"]
    );
    assert!(cmp(&src, &dst));
}

/// Memory stays bounded whatever the run moves: a copy large enough to register its buffers
/// with the ring, then the same copy proven with `--verify`, each stays under 64 MiB resident,
/// binary and all. (With the temporary directory on a disk, as here, this is the device rule's
/// pool, the largest; on tmpfs the memory rule's, and the bound still holds.)
#[test]
fn a_large_copy_and_its_verification_stay_under_64_mib_resident() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::File::create(&src).unwrap();
    for i in 0..64u64 {
        fill_pattern(&src, i * (8 << 20), 8 << 20, 0x30 + i as u8);
    }
    let dst = dir.path().join("dst");
    for extra in [None, Some("--verify")] {
        let flags: Vec<&str> = ["--force"].into_iter().chain(extra).collect();
        let (j, rss_kib) = copy_resident(&src, &dst, &flags);
        assert_eq!(j["bytes_written"], 512u64 << 20, "{j}");
        assert!(
            rss_kib <= 64 << 10,
            "ember copy {extra:?} peaked at {rss_kib} KiB resident: {}",
            j["io"]
        );
    }
    assert!(cmp(&src, &dst));
}
