//! The LVM backend end to end as root: real lvm2 on loop-device PVs with a private
//! LVM_SYSTEM_DIR (activation disabled, a device filter on the test loop devices). Where
//! device-mapper is absent (this machine) every data operation runs on the LVs' PV byte ranges.
//!
//! The oracle of every read is lvm2's own report, parsed here (`Vg::lv_extents`: extent size,
//! `pe_start`, segment PE ranges), never the driver's mapping, which must agree with it; after
//! the writes `vgck` and `pvck` must find the metadata intact (`Vg::check_metadata`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

mod common;

use common::{read_lv, PvRange, Vg};
use ember_drivers::lvm::LvmDriver;
use ember_drivers::stats::{POOL_KEYS, TOP_LEVEL_KEYS};
use ember_drivers::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn ready() -> bool {
    if !ember_engine::test_util::is_root() {
        ember_engine::test_util::skip("lvm_backend", "needs root");
        return false;
    }
    for t in ["lvcreate", "losetup"] {
        if ember_engine::test_util::find_tool(t).is_none() {
            ember_engine::test_util::skip("lvm_backend", &format!("{t} is not installed"));
            return false;
        }
    }
    true
}

/// Where LV `name` lives according to lvm2 itself (see [`Vg::lv_extents`]): the oracle of
/// every read below. The driver's own LV -> PV mapping must agree with it.
fn lv_ranges(vg: &Vg, d: &LvmDriver, name: &str) -> Vec<PvRange> {
    let want = vg.lv_extents(name);
    let out = d
        .runner()
        .run(
            "test lvs",
            &[
                "lvs",
                "--segments",
                "-O",
                ember_drivers::lvm::report::LVS_ORDER,
                "--reportformat",
                "json",
                "--units",
                "b",
                "--nosuffix",
                "-o",
                ember_drivers::lvm::report::LVS_FIELDS,
                &vg.name,
            ],
        )
        .unwrap();
    let lv = ember_drivers::lvm::report::parse_lvs(&out.stdout)
        .unwrap()
        .into_iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no LV {name}"));
    let got: Vec<PvRange> = d
        .layout(&lv)
        .unwrap()
        .into_iter()
        .map(|s| PvRange {
            pv: s.path,
            offset: s.offset,
            len: s.len,
        })
        .collect();
    assert_eq!(
        got, want,
        "the driver's layout of {name} differs from lvm2's"
    );
    want
}

fn image(dir: &Path, name: &str, len: u64, at: &[(u64, u8)]) -> ImageFile {
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap();
    f.set_len(len).unwrap();
    for &(off, b) in at {
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&vec![b; MIB as usize]).unwrap();
    }
    ImageFile {
        path,
        meta: ImageMeta::raw(),
    }
}

