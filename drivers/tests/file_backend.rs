//! The file backend end to end, no root: lifecycle, crash recovery, concurrency, bad input,
//! Cinder's stats keys; reflinks on an xfs loop mount (root).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ember_drivers::file::FileDriver;
use ember_drivers::stats::{POOL_KEYS, TOP_LEVEL_KEYS};
use ember_drivers::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn driver(root: &Path) -> FileDriver {
    let d = FileDriver::new(BackendConfig::file("t", root)).unwrap();
    d.do_setup().unwrap();
    d.check_for_setup_error().unwrap();
    d
}

/// Writes `pattern` bytes at each offset of a sparse raw image of `len` bytes.
fn make_image(path: &Path, len: u64, at: &[(u64, u8)]) {
    let mut f = File::create(path).unwrap();
    f.set_len(len).unwrap();
    for &(off, b) in at {
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&vec![b; MIB as usize]).unwrap();
    }
}

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact(&mut b).unwrap();
    b
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

fn raw(path: PathBuf) -> ImageFile {
    ImageFile {
        path,
        meta: ImageMeta::raw(),
    }
}

#[test]
fn full_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(&tmp.path().join("vols"));
    let vol = Volume::new(1, Some("db")).unwrap();
    assert_eq!(d.create_volume(&vol).unwrap(), None);
    let data = d.data_path(&vol.name);
    assert_eq!(fs::metadata(&data).unwrap().len(), GIB);
    assert!(allocated(&data) < MIB, "a new volume is sparse");
    assert!(matches!(
        d.create_volume(&vol).unwrap_err(),
        DriverError::AlreadyExists { .. }
    ));

    // Write an image.
    let img = tmp.path().join("img.raw");
    make_image(&img, 64 * MIB, &[(0, 0xa1), (40 * MIB, 0xb2)]);
    d.copy_image_to_volume(&vol, &raw(img.clone())).unwrap();
    assert_eq!(read_at(&data, 40 * MIB, 4), vec![0xb2; 4]);
    assert_eq!(read_at(&data, 20 * MIB, 4), vec![0; 4]);

    // Snapshot, then change the volume.
    let snap = Snapshot::new(&vol, Some("before")).unwrap();
    d.create_snapshot(&snap).unwrap();
    let img2 = tmp.path().join("img2.raw");
    make_image(&img2, 2 * MIB, &[(0, 0xcc)]);
    d.copy_image_to_volume(&vol, &raw(img2)).unwrap();
    assert_eq!(read_at(&data, 0, 4), vec![0xcc; 4]);
    assert_eq!(d.list_snapshots().unwrap(), vec![snap.clone()]);

    // Clone and volume from snapshot (bigger), both sparse.
    let clone = Volume::new(1, Some("db-clone")).unwrap();
    d.create_cloned_volume(&clone, &vol).unwrap();
    let cdata = d.data_path(&clone.name);
    assert_eq!(read_at(&cdata, 0, 4), vec![0xcc; 4]);
    assert_eq!(read_at(&cdata, 40 * MIB, 4), vec![0xb2; 4]);
    assert!(allocated(&cdata) < 16 * MIB, "clone keeps holes");
    let from = Volume::new(2, None).unwrap();
    d.create_volume_from_snapshot(&from, &snap).unwrap();
    let fdata = d.data_path(&from.name);
    assert_eq!(fs::metadata(&fdata).unwrap().len(), 2 * GIB);
    assert_eq!(read_at(&fdata, 0, 4), vec![0xa1; 4]);
    let small = Volume::new(1, None).unwrap();
    let big_snap_vol = Volume::new(3, None).unwrap();
    d.create_volume(&big_snap_vol).unwrap();
    let big_snap = Snapshot::new(&big_snap_vol, None).unwrap();
    d.create_snapshot(&big_snap).unwrap();
    assert_eq!(
        d.create_volume_from_snapshot(&small, &big_snap)
            .unwrap_err()
            .category(),
        Category::InvalidInput
    );

    // Extend, then revert: data back to the snapshot, size kept.
    d.extend_volume(&vol, 2).unwrap();
    assert_eq!(fs::metadata(&data).unwrap().len(), 2 * GIB);
    assert!(d.extend_volume(&vol, 1).is_err(), "no shrinking");
    d.revert_to_snapshot(
        &Volume {
            size: 2,
            ..vol.clone()
        },
        &snap,
    )
    .unwrap();
    let data = d.data_path(&vol.name);
    assert_eq!(read_at(&data, 0, 4), vec![0xa1; 4]);
    assert_eq!(fs::metadata(&data).unwrap().len(), 2 * GIB);

    // Download the volume as a raw image and compare.
    let out = tmp.path().join("out.raw");
    d.copy_volume_to_image(&vol, &raw(out.clone())).unwrap();
    assert_eq!(fs::metadata(&out).unwrap().len(), 2 * GIB);
    assert_eq!(read_at(&out, 40 * MIB, 4), vec![0xb2; 4]);
    assert!(allocated(&out) < 16 * MIB);
    assert!(
        d.copy_volume_to_image(&vol, &raw(out.clone())).is_err(),
        "never overwrites an existing image"
    );

    // Listing and names.
    let names: Vec<_> = d
        .list_volumes()
        .unwrap()
        .into_iter()
        .map(|v| v.label().to_owned())
        .collect();
    assert!(names.contains(&"db".to_owned()) && names.contains(&"db-clone".to_owned()));

    // Delete: busy with snapshots; then gone; then gone again is fine.
    let e = d.delete_volume(&vol).unwrap_err();
    assert_eq!(e.category(), Category::VolumeIsBusy, "{e}");
    d.delete_snapshot(&snap).unwrap();
    d.delete_snapshot(&snap).unwrap();
    d.delete_volume(&vol).unwrap();
    assert!(!data.exists());
    d.delete_volume(&vol).unwrap();
    for v in [&clone, &from] {
        d.delete_volume(v).unwrap();
    }
    d.delete_snapshot(&big_snap).unwrap();
    d.delete_volume(&big_snap_vol).unwrap();
    assert!(d.list_volumes().unwrap().is_empty());
    assert!(d.list_snapshots().unwrap().is_empty());
}

