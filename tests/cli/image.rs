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

/// `img`: `src` as a compressed qcow2, made by qemu-img.
fn compressed_qcow2(src: &std::path::Path, img: &std::path::Path) {
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", "-c", s(src), s(img)]);
}

#[test]
fn inspect_to_volume_and_back() {
    require_tool!("qemu-img");
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("vol.raw");
    sparse_file(&src, 64 << 20, 12, 7);
    let img = d.path().join("img.qcow2");
    compressed_qcow2(&src, &img);

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

/// Whether `pid` holds an unnamed (`O_TMPFILE`, shown as deleted) file in `dir` open.
fn holds_unnamed_file(pid: u32, dir: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|t| t.starts_with(dir) && t.to_string_lossy().ends_with(" (deleted)"))
    })
}

/// `to-volume` of a compressed image into a new file and `from-volume` (raw and qcow2) are
/// written unnamed: killed mid-run (SIGKILL: no cleanup runs), they leave nothing behind, not
/// even a hidden temporary file.
#[test]
fn killed_image_runs_leave_nothing_behind() {
    require_tool!("qemu-img");
    let d = tempfile::tempdir().unwrap();
    let inputs = d.path().join("in");
    let outs = d.path().join("out");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::create_dir_all(&outs).unwrap();
    let src = inputs.join("vol.raw");
    sparse_file(&src, 256 << 20, 16, 9);
    fill_pattern(&src, 0, 128 << 20, 0x3c);
    let img = inputs.join("img.qcow2");
    compressed_qcow2(&src, &img);
    let vhd = inputs.join("img.vhd");
    qemu_img(&["convert", "-f", "raw", "-O", "vpc", s(&src), s(&vhd)]);
    let out_raw = outs.join("vol.raw");
    let out_img = outs.join("img");
    let runs: [Vec<&str>; 5] = [
        // qemu-img writes vhd's data into the staged file through an inherited descriptor
        vec!["image", "to-volume", s(&vhd), s(&out_raw)],
        vec![
            "image",
            "to-volume",
            s(&img),
            s(&out_raw),
            "--bps-limit",
            "16M",
        ],
        // a raw image: copied, not decoded, and staged the same way
        vec![
            "image",
            "to-volume",
            s(&src),
            s(&out_raw),
            "--bps-limit",
            "16M",
        ],
        vec![
            "image",
            "from-volume",
            s(&src),
            s(&out_img),
            "--format",
            "raw",
            "--bps-limit",
            "16M",
        ],
        vec![
            "image",
            "from-volume",
            s(&src),
            s(&out_img),
            "--format",
            "qcow2",
            "--compress",
        ],
    ];
    let mut caught = 0;
    for args in runs {
        let mut child = ember()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_secs(30) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if holds_unnamed_file(child.id(), &outs) {
                caught += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let left: Vec<_> = std::fs::read_dir(&outs).unwrap().flatten().collect();
        if status.success() {
            // It finished before the kill: then the output is whole.
            for e in &left {
                std::fs::remove_file(e.path()).unwrap();
            }
        } else {
            assert!(
                left.is_empty(),
                "{args:?} left {:?}",
                left.iter().map(|e| e.file_name()).collect::<Vec<_>>()
            );
        }
    }
    // The throttled runs take seconds: those at least were caught mid-run.
    assert!(caught >= 3, "caught {caught} of 5 runs mid-write");
}

/// Outputs that are not plain new files are refused before any reading or writing.
#[test]
fn odd_outputs_are_refused_up_front() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("vol.raw");
    sparse_file(&src, 4 << 20, 2, 3);
    // a dangling symlink is something at the path: not replaced without --force
    let dangling = d.path().join("dangling.img");
    std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
    for fmt in ["raw", "qcow2"] {
        let e = fails(&[
            "image",
            "from-volume",
            s(&src),
            s(&dangling),
            "--format",
            fmt,
        ]);
        assert!(e.contains("exists"), "{e}");
        // a device node is never replaced by an image file, even with --force
        let e = fails(&[
            "image",
            "from-volume",
            s(&src),
            "/dev/null",
            "--format",
            fmt,
            "--force",
        ]);
        assert!(e.contains("not a regular file"), "{e}");
    }
    assert!(dangling
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!d.path().join("nowhere").exists());
}