#[test]
fn lifecycle_metadata_only() {
    if !ready() {
        return;
    }
    let vg = Vg::new(3, 3);
    let d = vg.driver();
    let tmp = vg.dir.path();

    // Stats from the VG, in GiB.
    let s = serde_json::to_value(d.get_volume_stats(true).unwrap()).unwrap();
    for k in TOP_LEVEL_KEYS {
        assert!(s.get(*k).is_some(), "missing {k}");
    }
    for k in POOL_KEYS {
        assert!(s["pools"][0].get(*k).is_some(), "missing pool key {k}");
    }
    let vgsz = 3.0 * (3.0 - 4.0 / 1024.0); // each PV loses its first extent to metadata
    assert!(
        (s["total_capacity_gb"].as_f64().unwrap() - vgsz).abs() < 0.011,
        "{s}"
    );
    assert_eq!(s["free_capacity_gb"], s["total_capacity_gb"]);
    assert_eq!(s["provisioned_capacity_gb"], 0.0);
    assert_eq!(s["vendor_name"], "Open Source");
    assert_eq!(s["driver_version"], "3.0.0");
    assert_eq!(s["QoS_support"], false);
    assert_eq!(s["multiattach"], true);
    assert_eq!(s["thick_provisioning_support"], true);
    assert_eq!(
        s["sparse_copy_volume"], false,
        "thick destinations are not known zero"
    );
    let loc = s["location_info"].as_str().unwrap();
    assert!(loc.starts_with("LVMVolumeDriver:"), "{loc}");
    assert!(loc.ends_with(&format!(":{}:default:0", vg.name)), "{loc}");
    if !d.uses_device_mapper() {
        assert_eq!(s["ember_snapshot_type"], "full-copy");
        assert_eq!(s["ember_data_path"], "pv-extents");
    }

    let vol = Volume::new(1, Some("db")).unwrap();
    d.create_volume(&vol).unwrap();
    let img = image(tmp, "img.raw", 64 * MIB, &[(0, 0xa1), (50 * MIB, 0xb2)]);
    d.copy_image_to_volume(&vol, &img).unwrap();
    let sp = lv_ranges(&vg, &d, &vol.name);
    // The whole image, byte for byte, where lvm2 says the LV is (a wrong pe_start or extent
    // arithmetic would shift or split it); and lvm2's metadata survived the writes.
    let want = std::fs::read(&img.path).unwrap();
    assert!(
        read_lv(&sp, 0, want.len()) == want,
        "LV bytes differ from the image"
    );
    assert_eq!(read_lv(&sp, 50 * MIB, 3), vec![0xb2; 3]);
    assert_eq!(read_lv(&sp, 10 * MIB, 3), vec![0; 3]);
    vg.check_metadata();

    let s = serde_json::to_value(d.get_volume_stats(true).unwrap()).unwrap();
    assert_eq!(s["provisioned_capacity_gb"], 1.0);
    assert_eq!(
        s["free_capacity_gb"].as_f64().unwrap(),
        ((vgsz - 1.0) * 100.0f64).round() / 100.0
    );
    assert_eq!(s["total_volumes"], 1);

    // Snapshot (full copy here), then overwrite the start of the volume.
    let snap = Snapshot::new(&vol, Some("snap1")).unwrap();
    d.create_snapshot(&snap).unwrap();
    let snaps = d.list_snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].id, snap.id);
    assert_eq!(snaps[0].volume_id, vol.id);
    assert_eq!(snaps[0].display_name.as_deref(), Some("snap1"));
    let img2 = image(tmp, "img2.raw", MIB, &[(0, 0xcc)]);
    d.copy_image_to_volume(&vol, &img2).unwrap();
    let sp = lv_ranges(&vg, &d, &vol.name);
    assert_eq!(read_lv(&sp, 0, 2), vec![0xcc; 2]);
    // The volume reads as the new image followed by zeros: nothing of the first image is left.
    assert_eq!(read_lv(&sp, 50 * MIB, 2), vec![0; 2]);
    let ssp = lv_ranges(&vg, &d, &format!("_{}", snap.name));
    assert_eq!(read_lv(&ssp, 0, 2), vec![0xa1; 2]);

    // Delete with a snapshot: busy.
    assert_eq!(
        d.delete_volume(&vol).unwrap_err().category(),
        Category::VolumeIsBusy
    );

    // Clone (bigger) and from snapshot; holes in the source read as zeros in the destination.
    let clone = Volume::new(2, Some("db-clone")).unwrap();
    d.create_cloned_volume(&clone, &vol).unwrap();
    let csp = lv_ranges(&vg, &d, &clone.name);
    assert_eq!(read_lv(&csp, 0, 2), vec![0xcc; 2]);
    assert_eq!(read_lv(&csp, 50 * MIB, 2), vec![0; 2]);
    assert_eq!(read_lv(&csp, GIB + MIB, 2), vec![0; 2]);
    let from = Volume::new(1, None).unwrap();
    d.create_volume_from_snapshot(&from, &snap).unwrap();
    assert_eq!(
        read_lv(&lv_ranges(&vg, &d, &from.name), 0, 2),
        vec![0xa1; 2]
    );

    // Extend keeps the data (the LV may gain a segment on the other PV).
    d.extend_volume(&vol, 2).unwrap();
    let sp = lv_ranges(&vg, &d, &vol.name);
    assert_eq!(sp.iter().map(|r| r.len).sum::<u64>(), 2 * GIB);
    assert_eq!(read_lv(&sp, 0, 2), vec![0xcc; 2]);
    assert!(d.extend_volume(&vol, 1).is_err());

    // Revert by copy: the start is back, the extended tail reads as zeros.
    let vol3 = Volume {
        size: 2,
        ..vol.clone()
    };
    d.revert_to_snapshot(&vol3, &snap).unwrap();
    let sp = lv_ranges(&vg, &d, &vol.name);
    assert_eq!(read_lv(&sp, 0, 2), vec![0xa1; 2]);
    assert_eq!(read_lv(&sp, GIB + 10, 2), vec![0; 2]);

    // Download.
    let out = ImageFile {
        path: tmp.join("out.raw"),
        meta: ImageMeta::raw(),
    };
    d.copy_volume_to_image(&vol3, &out).unwrap();
    let mut f = File::open(&out.path).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 2 * GIB);
    f.seek(SeekFrom::Start(50 * MIB)).unwrap();
    let mut b = [0u8; 2];
    f.read_exact(&mut b).unwrap();
    assert_eq!(b, [0xb2; 2]);
    let mut head = vec![0u8; (64 * MIB) as usize];
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_exact(&mut head).unwrap();
    assert!(
        head == read_lv(&lv_ranges(&vg, &d, &vol.name), 0, head.len()),
        "the download differs from the LV's bytes"
    );
    vg.check_metadata();

    // Listing.
    let mut names: Vec<_> = d
        .list_volumes()
        .unwrap()
        .into_iter()
        .map(|v| (v.label().to_owned(), v.size))
        .collect();
    names.sort();
    assert!(names.contains(&("db".into(), 2)) && names.contains(&("db-clone".into(), 2)));
    assert!(!d.clone_image(&vol3, &img).unwrap().cloned);

    // Tear down: snapshot, volumes; deleting again succeeds.
    d.delete_snapshot(&snap).unwrap();
    d.delete_snapshot(&snap).unwrap();
    for v in [&vol3, &clone, &from] {
        d.delete_volume(v).unwrap();
        d.delete_volume(v).unwrap();
    }
    assert!(d.list_volumes().unwrap().is_empty());
    assert!(d.list_snapshots().unwrap().is_empty());
    vg.check_metadata();
}