#[test]
fn restart_reloads_and_crash_leftovers_are_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("vols");
    let d = driver(&root);
    let keep = Volume::new(1, Some("keep")).unwrap();
    d.create_volume(&keep).unwrap();
    drop(d);

    // A crash mid-create: record `creating` with a partial data file.
    let half = Volume::new(1, Some("half")).unwrap();
    let rec = serde_json::json!({"volume": half, "status": "creating", "attachments": []});
    fs::write(
        root.join("meta").join(format!("{}.json", half.name)),
        rec.to_string(),
    )
    .unwrap();
    fs::write(
        root.join("data").join(format!("{}.raw", half.name)),
        b"partial",
    )
    .unwrap();
    // A crash mid-delete.
    let gone = Volume::new(1, Some("gone")).unwrap();
    let rec = serde_json::json!({"volume": gone, "status": "deleting", "attachments": []});
    fs::write(
        root.join("meta").join(format!("{}.json", gone.name)),
        rec.to_string(),
    )
    .unwrap();
    fs::write(root.join("data").join(format!("{}.raw", gone.name)), b"old").unwrap();
    // A process killed after removing a record but before releasing (and removing) its lock.
    let orphan = Volume::new(1, Some("orphan")).unwrap();
    fs::write(
        root.join("locks").join(format!("{}.lock", orphan.name)),
        b"",
    )
    .unwrap();
    // A metadata write that never reached its rename.
    fs::write(
        root.join("meta").join(".tmp-volume-x.json.1.2"),
        b"{garbage",
    )
    .unwrap();

    let d = FileDriver::new(BackendConfig::file("t", &root)).unwrap();
    // Before recovery the half volume is not listed (not available).
    let listed: Vec<_> = d
        .list_volumes()
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(listed, vec![keep.id]);
    d.do_setup().unwrap();
    assert_eq!(d.list_volumes().unwrap(), vec![keep.clone()]);
    let names_in = |dir: &str| -> Vec<String> {
        fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    assert_eq!(
        names_in("meta"),
        vec![format!("{}.json", keep.name)],
        "leftovers removed"
    );
    assert!(!root
        .join("data")
        .join(format!("{}.raw", half.name))
        .exists());
    assert!(!root
        .join("data")
        .join(format!("{}.raw", gone.name))
        .exists());
    // Only the live volume keeps a lock file.
    assert_eq!(
        names_in("locks"),
        vec![format!("{}.lock", keep.name)],
        "stale locks removed"
    );
    // The half-created id can be created for real now.
    d.create_volume(&half).unwrap();
}

