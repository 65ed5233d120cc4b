//! Export methods through the target crate against a real, private tgtd (root), read back with
//! libiscsi's command line tools: file backend volumes and LVM volumes (a PV byte window where
//! device-mapper is absent).

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Arc;

use common::{Tgtd, Vg};
use ember_drivers::export::Exporter;
use ember_drivers::file::FileDriver;
use ember_drivers::lvm::LvmDriver;
use ember_drivers::*;
use ember_target::{parse_provider_auth, parse_provider_location, TargetConfig, TgtAdm};

const GIB: u64 = 1 << 30;
const INITIATOR: &str = "iqn.2026-11.org.ember:test-initiator";

fn ready() -> bool {
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
    ] {
        if ember_engine::test_util::find_tool(t).is_none() {
            ember_engine::test_util::skip("export", &format!("{t} is not installed"));
            return false;
        }
    }
    true
}

fn exporter(dir: &std::path::Path, tgtd: &Tgtd) -> Arc<Exporter> {
    let cfg = TargetConfig {
        target_port: tgtd.port,
        control_port: Some(tgtd.control_port),
        volumes_dir: dir.join("targets"),
        ..TargetConfig::default()
    };
    Arc::new(Exporter::new(Arc::new(TgtAdm::new(cfg).unwrap())))
}

/// The capacity an initiator sees, logging in with the CHAP credentials of `vol`.
fn capacity(vol: &Volume) -> u64 {
    let loc = parse_provider_location(vol.provider_location.as_deref().unwrap()).unwrap();
    let chap = parse_provider_auth(vol.provider_auth.as_deref().unwrap())
        .unwrap()
        .unwrap();
    let url = format!(
        "iscsi://{}%{}@{}/{}/{}",
        chap.username,
        chap.secret.expose(),
        loc.portals[0],
        loc.iqn,
        loc.lun
    );
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
fn export_lifecycle(d: &dyn VolumeDriver, vol: &Volume) {
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

    // Online extend: the initiator sees the new size.
    d.extend_volume(&v, vol.size + 1).unwrap();
    let v = reload();
    assert_eq!(capacity(&v), (vol.size + 1) * GIB);

    d.terminate_connection(&v, &connector).unwrap();
    d.remove_export(&v).unwrap();
    let v = reload();
    assert_eq!(v.provider_location, None);
    // Deleting an exported volume removes its export first.
    d.create_export(&v).unwrap();
    d.delete_volume(&reload()).unwrap();
}

#[test]
fn file_backend_exports_over_tgt() {
    if !ready() {
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
    File::options()
        .write(true)
        .open(d.data_path(&vol.name))
        .unwrap()
        .write_all_at(b"ember", 0)
        .unwrap();
    export_lifecycle(&d, &vol);
}

#[test]
fn lvm_backend_exports_over_tgt() {
    if !ready() || ember_engine::test_util::find_tool("lvcreate").is_none() {
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
    export_lifecycle(&d, &vol);
    drop(d);
    drop(tgtd);
}
