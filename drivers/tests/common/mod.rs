//! Shared fixtures of the driver tests: a private VG on loop-device PVs, a private tgtd.

#![allow(dead_code)]

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember_drivers::lvm::LvmDriver;
use ember_drivers::{BackendConfig, VolumeDriver};

const GIB: u64 = 1 << 30;

/// Loop-device PVs in a private VG; everything is removed on drop, by device path.
pub struct Vg {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub loops: Vec<String>,
}

impl Vg {
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("LVM_SYSTEM_DIR", self.dir.path().join("etc"))
            .env("LC_ALL", "C")
            .env("LVM_SUPPRESS_FD_WARNINGS", "1");
    }

    pub fn lvm(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        self.env(&mut c);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A VG over `pvs` sparse loop files of `pv_gib` GiB each.
    pub fn new(pvs: usize, pv_gib: u64) -> Vg {
        let dir = tempfile::tempdir().unwrap();
        let mut loops = Vec::new();
        for i in 0..pvs {
            let img = dir.path().join(format!("pv{i}.img"));
            File::create(&img).unwrap().set_len(pv_gib * GIB).unwrap();
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&img)
                .output()
                .unwrap();
            assert!(out.status.success(), "losetup failed");
            loops.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());
        }
        let etc = dir.path().join("etc");
        fs::create_dir_all(&etc).unwrap();
        let filter: Vec<String> = loops
            .iter()
            .map(|l| format!("\"a|^{l}$|\""))
            .chain(["\"r|.*|\"".to_owned()])
            .collect();
        fs::write(
            etc.join("lvm.conf"),
            format!(
                "devices {{ filter = [ {} ]\n obtain_device_list_from_udev = 0 }}\n\
                 activation {{ udev_sync = 0 udev_rules = 0 }}\n\
                 global {{ activation = 0 locking_dir = \"{}\" }}\n",
                filter.join(", "),
                dir.path().join("lock").display()
            ),
        )
        .unwrap();
        let name = format!("ember-test-{}", rand::random::<u32>());
        let vg = Vg { dir, name, loops };
        for l in &vg.loops {
            vg.lvm(&["pvcreate", "-q", l]);
        }
        let mut args = vec!["vgcreate", "-q", vg.name.as_str()];
        args.extend(vg.loops.iter().map(String::as_str));
        vg.lvm(&args);
        vg
    }

    /// Runs an lvm2 report command and returns its `|`-separated rows (no headings, sizes in
    /// bytes without suffix).
    fn report(&self, args: &[&str]) -> Vec<Vec<String>> {
        let mut all = args.to_vec();
        all.extend([
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "--separator",
            "|",
        ]);
        let out = self.lvm(&all);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().split('|').map(str::to_owned).collect())
            .collect()
    }

    /// Where LV `name`'s bytes live, in LV order, computed here from lvm2's own report and
    /// nothing of the driver: the VG's extent size (`vgs`), each PV's `pe_start` (`pvs`) and the
    /// LV's segments with their PV extent ranges (`lvs --segments -o seg_pe_ranges`).
    pub fn lv_extents(&self, name: &str) -> Vec<PvRange> {
        let num = |s: &str| -> u64 { s.trim().parse().unwrap_or_else(|_| panic!("number {s:?}")) };
        let extent = num(&self.report(&["vgs", "-o", "vg_extent_size", &self.name])[0][0]);
        let pe_start: std::collections::HashMap<String, u64> = self
            .report(&["pvs", "-o", "pv_name,pe_start"])
            .into_iter()
            .map(|r| (r[0].trim().to_owned(), num(&r[1])))
            .collect();
        let mut segs: Vec<(u64, Vec<PvRange>)> = Vec::new();
        for r in self.report(&[
            "lvs",
            "-a",
            "--segments",
            "-o",
            "lv_name,seg_start_pe,seg_pe_ranges",
            &self.name,
        ]) {
            // Hidden LVs are listed as [name].
            if r[0].trim().trim_start_matches('[').trim_end_matches(']') != name {
                continue;
            }
            // "/dev/loop3:0-254" (one range per stripe; linear LVs have one).
            let ranges = r[2]
                .split_whitespace()
                .map(|pr| {
                    let (pv, pes) = pr.rsplit_once(':').unwrap();
                    let (a, b) = pes.split_once('-').unwrap();
                    let (a, b) = (num(a), num(b));
                    PvRange {
                        pv: PathBuf::from(pv),
                        offset: pe_start[pv] + a * extent,
                        len: (b - a + 1) * extent,
                    }
                })
                .collect();
            segs.push((num(&r[1]), ranges));
        }
        assert!(!segs.is_empty(), "lvm2 reports no LV {name}");
        segs.sort_by_key(|s| s.0);
        segs.into_iter().flat_map(|s| s.1).collect()
    }

    /// Fails unless lvm2's own checkers find the VG metadata intact: `vgck` exits 0 without a
    /// warning (it exits 0 when one PV's copy is bad but another is good), `pvck` exits 0 with
    /// no `CHECK:` finding on every PV.
    pub fn check_metadata(&self) {
        let quiet = |out: &std::process::Output, what: &str, bad: &str| {
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            let found: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(bad) && !l.contains("Activation disabled"))
                .collect();
            assert!(found.is_empty(), "{what}: {found:#?}");
        };
        let out = self.lvm(&["vgck", &self.name]);
        quiet(&out, "vgck", "WARNING");
        for l in &self.loops {
            let out = self.lvm(&["pvck", l]);
            quiet(&out, "pvck", "CHECK");
        }
    }

    pub fn config(&self) -> BackendConfig {
        let mut c = BackendConfig::lvm("lvm", &self.name);
        c.lvm_conf_file = Some(self.dir.path().join("etc/lvm.conf"));
        c.path = Some(self.dir.path().join("state"));
        c
    }

    pub fn driver_with(&self, cfg: BackendConfig) -> LvmDriver {
        let d = LvmDriver::new(cfg).unwrap();
        d.do_setup().unwrap();
        d.check_for_setup_error().unwrap();
        d
    }

    pub fn driver(&self) -> LvmDriver {
        self.driver_with(self.config())
    }
}

