//! `ember wipe`: no byte of the old data survives, nothing outside the range is touched.

use crate::util::*;
use ember_engine::{require_root, require_tool};
use std::io::Write;

const MIB: u64 = 1 << 20;

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

#[test]
fn every_file_method_leaves_only_zeros() {
    for method in ["auto", "punch", "zero-range", "write"] {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("vol");
        std::fs::write(&f, vec![0xA5u8; (24 * MIB) as usize]).unwrap();
        let j: serde_json::Value = serde_json::from_str(&ok(&[
            "wipe",
            s(&f),
            "--method",
            method,
            "--verify",
            "full",
            "--json",
        ]))
        .unwrap();
        assert_eq!(j["bytes_zeroed"], 24 * MIB, "{method}: {j}");
        assert_eq!(j["verified"]["mode"], "full");
        // Independent reader: plain std reads.
        assert!(all_zero(&std::fs::read(&f).unwrap()), "{method} left data");
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 24 * MIB, "size kept");
        if method == "punch" || method == "auto" {
            assert_eq!(allocated(&f), 0, "{method} should deallocate");
        }
    }
}

#[test]
fn sparse_file_wipe_skips_holes_and_range_wipe_touches_nothing_outside() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vol");
    let file = std::fs::File::create(&f).unwrap();
    file.set_len(64 * MIB).unwrap();
    drop(file);
    fill_pattern(&f, 8 * MIB, 8 * MIB, 0x11);
    fill_pattern(&f, 40 * MIB, 8 * MIB, 0x22);
    // Wipe [10 MiB, 44 MiB): part of each extent.
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "wipe",
        s(&f),
        "--offset",
        "10M",
        "--length",
        "34M",
        "--method",
        "write",
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        j["bytes_zeroed"],
        10 * MIB,
        "only allocated bytes need work: {j}"
    );
    assert_eq!(j["bytes_skipped"], 24 * MIB, "{j}");
    let all = std::fs::read(&f).unwrap();
    assert!(all[(8 * MIB) as usize..(10 * MIB) as usize]
        .iter()
        .all(|b| *b == 0x11));
    assert!(all_zero(&all[(10 * MIB) as usize..(44 * MIB) as usize]));
    assert!(all[(44 * MIB) as usize..(48 * MIB) as usize]
        .iter()
        .all(|b| *b == 0x22));
    // clear-size: only the first N MiB of the range.
    ok(&["wipe", s(&f), "--offset", "44M", "--clear-size", "2"]);
    let all = std::fs::read(&f).unwrap();
    assert!(all_zero(&all[(44 * MIB) as usize..(46 * MIB) as usize]));
    assert!(all[(46 * MIB) as usize..(48 * MIB) as usize]
        .iter()
        .all(|b| *b == 0x22));
}

#[test]
fn bad_wipe_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vol");
    std::fs::write(&f, vec![1u8; MIB as usize]).unwrap();
    let e = fails(&["wipe", s(&f), "--offset", "2M"]);
    assert!(e.contains("past the end"), "{e}");
    let e = fails(&["wipe", s(&f), "--offset", "512K", "--length", "1M"]);
    assert!(e.contains("past the end"), "{e}");
    let e = fails(&["wipe", s(&dir.path().join("missing"))]);
    assert!(e.contains("No such file"), "{e}");
    assert!(
        !dir.path().join("missing").exists(),
        "a missing target is not created"
    );
    let e = fails(&["wipe", s(&f), "--method", "zeroout"]);
    assert!(e.contains("block device"), "{e}");
    assert!(
        std::fs::read(&f).unwrap().iter().all(|b| *b == 1),
        "refused wipes write nothing"
    );
}

