//! Interrupted volume clones on the file backend: `kill -9` in the middle of the engine copy,
//! then the next `ember volume ...` (its `do_setup`) resumes the copy from its checkpoints and
//! the clone is byte-identical to its source; a clone whose source vanished is rolled back.

use crate::util::*;
use ember_drivers::config::BackendConfig;
use ember_drivers::file::FileDriver;
use ember_drivers::VolumeDriver;
use rand::{RngCore, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

struct Home {
    _t: tempfile::TempDir,
    dir: PathBuf,
    /// The backend's folder.
    root: PathBuf,
    /// Config without a copy limit.
    fast: PathBuf,
    /// Config with a 16 MiB/s copy limit, so a clone can be interrupted.
    slow: PathBuf,
}

impl Home {
    fn new() -> Home {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().to_path_buf();
        let root = dir.join("backend");
        let cfg = |file: &str, limit: u64| {
            let p = dir.join(file);
            std::fs::write(
                &p,
                format!(
                    "[[backend]]\nname = \"f\"\ndriver = \"file\"\npath = \"{}\"\n\
                     volume_clear = \"none\"\nvolume_copy_bps_limit = {limit}\n",
                    root.display()
                ),
            )
            .unwrap();
            p
        };
        let fast = cfg("fast.toml", 0);
        let slow = cfg("slow.toml", 16 << 20);
        Home {
            _t: t,
            dir,
            root,
            fast,
            slow,
        }
    }

    fn cmd(&self, cfg: &Path, args: &[&str]) -> std::process::Command {
        let mut c = ember();
        c.env_remove("EMBER_CONFIG")
            .env("XDG_DATA_HOME", self.dir.join("xdg-data"))
            .env("XDG_CONFIG_HOME", self.dir.join("xdg-config"))
            .arg("volume")
            .arg("--config")
            .arg(cfg)
            .args(args);
        c
    }

    fn ok(&self, cfg: &Path, args: &[&str]) -> String {
        let o: Output = self.cmd(cfg, args).output().unwrap();
        assert!(
            o.status.success(),
            "ember volume {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// The backend name (`volume-<uuid>`) of the volume shown as `display`.
    fn volume_name(&self, display: &str) -> Option<String> {
        let doc: serde_json::Value =
            serde_json::from_str(&self.ok(&self.fast, &["list", "--json"])).unwrap();
        doc["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["display_name"] == display)
            .map(|v| v["name"].as_str().unwrap().to_owned())
    }

    fn data(&self, name: &str) -> PathBuf {
        self.root.join("data").join(format!("{name}.raw"))
    }

    /// A 1 GiB volume `src` holding 40 MiB of patterned data in three regions.
    fn source(&self) -> String {
        let img = self.dir.join("img.raw");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        // Random bytes, so a misplaced block cannot go unnoticed.
        let mut buf = vec![0u8; 24 << 20];
        rand::rngs::SmallRng::seed_from_u64(8).fill_bytes(&mut buf);
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::File::options().write(true).open(&img).unwrap(),
            &buf,
            4096,
        )
        .unwrap();
        fill_pattern(&img, 300 << 20, 8 << 20, 0xA7);
        fill_pattern(&img, (1 << 30) - (8 << 20), 8 << 20, 0x11);
        self.ok(&self.fast, &["create", "src", "--size", "1"]);
        self.ok(&self.fast, &["download", s(&img), "src"]);
        std::fs::remove_file(&img).unwrap();
        self.volume_name("src").unwrap()
    }

    /// Starts `clone src dst` under the copy limit and kills it (SIGKILL) once its engine copy
    /// has been checkpointing for a while. Returns the clone's resume folder.
    fn interrupted_clone(&self) -> PathBuf {
        let mut child: Child = self
            .cmd(&self.slow, &["clone", "src", "dst"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let resume = self.root.join("resume");
        let started = Instant::now();
        let ckp = loop {
            let found = std::fs::read_dir(&resume).ok().and_then(|mut d| {
                d.next()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.join("piece-0.ckp").exists())
            });
            if let Some(f) = found {
                break f;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the clone ended before its copy started"
            );
            assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint");
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(1200));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            ckp.join("piece-0.ckp").exists(),
            "the clone was not interrupted mid-copy"
        );
        ckp
    }
}

fn resume_left(root: &Path) -> usize {
    std::fs::read_dir(root.join("resume"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn clone_killed_mid_copy_is_resumed_by_setup_and_byte_identical() {
    let h = Home::new();
    let src = h.source();
    let folder = h.interrupted_clone();
    let dst = folder.file_name().unwrap().to_str().unwrap().to_owned();
    // Interrupted: registered as creating, not listed, data incomplete.
    let meta = std::fs::read_to_string(h.root.join("meta").join(format!("{dst}.json"))).unwrap();
    assert!(meta.contains("\"creating\""), "{meta}");
    assert!(!cmp(&h.data(&src), &h.data(&dst)), "copy already complete");
    // Any command runs do_setup, which resumes the copy (under the same limit).
    let o = h.cmd(&h.slow, &["list"]).output().unwrap();
    let (list, log) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{log}");
    assert!(list.contains("dst"), "{list}");
    assert!(log.contains("resuming an interrupted create"), "{log}");
    assert_eq!(h.volume_name("dst").as_deref(), Some(dst.as_str()));
    let meta = std::fs::read_to_string(h.root.join("meta").join(format!("{dst}.json"))).unwrap();
    assert!(meta.contains("\"available\""), "{meta}");
    assert!(
        cmp(&h.data(&src), &h.data(&dst)),
        "clone differs from source"
    );
    let out = h.dir.join("out.raw");
    h.ok(&h.fast, &["upload", "dst", s(&out)]);
    assert!(cmp(&h.data(&src), &out));
    assert_eq!(resume_left(&h.root), 0, "resume folder left behind");
    // And the volume is usable as any other.
    h.ok(&h.fast, &["delete", "dst"]);
    h.ok(&h.fast, &["delete", "src"]);
}

#[test]
fn interrupted_clone_whose_source_is_gone_is_rolled_back() {
    let h = Home::new();
    let src = h.source();
    let folder = h.interrupted_clone();
    let dst = folder.file_name().unwrap().to_str().unwrap().to_owned();
    // Delete the source through the driver without running setup (which would resume).
    let d = FileDriver::new(BackendConfig::file("f", &h.root)).unwrap();
    let v = d
        .list_volumes()
        .unwrap()
        .into_iter()
        .find(|v| v.name == src)
        .unwrap();
    d.delete_volume(&v).unwrap();
    assert!(!h.data(&src).exists());
    let doc: serde_json::Value = serde_json::from_str(&h.ok(&h.slow, &["list", "--json"])).unwrap();
    assert_eq!(doc["volumes"], serde_json::json!([]));
    assert!(!h.data(&dst).exists(), "half-copied data left");
    assert!(!h.root.join("meta").join(format!("{dst}.json")).exists());
    assert_eq!(resume_left(&h.root), 0, "resume folder left behind");
}