/// create, fill, delete, create a new LV on the same extents, read it back: zeros. And the same
/// with `volume_clear = none` shows the old data, proving the check can see a leak.
#[test]
fn delete_wipes_so_no_data_leaks_into_the_next_lv() {
    if !ready() {
        return;
    }
    let vg = Vg::new(1, 3);
    let tmp = vg.dir.path().to_owned();
    let fill = image(
        &tmp,
        "fill.raw",
        GIB,
        &[(0, 0x11), (300 * MIB, 0x22), (GIB - MIB, 0x33)],
    );
    let probe = [(0u64, 0x11u8), (300 * MIB, 0x22), (GIB - MIB, 0x33)];

    for (clear, leaks) in [(VolumeClear::Zero, false), (VolumeClear::None, true)] {
        let mut cfg = vg.config();
        cfg.volume_clear = clear;
        let d = vg.driver_with(cfg);
        let a = Volume::new(1, None).unwrap();
        d.create_volume(&a).unwrap();
        d.copy_image_to_volume(&a, &fill).unwrap();
        let spa = lv_ranges(&vg, &d, &a.name);
        for (off, b) in probe {
            assert_eq!(read_lv(&spa, off + 65536, 1), vec![b]);
        }
        d.delete_volume(&a).unwrap();
        let b = Volume::new(1, None).unwrap();
        d.create_volume(&b).unwrap();
        let spb = lv_ranges(&vg, &d, &b.name);
        assert_eq!(spa, spb, "the new LV sits on the same extents");
        for (off, byte) in probe {
            let got = read_lv(&spb, off + 65536, 1)[0];
            if leaks {
                assert_eq!(got, byte, "volume_clear = none leaves the data (control)");
                if off == 0 {
                    // ... but a new LV's first 4 KiB are zeroed, as lvcreate -Zy does, so no
                    // old filesystem signature shows through.
                    assert!(read_lv(&spb, 0, 4096).iter().all(|&x| x == 0));
                    assert_eq!(read_lv(&spb, 4096, 1), vec![byte]);
                }
            } else {
                assert_eq!(got, 0, "data leaked at {off} after a zero-wipe delete");
            }
        }
        if !leaks {
            // Every byte of the new LV, not only the probes, where lvm2 puts it.
            for chunk in 0..GIB / (64 * MIB) {
                let b = read_lv(&spb, chunk * 64 * MIB, (64 * MIB) as usize);
                let nz = b.iter().position(|&x| x != 0);
                assert_eq!(nz, None, "data leaked in the {chunk}th 64 MiB after a wipe");
            }
        }
        d.delete_volume(&b).unwrap();
    }

    // A (full-copy) snapshot's extents are wiped on delete too.
    let d = vg.driver();
    let a = Volume::new(1, None).unwrap();
    d.create_volume(&a).unwrap();
    d.copy_image_to_volume(&a, &fill).unwrap();
    let snap = Snapshot::new(&a, None).unwrap();
    d.create_snapshot(&snap).unwrap();
    let sps = lv_ranges(&vg, &d, &format!("_{}", snap.name));
    assert_eq!(read_lv(&sps, 300 * MIB + 65536, 1), vec![0x22]);
    d.delete_snapshot(&snap).unwrap();
    let b = Volume::new(1, None).unwrap();
    d.create_volume(&b).unwrap();
    let spb = lv_ranges(&vg, &d, &b.name);
    assert_eq!(sps, spb, "the new LV sits on the snapshot's extents");
    for (off, _) in probe {
        assert_eq!(
            read_lv(&spb, off + 65536, 1),
            vec![0],
            "snapshot data leaked at {off}"
        );
    }
    d.delete_volume(&b).unwrap();
    d.delete_volume(&a).unwrap();

    // volume_clear_size = 1 MiB wipes only the first MiB.
    let mut cfg = vg.config();
    cfg.volume_clear_size = 1;
    let d = vg.driver_with(cfg);
    let a = Volume::new(1, None).unwrap();
    d.create_volume(&a).unwrap();
    d.copy_image_to_volume(&a, &fill).unwrap();
    d.delete_volume(&a).unwrap();
    let b = Volume::new(1, None).unwrap();
    d.create_volume(&b).unwrap();
    let spb = lv_ranges(&vg, &d, &b.name);
    assert!(read_lv(&spb, 0, MIB as usize).iter().all(|&x| x == 0));
    assert_eq!(read_lv(&spb, 300 * MIB + 10, 1), vec![0x22]);
    d.delete_volume(&b).unwrap();
    vg.check_metadata();
}