#[test]
fn concurrent_operations_on_different_volumes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Arc::new(driver(&tmp.path().join("vols")));
    let img = tmp.path().join("img.raw");
    make_image(&img, 8 * MIB, &[(0, 0x5a), (4 * MIB, 0x6b)]);
    let mut threads = Vec::new();
    for i in 0..6 {
        let d = d.clone();
        let img = img.clone();
        threads.push(std::thread::spawn(move || {
            let v = Volume::new(1, Some(&format!("v{i}"))).unwrap();
            d.create_volume(&v).unwrap();
            d.copy_image_to_volume(&v, &raw(img)).unwrap();
            let s = Snapshot::new(&v, None).unwrap();
            d.create_snapshot(&s).unwrap();
            let c = Volume::new(1, Some(&format!("c{i}"))).unwrap();
            d.create_cloned_volume(&c, &v).unwrap();
            d.extend_volume(&c, 2).unwrap();
            assert_eq!(read_at(&d.data_path(&c.name), 4 * MIB, 2), vec![0x6b; 2]);
            d.delete_snapshot(&s).unwrap();
            d.delete_volume(&v).unwrap();
            c
        }));
    }
    let clones: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut listed: Vec<_> = d
        .list_volumes()
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    let mut want: Vec<_> = clones.iter().map(|c| c.id).collect();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);
    assert!(d.list_volumes().unwrap().iter().all(|v| v.size == 2));
}

#[test]
fn bad_names_and_sizes_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("vols");
    let d = driver(&root);
    for bad in ["../x", "-rf", "a b", "a;rm", "a\nb", "", "x/y"] {
        assert!(Volume::new(1, Some(bad)).is_err(), "{bad:?}");
    }
    assert!(Volume::new(0, None).is_err());
    let mut v = Volume::new(1, None).unwrap();
    v.name = "volume-../../etc/passwd".into();
    assert_eq!(
        d.create_volume(&v).unwrap_err().category(),
        Category::InvalidInput
    );
    let mut v = Volume::new(1, None).unwrap();
    v.size = 0;
    assert_eq!(
        d.create_volume(&v).unwrap_err().category(),
        Category::InvalidInput
    );
    let mut v = Volume::new(1, None).unwrap();
    v.display_name = Some("$(reboot)".into());
    assert_eq!(
        d.create_volume(&v).unwrap_err().category(),
        Category::InvalidInput
    );
    let v = Volume::new(1, None).unwrap();
    let mut s = Snapshot::new(&v, None).unwrap();
    s.volume_name = "volume-nope".into();
    assert!(d.create_snapshot(&s).is_err());
    assert_eq!(fs::read_dir(root.join("data")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.join("meta")).unwrap().count(), 0);

    // Images: a qcow2 header claimed raw, an image bigger than the volume.
    let v = Volume::new(1, None).unwrap();
    d.create_volume(&v).unwrap();
    let q = tmp.path().join("q.raw");
    fs::write(&q, b"QFI\xfb\0\0\0\x03rest-of-header").unwrap();
    assert_eq!(
        d.copy_image_to_volume(&v, &raw(q)).unwrap_err().category(),
        Category::ImageUnacceptable
    );
    let big = tmp.path().join("big.raw");
    File::create(&big).unwrap().set_len(GIB + 1).unwrap();
    assert_eq!(
        d.copy_image_to_volume(&v, &raw(big))
            .unwrap_err()
            .category(),
        Category::ImageUnacceptable
    );
    let q = ImageFile {
        path: tmp.path().join("x.vhd"),
        meta: ImageMeta {
            disk_format: "vhd".into(),
            container_format: "bare".into(),
        },
    };
    assert_eq!(
        d.copy_volume_to_image(&v, &q).unwrap_err().category(),
        Category::NotSupported
    );
    // A raw file declared qcow2 is refused (format mismatch), and so is QED.
    let r = tmp.path().join("r.img");
    File::create(&r).unwrap().set_len(MIB).unwrap();
    let claimed = ImageFile {
        path: r,
        meta: ImageMeta {
            disk_format: "qcow2".into(),
            container_format: "bare".into(),
        },
    };
    assert_eq!(
        d.copy_image_to_volume(&v, &claimed).unwrap_err().category(),
        Category::ImageUnacceptable
    );
}

fn qcow2(path: PathBuf) -> ImageFile {
    ImageFile {
        path,
        meta: ImageMeta {
            disk_format: "qcow2".into(),
            container_format: "bare".into(),
        },
    }
}