/// A byte range of a PV holding part of an LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvRange {
    pub pv: PathBuf,
    pub offset: u64,
    pub len: u64,
}

/// Reads `len` bytes at LV offset `off` through `ranges` (from [`Vg::lv_extents`]) with plain
/// positioned reads of the PVs.
pub fn read_lv(ranges: &[PvRange], mut off: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    for r in ranges {
        if out.len() == len {
            break;
        }
        if off >= r.len {
            off -= r.len;
            continue;
        }
        let n = ((r.len - off) as usize).min(len - out.len());
        let mut b = vec![0u8; n];
        File::open(&r.pv)
            .unwrap()
            .read_exact_at(&mut b, r.offset + off)
            .unwrap();
        out.extend(b);
        off = 0;
    }
    assert_eq!(out.len(), len, "read past the end of the LV");
    out
}

impl Drop for Vg {
    fn drop(&mut self) {
        let mut c = Command::new("vgremove");
        c.args(["-f", &self.name]);
        self.env(&mut c);
        let _ = c.output();
        for l in &self.loops {
            let mut c = Command::new("pvremove");
            c.args(["-ff", "-y", l]);
            self.env(&mut c);
            let _ = c.output();
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

/// A private tgtd on 127.0.0.1:`port` with its own control port, killed by PID on drop.
pub struct Tgtd {
    child: Option<Child>,
    pub port: u16,
    pub control_port: u32,
}

fn tool(name: &str) -> PathBuf {
    ember_engine::test_util::find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

impl Tgtd {
    /// Starts tgtd on a free port; `None` when it cannot start here.
    pub fn start(log: &Path) -> Option<Tgtd> {
        for _ in 0..20 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .ok()?;
            let cport = 20_000 + rand::random::<u32>() % 40_000;
            if Path::new(&format!("/var/run/tgtd/socket.{cport}")).exists() {
                continue;
            }
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .ok()?;
            let child = Command::new(tool("tgtd"))
                .args([
                    "-f".to_owned(),
                    "--iscsi".to_owned(),
                    format!("portal=127.0.0.1:{port}"),
                    "-C".to_owned(),
                    cport.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().ok()?)
                .stderr(log)
                .spawn()
                .ok()?;
            let mut t = Tgtd {
                child: Some(child),
                port,
                control_port: cport,
            };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Some(Ok(Some(_))) = t.child.as_mut().map(|c| c.try_wait()) {
                    t.child = None;
                    break;
                }
                let ctl = Command::new(tool("tgtadm"))
                    .args([
                        "-C",
                        &cport.to_string(),
                        "--lld",
                        "iscsi",
                        "--op",
                        "show",
                        "--mode",
                        "target",
                    ])
                    .output();
                if TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && ctl.is_ok_and(|o| o.status.success())
                {
                    return Some(t);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        None
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(format!("/var/run/tgtd/socket.{}", self.control_port));
        let _ = fs::remove_file(format!("/var/run/tgtd/socket.{}.lock", self.control_port));
    }
}
