//! Export methods through the target crate against a real, private tgtd (root), checked with an
//! iSCSI initiator (libiscsi's `iscsi-readcapacity16` and the target tests' libiscsi binding):
//! file backend volumes and LVM volumes (a PV byte window where device-mapper is absent). Data
//! written to the volume before the export is read back over iSCSI, and data written over iSCSI
//! is found in the backing store, read there independently of the driver.

mod common;
#[path = "../../target/tests/common/libiscsi.rs"]
mod libiscsi;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Arc;

use common::{read_lv, Tgtd, Vg};
use ember_drivers::export::Exporter;
use ember_drivers::file::FileDriver;
use ember_drivers::lvm::LvmDriver;
use ember_drivers::*;
use ember_target::{parse_provider_auth, parse_provider_location, TargetConfig, TgtAdm};
use libiscsi::Session;

const GIB: u64 = 1 << 30;
const INITIATOR: &str = "iqn.2026-11.org.ember:test-initiator";

const MIB: u64 = 1 << 20;

/// Root, the tools and libiscsi are here; else prints why and returns false (a failure when
/// `EMBER_REQUIRE_SYSTEM_TESTS=1`).
fn ready(extra_tools: &[&str]) -> bool {
    if !ember_engine::test_util::is_root() {
        ember_engine::test_util::skip("export", "needs root");
        return false;
    }
    for t in [
        "tgtd",
        "tgtadm",
        "tgt-admin",
        "iscsi-readcapacity16",
        "losetup",
    ]
    .iter()
    .chain(extra_tools)
    {
        if ember_engine::test_util::find_tool(t).is_none() {
            ember_engine::test_util::skip("export", &format!("{t} is not installed"));
            return false;
        }
    }
    if !libiscsi::available() {
        ember_engine::test_util::skip("export", "libiscsi.so is not installed");
        return false;
    }
    true
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Bytes of the volume as the test itself reads them from the backing store (not through the
/// driver): `(offset, len) -> bytes`.
type Backing<'a> = &'a dyn Fn(u64, usize) -> Vec<u8>;

fn exporter(dir: &std::path::Path, tgtd: &Tgtd) -> Arc<Exporter> {
    let cfg = TargetConfig {
        target_port: tgtd.port,
        control_port: Some(tgtd.control_port),
        volumes_dir: dir.join("targets"),
        ..TargetConfig::default()
    };
    Arc::new(Exporter::new(Arc::new(TgtAdm::new(cfg).unwrap())))
}

/// Where and how an initiator logs in to `vol`: (portal, iqn, lun, CHAP user, CHAP secret),
/// from the stored model.
fn login(vol: &Volume) -> (String, String, u32, String, String) {
    let loc = parse_provider_location(vol.provider_location.as_deref().unwrap()).unwrap();
    let chap = parse_provider_auth(vol.provider_auth.as_deref().unwrap())
        .unwrap()
        .unwrap();
    (
        loc.portals[0].to_string(),
        loc.iqn.to_string(),
        loc.lun,
        chap.username.to_string(),
        chap.secret.expose().to_string(),
    )
}

/// A logged-in libiscsi session to `vol` with its CHAP credentials.
fn session(vol: &Volume) -> Session {
    let (portal, iqn, lun, user, secret) = login(vol);
    Session::connect(INITIATOR, &portal, &iqn, lun, Some((&user, &secret)))
        .unwrap_or_else(|e| panic!("iSCSI login to {iqn}: {e}"))
}

/// The capacity an initiator sees, logging in with the CHAP credentials of `vol`.
fn capacity(vol: &Volume) -> u64 {
    let (portal, iqn, lun, user, secret) = login(vol);
    let url = format!("iscsi://{user}%{secret}@{portal}/{iqn}/{lun}");
    let out = Command::new("iscsi-readcapacity16")
        .args(["-s", "-i", INITIATOR, &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "readcapacity16: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Runs the export lifecycle on any driver; `list` re-reads the volume (with its model).
/// `before` is data the test put into the volume before the export (offset, bytes; whole
/// sectors): the initiator must read exactly it. Data the initiator writes must then be found in
/// the backing store by `backing`, once the export is removed (the target has closed it).
fn export_lifecycle(
    d: &dyn VolumeDriver,
    vol: &Volume,
    before: &[(u64, Vec<u8>)],
    backing: Backing,
) {
    let connector = Connector {
        initiator: Some(INITIATOR.into()),
        ip: Some("127.0.0.1".into()),
        host: Some("test-host".into()),
        ..Default::default()
    };
    let reload = || {
        d.list_volumes()
            .unwrap()
            .into_iter()
            .find(|v| v.id == vol.id)
            .unwrap()
    };
    // Not exported yet: connecting says so.
    assert!(d.initialize_connection(vol, &connector).is_err());
    let mu = d.create_export(vol).unwrap().expect("a model update");
    let loc = mu.provider_location.clone().unwrap();
    assert!(
        loc.ends_with(&format!("iqn.2010-10.org.openstack:{} 1", vol.name)),
        "{loc}"
    );
    assert!(mu.provider_auth.as_deref().unwrap().starts_with("CHAP "));
    let v = reload();
    assert_eq!(v.provider_location, mu.provider_location, "model persisted");
    // Exporting again is idempotent and keeps the credentials.
    assert_eq!(d.create_export(&v).unwrap().unwrap(), mu);
    d.ensure_export(&v).unwrap();

    let info = d.initialize_connection(&v, &connector).unwrap();
    assert_eq!(info.driver_volume_type, "iscsi");
    assert_eq!(info.data.target_lun, 1);
    assert_eq!(info.data.volume_id, vol.id.to_string());
    assert_eq!(info.data.auth_method.as_deref(), Some("CHAP"));
    assert_eq!(capacity(&v), vol.size_bytes());

    // Read back over iSCSI what was written before the export; write through the initiator.
    let written = [
        (MIB, pattern(7, 256 * 1024)),
        (vol.size_bytes() - 4096, pattern(9, 4096)),
    ];
    {
        let s = session(&v);
        for (off, want) in before {
            let got = s.read(off / 512, want.len()).unwrap();
            assert!(
                &got == want,
                "iSCSI read at {off} differs from the volume's data"
            );
        }
        for (off, data) in &written {
            s.write(off / 512, data).unwrap();
            assert_eq!(&s.read(off / 512, data.len()).unwrap(), data);
        }
        assert!(
            s.read(vol.size_bytes() / 512, 512).is_err(),
            "read past the end"
        );
    }

    // Online extend: the initiator sees the new size, and the data is still there.
    d.extend_volume(&v, vol.size + 1).unwrap();
    let v = reload();
    assert_eq!(capacity(&v), (vol.size + 1) * GIB);
    {
        let s = session(&v);
        for (off, data) in before.iter().chain(&written) {
            assert!(
                &s.read(off / 512, data.len()).unwrap() == data,
                "at {off} after extend"
            );
        }
    }

    d.terminate_connection(&v, &connector).unwrap();
    d.remove_export(&v).unwrap();
    let v = reload();
    assert_eq!(v.provider_location, None);
    // The initiator's writes reached the backing store, read there by the test itself.
    for (off, data) in before.iter().chain(&written) {
        assert!(
            &backing(*off, data.len()) == data,
            "backing store differs at {off} from what the initiator wrote"
        );
    }
    // Deleting an exported volume removes its export first.
    d.create_export(&v).unwrap();
    d.delete_volume(&reload()).unwrap();
}

#[test]
fn file_backend_exports_over_tgt() {
    if !ready(&[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(tgtd) = Tgtd::start(&dir.path().join("tgtd.log")) else {
        ember_engine::test_util::skip("export", "tgtd cannot start here");
        return;
    };
    let d = FileDriver::new(BackendConfig::file("f", dir.path().join("vols")))
        .unwrap()
        .with_exporter(exporter(dir.path(), &tgtd));
    d.do_setup().unwrap();
    let vol = Volume::new(1, Some("exported")).unwrap();
    d.create_volume(&vol).unwrap();
    let path = d.data_path(&vol.name);
    let before = vec![(0, pattern(1, 4096)), (300 * MIB, pattern(2, 8192))];
    let f = File::options().write(true).open(&path).unwrap();
    for (off, data) in &before {
        f.write_all_at(data, *off).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let backing = |off: u64, len: usize| {
        let mut b = vec![0u8; len];
        File::open(&path)
            .unwrap()
            .read_exact_at(&mut b, off)
            .unwrap();
        b
    };
    export_lifecycle(&d, &vol, &before, &backing);
}

#[test]
fn lvm_backend_exports_over_tgt() {
    if !ready(&["lvcreate"]) {
        return;
    }
    let vg = Vg::new(1, 4);
    let Some(tgtd) = Tgtd::start(&vg.dir.path().join("tgtd.log")) else {
        ember_engine::test_util::skip("export", "tgtd cannot start here");
        return;
    };
    let d = LvmDriver::new(vg.config())
        .unwrap()
        .with_exporter(exporter(vg.dir.path(), &tgtd));
    d.do_setup().unwrap();
    let vol = Volume::new(1, None).unwrap();
    d.create_volume(&vol).unwrap();
    // Data put into the LV by the driver before the export, from an image the test wrote.
    let before = vec![(0, pattern(3, 4096)), (700 * MIB, pattern(4, 65536))];
    let img = vg.dir.path().join("before.raw");
    let f = File::create(&img).unwrap();
    f.set_len(GIB).unwrap();
    for (off, data) in &before {
        f.write_all_at(data, *off).unwrap();
    }
    drop(f);
    d.copy_image_to_volume(
        &vol,
        &ImageFile {
            path: img,
            meta: ImageMeta::raw(),
        },
    )
    .unwrap();
    // The LV's bytes where lvm2 itself says they are (re-read: an extend may add a segment).
    let backing = |off: u64, len: usize| read_lv(&vg.lv_extents(&vol.name), off, len);
    export_lifecycle(&d, &vol, &before, &backing);
    vg.check_metadata();
    drop(d);
    drop(tgtd);
}