/// Asserts that `lv` reads zeros from `from` to its end (read in 64 MiB pieces).
fn assert_zero_from(lv: &[PvRange], from: u64, what: &str) {
    let len: u64 = lv.iter().map(|r| r.len).sum();
    let mut off = from;
    while off < len {
        let n = (64 * MIB).min(len - off);
        let b = read_lv(lv, off, n as usize);
        if let Some(i) = b.iter().position(|&x| x != 0) {
            panic!(
                "{what}: old bytes at {} (past the source's end {from})",
                off + i as u64
            );
        }
        off += n;
    }
}

/// Whether every range of `inner` lies inside a range of `outer`.
fn within(inner: &[PvRange], outer: &[PvRange]) -> bool {
    inner.iter().all(|i| {
        outer
            .iter()
            .any(|o| o.pv == i.pv && o.offset <= i.offset && i.offset + i.len <= o.offset + o.len)
    })
}

/// A volume written from a smaller image, a bigger clone and a bigger volume from a snapshot
/// read as their source followed by zeros, even on extents that still hold an older volume's
/// bytes (`volume_clear = none`, so its delete left them): nothing past the source's end shows
/// what the extents held.
#[test]
fn tails_past_the_source_read_zeros_on_old_extents() {
    if !ready() {
        return;
    }
    let vg = Vg::new(1, 8);
    let tmp = vg.dir.path().to_owned();
    let mut cfg = vg.config();
    cfg.volume_clear = VolumeClear::None;
    let d = vg.driver_with(cfg);
    // The old volume: 1 MiB of 0xee in every 64 MiB of 7 GiB, deleted without a wipe.
    let marks: Vec<(u64, u8)> = (0..7 * GIB / (64 * MIB))
        .map(|i| (i * 64 * MIB + 32 * MIB, 0xee))
        .collect();
    let old = Volume::new(7, None).unwrap();
    d.create_volume(&old).unwrap();
    d.copy_image_to_volume(&old, &image(&tmp, "old.raw", 7 * GIB, &marks))
        .unwrap();
    let dirty = lv_ranges(&vg, &d, &old.name);
    d.delete_volume(&old).unwrap();

    // A 16 MiB image into a new 1 GiB volume on those extents.
    let a = Volume::new(1, None).unwrap();
    d.create_volume(&a).unwrap();
    let sa = lv_ranges(&vg, &d, &a.name);
    assert!(within(&sa, &dirty));
    assert_eq!(
        read_lv(&sa, 32 * MIB, 1),
        vec![0xee],
        "a new thick LV shows the old bytes (control)"
    );
    let img = image(&tmp, "a.raw", 16 * MIB, &[(0, 0x61), (8 * MIB, 0x62)]);
    d.copy_image_to_volume(&a, &img).unwrap();
    assert!(read_lv(&sa, 0, (16 * MIB) as usize) == std::fs::read(&img.path).unwrap());
    assert_zero_from(&sa, 16 * MIB, "volume from image");

    // A 2 GiB clone of it, and a 2 GiB volume from its (full-copy) snapshot.
    let clone = Volume::new(2, None).unwrap();
    d.create_cloned_volume(&clone, &a).unwrap();
    let snap = Snapshot::new(&a, None).unwrap();
    d.create_snapshot(&snap).unwrap();
    let born = Volume::new(2, None).unwrap();
    d.create_volume_from_snapshot(&born, &snap).unwrap();
    for (v, what) in [
        (&clone, "bigger clone"),
        (&born, "bigger volume from snapshot"),
    ] {
        let sp = lv_ranges(&vg, &d, &v.name);
        assert!(within(&sp, &dirty), "{what} is not on the old extents");
        assert_eq!(read_lv(&sp, 8 * MIB, 2), vec![0x62; 2]);
        assert_zero_from(&sp, 16 * MIB, what);
    }
    d.delete_snapshot(&snap).unwrap();
    for v in [&clone, &born, &a] {
        d.delete_volume(v).unwrap();
    }
    vg.check_metadata();
}

