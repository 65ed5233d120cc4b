//! The `--json` contract the Cinder driver relies on (docs/json-contract.md): every document
//! carries `"schema": 1`, lists sit under a key, failures are error documents with Cinder's
//! category; Cinder's ids (`--id`), local attachments and migrations between backends.

use super::util::{ember, s};
use ember_engine::{require_root, require_tool};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A config with two file backends, `a` and `b`, under `dir`.
fn two_backends(dir: &Path) -> PathBuf {
    let cfg = dir.join("ember.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[backend]]\nname = \"a\"\ndriver = \"file\"\npath = \"{0}/a\"\n\n\
             [[backend]]\nname = \"b\"\ndriver = \"file\"\npath = \"{0}/b\"\n",
            dir.display()
        ),
    )
    .unwrap();
    cfg
}

fn vol(cfg: &Path, backend: &str, args: &[&str]) -> Output {
    ember()
        .args(["volume", "--config", s(cfg), "--backend", backend])
        .args(args)
        .arg("--json")
        .output()
        .unwrap()
}

/// A successful command's document; it must carry the schema.
fn doc(cfg: &Path, backend: &str, args: &[&str]) -> Value {
    let o = vol(cfg, backend, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["schema"], 1, "{args:?}: {d}");
    d
}

/// A failed command's error document and its one stderr line.
fn error(cfg: &Path, backend: &str, args: &[&str]) -> Value {
    let o = vol(cfg, backend, args);
    assert_eq!(o.status.code(), Some(1), "{args:?}");
    let e = String::from_utf8(o.stderr).unwrap();
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["schema"], 1);
    assert!(
        e.contains(d["error"]["message"].as_str().unwrap()),
        "{e} / {d}"
    );
    d["error"].clone()
}

