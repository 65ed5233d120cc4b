//! `ember volume ...` on the file backend: no root, no config (the embedded default), then with
//! a TOML config naming backends.

use super::util::{ember, s};
use std::path::Path;
use std::process::Output;

fn vol(home: &Path, args: &[&str]) -> Output {
    ember()
        .env_remove("EMBER_CONFIG")
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .arg("volume")
        .args(args)
        .output()
        .expect("run ember")
}

fn ok(home: &Path, args: &[&str]) -> String {
    let o = vol(home, args);
    assert!(
        o.status.success(),
        "ember volume {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `ember volume list --json` as a document.
fn no_volumes(home: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(home, &["list", "--json"])).unwrap()
}

fn fails(home: &Path, args: &[&str]) -> String {
    let o = vol(home, args);
    assert!(!o.status.success(), "ember volume {args:?} succeeded");
    let e = String::from_utf8(o.stderr).unwrap();
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    e
}

#[test]
fn lifecycle_without_root_or_config() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    let img = h.join("img.raw");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"ember!", 4096).unwrap();

    assert!(ok(h, &["create", "db", "--size", "1"]).contains("created db"));
    ok(h, &["download", s(&img), "db"]);
    ok(h, &["snapshot", "db", "snap1"]);
    ok(h, &["clone", "db", "db2"]);
    ok(h, &["extend", "db2", "--size", "2"]);
    let list: serde_json::Value = serde_json::from_str(&ok(h, &["list", "--json"])).unwrap();
    assert_eq!(list["volumes"].as_array().unwrap().len(), 2);
    let stats: serde_json::Value = serde_json::from_str(&ok(h, &["stats", "--json"])).unwrap();
    for k in ember_drivers::stats::TOP_LEVEL_KEYS {
        assert!(stats.get(*k).is_some(), "stats lack {k}");
    }
    assert_eq!(stats["provisioned_capacity_gb"], 4.0);
    assert!(fails(h, &["delete", "db"]).contains("busy"));
    let out = h.join("out.raw");
    ok(h, &["upload", "db2", s(&out)]);
    let mut b = [0u8; 6];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&out).unwrap(), &mut b, 4096)
        .unwrap();
    assert_eq!(&b, b"ember!");
    let q = h.join("out.qcow2");
    ok(h, &["upload", "db2", s(&q), "--format", "qcow2"]);
    assert!(
        fails(h, &["download", s(&q), "db"]).contains("qcow2"),
        "declared raw, is qcow2"
    );
    assert!(fails(h, &["download", s(&q), "db", "--format", "qcow2"]).contains("fit"));
    ok(h, &["download", s(&q), "db2", "--format", "qcow2"]);
    ok(h, &["snapshot-delete", "snap1"]);
    ok(h, &["delete", "db"]);
    ok(h, &["delete", "db2"]);
    assert_eq!(
        no_volumes(h),
        serde_json::json!({"schema": 1, "volumes": []})
    );
    // Bad input: one clear line, nothing created.
    assert!(fails(h, &["create", "a;b", "--size", "1"]).contains("not allowed"));
    assert!(fails(h, &["create", "x", "--size", "0"]).contains("at least 1 GiB"));
    assert!(fails(h, &["show", "nope"]).contains("not found"));
    assert_eq!(
        no_volumes(h),
        serde_json::json!({"schema": 1, "volumes": []})
    );
}

#[test]
fn config_file_selects_backends_and_bad_configs_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path();
    let cfg = h.join("ember.toml");
    std::fs::write(
        &cfg,
        format!(
            "default_backend = \"a\"\n[[backend]]\nname = \"a\"\ndriver = \"file\"\npath = \"{}\"\n\
             [[backend]]\nname = \"b\"\ndriver = \"file\"\npath = \"{}\"\nvolume_clear = \"none\"\n",
            h.join("a").display(),
            h.join("b").display()
        ),
    )
    .unwrap();
    ok(h, &["--config", s(&cfg), "create", "v", "--size", "1"]);
    ok(
        h,
        &[
            "--config",
            s(&cfg),
            "--backend",
            "b",
            "create",
            "w",
            "--size",
            "1",
        ],
    );
    assert!(ok(h, &["--config", s(&cfg), "list"]).contains('v'));
    assert!(!ok(h, &["--config", s(&cfg), "list"]).contains(" w "));
    assert!(ok(h, &["--config", s(&cfg), "--backend", "b", "list"]).starts_with('w'));
    let bad = h.join("bad.toml");
    std::fs::write(&bad, "[[backend]]\nname = \"x\"\ndriver = \"lvm\"\n").unwrap();
    assert!(fails(h, &["--config", s(&bad), "list"]).contains("volume_group"));
}

#[test]
fn parallel_processes_share_one_backend_safely() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path().to_owned();
    ok(&h, &["create", "base", "--size", "1"]);
    let children: Vec<_> = (0..6)
        .map(|i| {
            let h = h.clone();
            std::thread::spawn(move || {
                let n = format!("p{i}");
                ok(&h, &["create", &n, "--size", "1"]);
                ok(&h, &["clone", "base", &format!("c{i}")]);
                ok(&h, &["snapshot", &n, &format!("s{i}")]);
                ok(&h, &["extend", &n, "--size", "2"]);
            })
        })
        .collect();
    for c in children {
        c.join().unwrap();
    }
    let list: serde_json::Value = serde_json::from_str(&ok(&h, &["list", "--json"])).unwrap();
    assert_eq!(list["volumes"].as_array().unwrap().len(), 13);
    let snaps: serde_json::Value = serde_json::from_str(&ok(&h, &["snapshots", "--json"])).unwrap();
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), 6);
}

#[test]
fn concurrent_creates_of_one_name_make_exactly_one_volume() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path().to_owned();
    let results: Vec<bool> = (0..6)
        .map(|_| {
            let h = h.clone();
            std::thread::spawn(move || vol(&h, &["create", "same", "--size", "1"]).status.success())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|c| c.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
    let list = ok(&h, &["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let named = v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["display_name"] == "same")
        .count();
    assert_eq!(named, 1, "{list}");
}