#[test]
fn loop_device_wipes_and_next_tenant_reads_zeros() {
    require_root!();
    require_tool!("losetup");
    for method in ["auto", "zeroout", "write", "zero-range", "punch"] {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("pv");
        std::fs::write(&backing, vec![0x5Cu8; (32 * MIB) as usize]).unwrap();
        let lo = LoopDev::new(&backing, false);
        // "Volume" A lives at [4 MiB, 20 MiB) of the device: fill, then delete with a wipe.
        fill_pattern(&lo.dev, 4 * MIB, 16 * MIB, 0xA1);
        let out = run(&[
            "wipe",
            s(&lo.dev),
            "--offset",
            "4M",
            "--length",
            "16M",
            "--method",
            method,
            "--verify",
            "sample",
            "--json",
        ]);
        if method == "punch" || method == "zero-range" {
            // fallocate on a loop device is allowed to be unsupported: then it must fail clearly.
            if !out.status.success() {
                let e = String::from_utf8_lossy(&out.stderr);
                assert!(e.contains("not supported"), "{method}: {e}");
                continue;
            }
        }
        assert!(
            out.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The next tenant: a new volume over [2 MiB, 22 MiB) read through a fresh descriptor,
        // and through the backing file (what the storage really holds).
        let fresh = read_range(&lo.dev, 4 * MIB, 16 * MIB);
        assert!(
            all_zero(&fresh),
            "{method}: old data readable by the next tenant"
        );
        assert!(
            all_zero(&read_range(&backing, 4 * MIB, 16 * MIB)),
            "{method}: backing"
        );
        // Outside the range: untouched.
        assert!(read_range(&lo.dev, 0, 4 * MIB).iter().all(|b| *b == 0x5C));
        assert!(read_range(&lo.dev, 20 * MIB, 12 * MIB)
            .iter()
            .all(|b| *b == 0x5C));
    }
}

#[test]
fn read_only_and_mounted_devices_are_refused() {
    require_root!();
    require_tool!("losetup", "mkfs.ext4", "mount");
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("ro");
    std::fs::write(&backing, vec![9u8; (16 * MIB) as usize]).unwrap();
    {
        let lo = LoopDev::new(&backing, true);
        let e = fails(&["wipe", s(&lo.dev)]);
        assert!(e.contains("Read-only") || e.contains("Permission"), "{e}");
        assert!(read_range(&lo.dev, 0, 16 * MIB).iter().all(|b| *b == 9));
    }
    assert!(std::fs::read(&backing).unwrap().iter().all(|b| *b == 9));
    let fsimg = dir.path().join("fs");
    std::fs::File::create(&fsimg)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    let lo = LoopDev::new(&fsimg, false);
    // No lazy inode-table or journal init: nothing writes to the device in the background
    // while it is mounted, so its bytes can be compared before and after the refused wipe.
    assert!(std::process::Command::new("mkfs.ext4")
        .args(["-q", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(&lo.dev)
        .status()
        .unwrap()
        .success());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(std::process::Command::new("mount")
        .arg(&lo.dev)
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let _m = Mount(mnt.clone());
    // A file on the mounted filesystem, flushed; then the device's bytes as they are.
    let payload: Vec<u8> = (0..MIB as usize).map(|i| (i % 253) as u8).collect();
    let file = mnt.join("payload");
    let mut f = std::fs::File::create(&file).unwrap();
    f.write_all(&payload).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert!(std::process::Command::new("sync")
        .status()
        .unwrap()
        .success());
    let before = read_range(&lo.dev, 0, 32 * MIB);
    assert!(!all_zero(&before));
    let e = fails(&["wipe", s(&lo.dev)]);
    assert!(e.contains("in use"), "{e}");
    // The mounted device itself is untouched, byte for byte, and its file reads back.
    let after = read_range(&lo.dev, 0, 32 * MIB);
    assert!(
        before == after,
        "the refused wipe changed the mounted device at offset {:?}",
        before.iter().zip(&after).position(|(a, b)| a != b)
    );
    assert_eq!(std::fs::read(&file).unwrap(), payload);
}