#[test]
fn documents_carry_the_schema_and_errors_their_category() {
    let t = tempfile::tempdir().unwrap();
    let cfg = two_backends(t.path());
    let id = "6a0e6d2c-3d0e-4a5e-9a43-2f4c1d7b8e01";
    let v = doc(&cfg, "a", &["create", "--id", id, "--size", "1"]);
    assert_eq!(v["id"], id);
    assert_eq!(v["name"], format!("volume-{id}"));
    assert_eq!(v["size"], 1);
    let list = doc(&cfg, "a", &["list"]);
    assert_eq!(list["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(list["volumes"][0]["id"], id);
    let snap_id = "0b9d2f5e-7c1a-4f3b-8d2e-5a6b7c8d9e0f";
    let sn = doc(
        &cfg,
        "a",
        &["snapshot", &format!("volume-{id}"), "--id", snap_id],
    );
    assert_eq!(sn["name"], format!("snapshot-{snap_id}"));
    assert_eq!(
        doc(&cfg, "a", &["snapshots"])["snapshots"][0]["id"],
        snap_id
    );
    assert!(doc(&cfg, "a", &["manageable"])["manageable"].is_array());
    let stats = doc(&cfg, "a", &["stats"]);
    assert!(stats["pools"].is_array() && stats["total_capacity_gb"].is_number());

    let e = error(&cfg, "a", &["delete", &format!("volume-{id}")]);
    assert_eq!(e["category"], "VolumeIsBusy");
    assert_eq!(e["cinder_exception"], "VolumeIsBusy");
    let e = error(&cfg, "a", &["extend", "volume-nope", "--size", "2"]);
    assert_eq!(e["category"], "NotFound");
    let e = error(&cfg, "a", &["create", "--id", id, "--size", "1"]);
    assert_eq!(e["category"], "AlreadyExists", "{e}");
    let e = error(&cfg, "a", &["create", "--size", "0"]);
    assert_eq!(e["category"], "InvalidInput");
    let img = t.path().join("i.qcow2");
    std::fs::write(&img, b"QFI\xfb\0\0\0\x03 not really").unwrap();
    let e = error(&cfg, "a", &["download", s(&img), &format!("volume-{id}")]);
    assert_eq!(e["category"], "ImageUnacceptable", "{e}");

    doc(
        &cfg,
        "a",
        &["snapshot-delete", &format!("snapshot-{snap_id}")],
    );
    assert_eq!(
        doc(&cfg, "a", &["delete", &format!("volume-{id}")])["deleted"],
        id
    );
    // The engine's commands follow the same contract: one document per call (an unsafe
    // image's report, exit 1), or an error document.
    let out = ember()
        .args(["image", "inspect", s(&img), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (d["schema"].clone(), d["safe"].clone()),
        (1.into(), false.into()),
        "{d}"
    );
    let out = ember()
        .args(["copy", "/nonexistent/src", s(&t.path().join("x")), "--json"])
        .output()
        .unwrap();
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["error"]["category"], "NotFound", "{d}");
}

#[test]
fn migrate_moves_the_bytes_and_keeps_the_id() {
    let t = tempfile::tempdir().unwrap();
    let cfg = two_backends(t.path());
    let id = "5d1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b";
    let name = format!("volume-{id}");
    doc(&cfg, "a", &["create", "--id", id, "--size", "1"]);
    let src = t.path().join("a/data").join(format!("{name}.raw"));
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(&src).unwrap(),
        &data,
        512 << 20,
    )
    .unwrap();
    let m = doc(&cfg, "a", &["migrate", &name, "--to-backend", "b"]);
    assert_eq!(m["migrated"], id);
    assert!(!src.exists(), "the source is gone");
    assert!(doc(&cfg, "a", &["list"])["volumes"]
        .as_array()
        .unwrap()
        .is_empty());
    let dst = t.path().join("b/data").join(format!("{name}.raw"));
    let got = std::fs::read(&dst).unwrap();
    assert_eq!(got.len(), 1 << 30);
    assert_eq!(&got[512 << 20..(512 << 20) + data.len()], &data[..]);
    assert!(got[..512 << 20].iter().all(|b| *b == 0));
    assert_eq!(doc(&cfg, "b", &["show", &name])["volume"]["id"], id);
    // A volume with a snapshot cannot move; nothing is left on the destination.
    doc(&cfg, "b", &["snapshot", &name, "keep"]);
    let e = error(&cfg, "b", &["migrate", &name, "--to-backend", "a"]);
    assert_eq!(e["category"], "VolumeIsBusy");
    assert!(std::fs::read_dir(t.path().join("a/data"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn local_attach_is_a_loop_device_resized_on_extend_and_gone_on_delete() {
    require_root!();
    require_tool!("losetup");
    let t = tempfile::tempdir().unwrap();
    let cfg = two_backends(t.path());
    let id = "7e8f9a0b-1c2d-4e3f-a4b5-c6d7e8f9a0b1";
    let name = format!("volume-{id}");
    doc(&cfg, "a", &["create", "--id", id, "--size", "1"]);
    let c = doc(&cfg, "a", &["connect", &name, "--local"]);
    assert_eq!(c["driver_volume_type"], "local");
    let dev = PathBuf::from(c["data"]["device_path"].as_str().unwrap());
    // Connecting again is idempotent: the same device.
    let again = doc(&cfg, "a", &["connect", &name, "--local"]);
    assert_eq!(again["data"]["device_path"], c["data"]["device_path"]);
    let size = |p: &Path| {
        let f = std::fs::File::open(p).unwrap();
        ember_engine::sys::block_device_size(std::os::fd::AsFd::as_fd(&f)).unwrap()
    };
    assert_eq!(size(&dev), 1 << 30);
    // Bytes written through the device are the volume's.
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(&dev).unwrap(),
        b"through the loop device",
        4096,
    )
    .unwrap();
    doc(&cfg, "a", &["extend", &name, "--size", "2"]);
    assert_eq!(size(&dev), 2 << 30, "the attached device grew");
    // Deleting detaches first: no device is left showing the freed bytes.
    let e = error(&cfg, "a", &["delete", &name]);
    assert_eq!(e["category"], "VolumeIsBusy", "attached: {e}");
    doc(&cfg, "a", &["disconnect", &name, "--local"]);
    let backing = std::fs::read_to_string(format!(
        "/sys/block/{}/loop/backing_file",
        dev.file_name().unwrap().to_str().unwrap()
    ));
    assert!(backing.map_or(true, |b| !b.contains(&name)), "detached");
    let data = t.path().join("a/data").join(format!("{name}.raw"));
    let mut b = [0u8; 23];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&data).unwrap(), &mut b, 4096)
        .unwrap();
    assert_eq!(&b, b"through the loop device");
    doc(&cfg, "a", &["delete", &name]);
    assert!(!data.exists());
}