#[test]
fn qcow2_round_trip_through_the_engine_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(&tmp.path().join("vols"));
    let v = Volume::new(1, None).unwrap();
    d.create_volume(&v).unwrap();
    let img = tmp.path().join("img.raw");
    make_image(&img, 32 * MIB, &[(0, 0x42), (17 * MIB, 0x43)]);
    d.copy_image_to_volume(&v, &raw(img)).unwrap();
    let q = tmp.path().join("out.qcow2");
    d.copy_volume_to_image(&v, &qcow2(q.clone())).unwrap();
    assert!(
        allocated(&q) < 8 * MIB,
        "qcow2 output keeps only data clusters"
    );
    if let Some(qi) = ember_engine::test_util::find_tool("qemu-img") {
        let out = Command::new(qi)
            .args(["info", "--output=json"])
            .arg(&q)
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["virtual-size"], GIB);
    }
    // qcow2 -> a new, bigger volume that held other data: the image's holes become zeros.
    let w = Volume::new(2, None).unwrap();
    d.create_volume(&w).unwrap();
    let junk = tmp.path().join("junk.raw");
    make_image(&junk, 64 * MIB, &[(5 * MIB, 0xff), (40 * MIB, 0xfe)]);
    d.copy_image_to_volume(&w, &raw(junk)).unwrap();
    d.copy_image_to_volume(&w, &qcow2(q.clone())).unwrap();
    let wd = d.data_path(&w.name);
    assert_eq!(read_at(&wd, 0, 2), vec![0x42; 2]);
    assert_eq!(read_at(&wd, 17 * MIB, 2), vec![0x43; 2]);
    assert_eq!(read_at(&wd, 5 * MIB, 2), vec![0; 2]);
    assert_eq!(read_at(&wd, 40 * MIB, 2), vec![0; 2]);
    // A qcow2 bigger than the volume is refused before any write.
    let big = Volume::new(2, None).unwrap();
    d.create_volume(&big).unwrap();
    let q2 = tmp.path().join("big.qcow2");
    d.copy_volume_to_image(&big, &qcow2(q2.clone())).unwrap();
    let e = d.copy_image_to_volume(&v, &qcow2(q2)).unwrap_err();
    assert_eq!(e.category(), Category::ImageUnacceptable, "{e}");
    assert!(e.to_string().contains("doesn't fit"), "{e}");
    // No staged files are left behind.
    let staging = tmp.path().join("vols/staging");
    assert!(!staging.exists() || fs::read_dir(staging).unwrap().count() == 0);
}

#[test]
fn stats_keys_are_exactly_cinders() {
    let tmp = tempfile::tempdir().unwrap();
    let d = driver(&tmp.path().join("vols"));
    let v = Volume::new(3, None).unwrap();
    d.create_volume(&v).unwrap();
    let s = d.get_volume_stats(true).unwrap();
    let j = serde_json::to_value(&s).unwrap();
    let mut keys: Vec<_> = j.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    let mut want: Vec<_> = TOP_LEVEL_KEYS.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(keys, want);
    let mut pk: Vec<_> = j["pools"][0].as_object().unwrap().keys().cloned().collect();
    pk.sort();
    let mut pw: Vec<_> = POOL_KEYS.iter().map(|k| k.to_string()).collect();
    pw.sort();
    assert_eq!(pk, pw);
    assert_eq!(j["QoS_support"], false);
    assert_eq!(j["sparse_copy_volume"], true);
    assert_eq!(j["provisioned_capacity_gb"], 3.0);
    assert_eq!(j["total_volumes"], 1);
    assert_eq!(j["volume_backend_name"], "t");
    assert!(j["total_capacity_gb"].as_f64().unwrap() > 0.0);
    assert!(j["location_info"]
        .as_str()
        .unwrap()
        .starts_with("FileDriver:"));
}

