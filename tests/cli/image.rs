//! `ember image inspect|to-volume|from-volume` end to end (needs qemu-img).

use crate::util::*;
use ember_engine::require_tool;
use std::process::Command;

fn qemu_img(args: &[&str]) {
    let o = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn inspect_to_volume_and_back() {
    require_tool!("qemu-img");
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("vol.raw");
    sparse_file(&src, 64 << 20, 12, 7);
    let img = d.path().join("img.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        s(&src),
        s(&img),
    ]);

    let j: serde_json::Value =
        serde_json::from_str(&ok(&["image", "inspect", s(&img), "--json"])).unwrap();
    assert_eq!(j["format"], "qcow2");
    assert_eq!(j["safe"], true);
    assert_eq!(j["virtual_size"], 64u64 << 20);

    let out = d.path().join("out.raw");
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["image", "to-volume", s(&img), s(&out), "--json"])).unwrap();
    assert_eq!(j["via"], "ember");
    assert!(cmp(&src, &out));

    let back = d.path().join("back.qcow2");
    ok(&[
        "image",
        "from-volume",
        s(&out),
        s(&back),
        "--format",
        "qcow2",
        "--compress",
    ]);
    qemu_img(&["check", "-q", s(&back)]);
    qemu_img(&[
        "compare",
        "-q",
        "-f",
        "raw",
        "-F",
        "qcow2",
        s(&src),
        s(&back),
    ]);
    // an existing output is not replaced without --force
    let e = fails(&[
        "image",
        "from-volume",
        s(&out),
        s(&back),
        "--format",
        "qcow2",
    ]);
    assert!(e.contains("exists"), "{e}");
}

#[test]
fn unsafe_images_are_refused_in_one_line_and_nothing_is_written() {
    require_tool!("qemu-img");
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("backed.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "/etc/shadow",
        "-F",
        "raw",
        s(&img),
        "1M",
    ]);
    let e = fails(&["image", "inspect", s(&img)]);
    assert!(
        e.contains("backing file") && e.contains("/etc/shadow"),
        "{e}"
    );
    let out = d.path().join("out.raw");
    let e = fails(&["image", "to-volume", s(&img), s(&out)]);
    assert!(e.contains("backing file"), "{e}");
    assert!(!out.exists());

    let q = d.path().join("plain.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&q), "1M"]);
    let e = fails(&["image", "to-volume", s(&q), s(&out), "--format", "raw"]);
    assert!(e.contains("declared raw but its content is qcow2"), "{e}");
    assert!(!out.exists());
    let e = fails(&["image", "inspect", s(&q), "--max-virtual-size", "512K"]);
    assert!(e.contains("exceeds the limit"), "{e}");
}