#[test]
fn missing_vg_and_thin_without_dm_give_clear_setup_errors() {
    if !ready() {
        return;
    }
    let vg = Vg::new(1, 1);
    let mut cfg = vg.config();
    cfg.volume_group = Some("no-such-vg".into());
    let d = LvmDriver::new(cfg).unwrap();
    let e = d.check_for_setup_error().unwrap_err();
    assert_eq!(e.category(), Category::InvalidConfiguration);
    assert!(
        e.to_string().contains("\"no-such-vg\" does not exist"),
        "{e}"
    );
    // do_setup finds the VG missing through its listing of LVs, as clearly.
    let e = d.do_setup().unwrap_err();
    assert_eq!(e.category(), Category::NotFound, "{e}");
    assert!(
        e.to_string().contains("volume group no-such-vg not found"),
        "{e}"
    );

    let d = LvmDriver::new(vg.config()).unwrap();
    if !d.uses_device_mapper() {
        let mut cfg = vg.config();
        cfg.lvm_type = LvmType::Thin;
        let d = LvmDriver::new(cfg).unwrap();
        let e = d.check_for_setup_error().unwrap_err().to_string();
        assert!(e.contains("needs device-mapper"), "{e}");
    }
}

#[test]
fn bad_names_and_sizes_are_rejected_before_any_command() {
    if !ready() {
        return;
    }
    let vg = Vg::new(1, 1);
    let d = vg.driver();
    let before = d.runner().calls();
    let good = Volume::new(1, None).unwrap();
    let mut bad = Vec::new();
    for name in [
        "volume-../../x",
        "volume-; rm -rf /",
        "-volume-1",
        "volume-0b6c3a2e-2d1f-4b8e-9d6c-3f7a1e2b4c5d\n",
        "snapshot-0b6c3a2e-2d1f-4b8e-9d6c-3f7a1e2b4c5d",
    ] {
        bad.push(Volume {
            name: name.into(),
            ..good.clone()
        });
    }
    bad.push(Volume {
        size: 0,
        ..good.clone()
    });
    bad.push(Volume {
        size: u64::MAX,
        ..good.clone()
    });
    bad.push(Volume {
        display_name: Some("$(id)".into()),
        ..good.clone()
    });
    for v in &bad {
        assert_eq!(
            d.create_volume(v).unwrap_err().category(),
            Category::InvalidInput
        );
        assert_eq!(
            d.delete_volume(v).unwrap_err().category(),
            Category::InvalidInput
        );
        assert!(d.extend_volume(v, 2).is_err());
        assert!(d.create_cloned_volume(v, &good).is_err());
    }
    assert!(d.extend_volume(&good, 0).is_err());
    let mut s = Snapshot::new(&good, None).unwrap();
    s.name = "snapshot-x".into();
    assert!(d.create_snapshot(&s).is_err());
    assert!(d
        .manage_existing(&good, &ExistingRef::source_name("-x"))
        .is_err());
    assert!(d
        .manage_existing(&good, &ExistingRef::source_name("a/b"))
        .is_err());
    assert_eq!(d.runner().calls(), before, "a bad input reached lvm2");
}