#[test]
fn manage_unmanage_and_attachments() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("vols");
    let d = driver(&root);
    // An existing file dropped into the data folder.
    let legacy = root.join("data").join("legacy.img");
    make_image(&legacy, GIB + MIB, &[(0, 0x77)]);
    let m = d.get_manageable_volumes().unwrap();
    assert_eq!(m.len(), 1);
    assert!(m[0].safe_to_manage);
    assert_eq!(m[0].size, 2);
    let v = Volume::new(1, Some("legacy")).unwrap();
    assert_eq!(
        d.manage_existing_get_size(&v, &ExistingRef::source_name("legacy.img"))
            .unwrap(),
        2
    );
    for bad in [
        ExistingRef::default(),
        ExistingRef::source_name("../etc/passwd"),
        ExistingRef::source_name("nope"),
    ] {
        assert_eq!(
            d.manage_existing(&v, &bad).unwrap_err().category(),
            Category::ManageExistingInvalidReference
        );
    }
    d.manage_existing(&v, &ExistingRef::source_name("legacy.img"))
        .unwrap();
    let listed = d.list_volumes().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 2);
    assert_eq!(read_at(&d.data_path(&v.name), 0, 2), vec![0x77; 2]);
    let again = Volume::new(1, None).unwrap();
    assert_eq!(
        d.manage_existing(&again, &ExistingRef::source_name(format!("{}.raw", v.name)))
            .unwrap_err()
            .category(),
        Category::ManageExistingAlreadyManaged
    );
    let m = d.get_manageable_volumes().unwrap();
    assert_eq!(m[0].reason_not_safe.as_deref(), Some("already managed"));

    // Attached volumes cannot be deleted.
    let v2 = Volume {
        size: 2,
        ..v.clone()
    };
    let a = Attachment {
        host_name: Some("h1".into()),
        ..Default::default()
    };
    d.attach_volume(&v2, &a).unwrap();
    assert_eq!(
        d.delete_volume(&v2).unwrap_err().category(),
        Category::VolumeIsBusy
    );
    d.detach_volume(&v2, &a).unwrap();

    d.unmanage(&v2).unwrap();
    assert!(d.list_volumes().unwrap().is_empty());
    assert!(d.data_path(&v.name).exists(), "unmanage keeps the data");
    assert!(d.get_manageable_volumes().unwrap()[0].safe_to_manage);

    // No target configured: exports say so clearly.
    let e = d.create_export(&v2).unwrap_err();
    assert_eq!(e.category(), Category::NotSupported);
    assert!(e.to_string().contains("no iSCSI target"), "{e}");
}

#[test]
fn missing_folder_gives_a_clear_setup_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = FileDriver::new(BackendConfig::file("t", tmp.path().join("nope"))).unwrap();
    let e = d.check_for_setup_error().unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
}

/// Unmounts and detaches on drop.
struct XfsMount {
    dir: PathBuf,
    _img: tempfile::TempDir,
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        // io_uring releases its file references asynchronously: retry, then detach lazily.
        for _ in 0..50 {
            if Command::new("umount")
                .arg(&self.dir)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                let _ = fs::remove_dir(&self.dir);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn mount_xfs() -> Option<XfsMount> {
    let img_dir = tempfile::tempdir().ok()?;
    let img = img_dir.path().join("xfs.img");
    File::create(&img).ok()?.set_len(1 << 30).ok()?;
    let ok = Command::new("mkfs.xfs")
        .args(["-q", "-m", "reflink=1", "-f"])
        .arg(&img)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let dir = img_dir.path().join("mnt");
    fs::create_dir(&dir).ok()?;
    let ok = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&dir)
        .status()
        .ok()?
        .success();
    ok.then_some(XfsMount { dir, _img: img_dir })
}

#[test]
fn snapshots_and_clones_are_reflinks_on_xfs() {
    ember_engine::require_root!();
    ember_engine::require_tool!("mkfs.xfs");
    let Some(m) = mount_xfs() else {
        ember_engine::test_util::skip(module_path!(), "cannot mount an xfs loop file here");
        return;
    };
    let d = driver(&m.dir.join("vols"));
    let v = Volume::new(1, None).unwrap();
    d.create_volume(&v).unwrap();
    let img = m.dir.join("img.raw");
    let mut f = File::create(&img).unwrap();
    for i in 0..64u8 {
        f.write_all(&vec![i + 1; MIB as usize]).unwrap();
    }
    drop(f);
    d.copy_image_to_volume(&v, &raw(img.clone())).unwrap();
    fs::remove_file(&img).unwrap();
    let free = |p: &Path| {
        let s = nix::sys::statvfs::statvfs(p).unwrap();
        s.blocks_free() * s.fragment_size()
    };
    Command::new("sync").status().unwrap();
    let before = free(&m.dir);
    let s = Snapshot::new(&v, None).unwrap();
    d.create_snapshot(&s).unwrap();
    let c = Volume::new(1, None).unwrap();
    d.create_cloned_volume(&c, &v).unwrap();
    Command::new("sync").status().unwrap();
    let after = free(&m.dir);
    assert!(
        before.saturating_sub(after) < 16 * MIB,
        "snapshot + clone of 64 MiB used {} bytes: not reflinked",
        before - after
    );
    assert_eq!(read_at(&d.data_path(&c.name), 63 * MIB, 2), vec![64; 2]);
    // Writing the origin does not change the snapshot (copy on write).
    let img2 = m.dir.join("img2.raw");
    make_image(&img2, MIB, &[(0, 0xee)]);
    d.copy_image_to_volume(&v, &raw(img2)).unwrap();
    assert_eq!(read_at(&d.data_path(&s.name), 0, 2), vec![1; 2]);
    d.revert_to_snapshot(&v, &s).unwrap();
    assert_eq!(read_at(&d.data_path(&v.name), 0, 2), vec![1; 2]);
}