#[test]
fn manage_existing_and_unmanage() {
    if !ready() {
        return;
    }
    let vg = Vg::new(1, 2);
    let d = vg.driver();
    let extra: &[&str] = if d.uses_device_mapper() {
        &[]
    } else {
        &["-an", "-Zn"]
    };
    let mut args = vec!["lvcreate", "-q"];
    args.extend(extra);
    args.extend(["-n", "legacy", "-L", "1100m", vg.name.as_str()]);
    vg.lvm(&args);

    let m = d.get_manageable_volumes().unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].reference.source_name.as_deref(), Some("legacy"));
    assert!(m[0].safe_to_manage);
    assert_eq!(m[0].size, 2, "1100 MiB rounds up to 2 GiB");
    let v = Volume::new(2, Some("legacy")).unwrap();
    let r = ExistingRef::source_name("legacy");
    assert_eq!(d.manage_existing_get_size(&v, &r).unwrap(), 2);
    assert_eq!(
        d.manage_existing(&v, &ExistingRef::default())
            .unwrap_err()
            .category(),
        Category::ManageExistingInvalidReference
    );
    d.manage_existing(&v, &r).unwrap();
    let listed = d.list_volumes().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, v.id);
    assert_eq!(listed[0].display_name.as_deref(), Some("legacy"));
    let other = Volume::new(2, None).unwrap();
    assert_eq!(
        d.manage_existing(&other, &ExistingRef::source_name(&v.name))
            .unwrap_err()
            .category(),
        Category::ManageExistingAlreadyManaged
    );
    let m = d.get_manageable_volumes().unwrap();
    assert_eq!(m[0].reason_not_safe.as_deref(), Some("already managed"));
    assert_eq!(m[0].cinder_id, Some(v.id));

    d.unmanage(&v).unwrap();
    assert!(d.list_volumes().unwrap().is_empty());
    assert!(d.get_manageable_volumes().unwrap()[0].safe_to_manage);
    // And it can be managed again under a new id.
    let again = Volume::new(2, None).unwrap();
    d.manage_existing(&again, &ExistingRef::source_name(&v.name))
        .unwrap();
    assert_eq!(d.list_volumes().unwrap()[0].id, again.id);

    // Attachments block delete.
    let a = Attachment {
        host_name: Some("h".into()),
        ..Default::default()
    };
    d.attach_volume(&again, &a).unwrap();
    assert_eq!(
        d.delete_volume(&again).unwrap_err().category(),
        Category::VolumeIsBusy
    );
    d.detach_volume(&again, &a).unwrap();
    d.delete_volume(&again).unwrap();
}

#[test]
fn concurrent_operations_on_different_volumes() {
    if !ready() {
        return;
    }
    let vg = Vg::new(1, 16);
    let mut cfg = vg.config();
    cfg.volume_clear = VolumeClear::None; // wipes have their own test; keep this one quick
    let d = Arc::new(vg.driver_with(cfg));
    let img = image(
        vg.dir.path(),
        "img.raw",
        8 * MIB,
        &[(0, 0x5a), (4 * MIB, 0x6b)],
    );
    let mut threads = Vec::new();
    for i in 0..4 {
        let d = d.clone();
        let img = img.clone();
        threads.push(std::thread::spawn(move || {
            let v = Volume::new(1, Some(&format!("v{i}"))).unwrap();
            d.create_volume(&v).unwrap();
            d.copy_image_to_volume(&v, &img).unwrap();
            let c = Volume::new(1, Some(&format!("c{i}"))).unwrap();
            d.create_cloned_volume(&c, &v).unwrap();
            d.extend_volume(&c, 2).unwrap();
            d.delete_volume(&v).unwrap();
            c
        }));
    }
    let clones: Vec<Volume> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for c in &clones {
        let sp = lv_ranges(&vg, &d, &c.name);
        assert_eq!(read_lv(&sp, 4 * MIB, 2), vec![0x6b; 2]);
    }
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
    vg.check_metadata();
}

#[test]
fn interrupted_create_is_rolled_back_by_setup() {
    if !ready() {
        return;
    }
    let vg = Vg::new(1, 2);
    let d = vg.driver();
    let extra: &[&str] = if d.uses_device_mapper() {
        &[]
    } else {
        &["-an", "-Zn"]
    };
    let v = Volume::new(1, None).unwrap();
    let mut args = vec!["lvcreate", "-q"];
    args.extend(extra);
    args.extend([
        "-n",
        v.name.as_str(),
        "--addtag",
        "ember_creating",
        "-L",
        "1g",
        vg.name.as_str(),
    ]);
    vg.lvm(&args);
    assert!(
        d.list_volumes().unwrap().is_empty(),
        "a creating LV is not a volume"
    );
    d.do_setup().unwrap();
    let out = vg.lvm(&["lvs", "--noheadings", "-o", "lv_name", &vg.name]);
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
}

/// The driver reads where the VG's extents lie once (one `pvs`); a PV added to the VG while it
/// lives must still be found, and an LV on it written where lvm2 says it is.
#[test]
fn a_pv_added_while_the_driver_lives_is_mapped() {
    if !ready() {
        return;
    }
    let vg = Vg::new(2, 2);
    vg.lvm(&["vgreduce", "-q", &vg.name, &vg.loops[1]]);
    let d = vg.driver();
    if d.uses_device_mapper() {
        return;
    }
    let a = Volume::new(1, None).unwrap();
    d.create_volume(&a).unwrap();
    vg.lvm(&["vgextend", "-q", &vg.name, &vg.loops[1]]);
    // The first PV has 255 extents left, fewer than 1 GiB: B lies on the new PV, partly at least.
    let b = Volume::new(1, None).unwrap();
    d.create_volume(&b).unwrap();
    let sp = vg.lv_extents(&b.name);
    assert!(
        sp.iter()
            .any(|r| r.pv.to_str() == Some(vg.loops[1].as_str())),
        "{sp:?}"
    );
    let img = image(
        vg.dir.path(),
        "b.raw",
        8 * MIB,
        &[(0, 0x5e), (7 * MIB, 0x7f)],
    );
    d.copy_image_to_volume(&b, &img).unwrap();
    assert_eq!(lv_ranges(&vg, &d, &b.name), sp);
    assert_eq!(read_lv(&sp, 0, 2), vec![0x5e; 2]);
    assert_eq!(read_lv(&sp, 7 * MIB, 2), vec![0x7f; 2]);
    vg.check_metadata();
}

#[test]
fn qcow2_images_into_and_out_of_lvs() {
    if !ready() {
        return;
    }
    let vg = Vg::new(1, 3);
    let d = vg.driver();
    let tmp = vg.dir.path();
    let a = Volume::new(1, None).unwrap();
    d.create_volume(&a).unwrap();
    let img = image(tmp, "a.raw", 16 * MIB, &[(MIB, 0x61), (9 * MIB, 0x62)]);
    d.copy_image_to_volume(&a, &img).unwrap();
    let q = ImageFile {
        path: tmp.join("a.qcow2"),
        meta: ImageMeta {
            disk_format: "qcow2".into(),
            container_format: "bare".into(),
        },
    };
    d.copy_volume_to_image(&a, &q).unwrap();
    let b = Volume::new(1, None).unwrap();
    d.create_volume(&b).unwrap();
    d.copy_image_to_volume(&b, &q).unwrap();
    let sp = lv_ranges(&vg, &d, &b.name);
    assert_eq!(read_lv(&sp, MIB, 2), vec![0x61; 2]);
    assert_eq!(read_lv(&sp, 9 * MIB, 2), vec![0x62; 2]);
    assert_eq!(read_lv(&sp, 5 * MIB, 2), vec![0; 2]);
    let staging = vg.dir.path().join("state/staging");
    assert!(!staging.exists() || std::fs::read_dir(staging).unwrap().count() == 0);
    vg.check_metadata();
    d.delete_volume(&a).unwrap();
    d.delete_volume(&b).unwrap();
}
