//! Shared pieces of the tgt end-to-end tests: a private tgtd guard, volume fixtures and helpers
//! around the libiscsi command line tools.

#![allow(dead_code)]

pub mod libiscsi;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember_target::runner::{Output, Runner};
use ember_target::{ExportVolume, TargetConfig};
use rand::Rng;

/// A private tgtd on 127.0.0.1:`port` with control port `control_port`, killed by PID on drop.
pub struct Tgtd {
    child: Option<Child>,
    pub port: u16,
    pub control_port: u32,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn socket_path(cport: u32) -> PathBuf {
    PathBuf::from(format!("/var/run/tgtd/socket.{cport}"))
}

impl Tgtd {
    /// Starts tgtd on a free port with an unused control port; its log goes to `dir/tgtd.log`.
    pub fn start(dir: &Path) -> Tgtd {
        let mut rng = rand::thread_rng();
        for _ in 0..20 {
            let port = free_port();
            let cport = rng.gen_range(20_000..60_000);
            if socket_path(cport).exists() {
                continue;
            }
            let mut t = Tgtd {
                child: None,
                port,
                control_port: cport,
                log: dir.join("tgtd.log"),
            };
            if t.spawn() {
                return t;
            }
        }
        panic!("cannot start tgtd");
    }

    fn spawn(&mut self) -> bool {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("tgtd log");
        let child = Command::new(tool("tgtd"))
            .args([
                "-f".to_owned(),
                "--iscsi".to_owned(),
                format!("portal=127.0.0.1:{}", self.port),
                "-C".to_owned(),
                self.control_port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn tgtd");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            let ctl = Command::new(tool("tgtadm"))
                .args([
                    "-C",
                    &self.control_port.to_string(),
                    "--lld",
                    "iscsi",
                    "--op",
                    "show",
                    "--mode",
                    "target",
                ])
                .output();
            // tgtd keeps running when its portal port is taken, so check that this very process
            // owns the listening socket (not some other test's tgtd).
            let tcp = self
                .child
                .as_ref()
                .is_some_and(|c| listens(c.id(), self.port));
            if tcp && ctl.is_ok_and(|o| o.status.success()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL by PID (tgtd ignores SIGTERM while it has targets) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(socket_path(self.control_port));
        let _ = fs::remove_file(format!("/var/run/tgtd/socket.{}.lock", self.control_port));
    }

    /// Kills tgtd and starts a fresh one (empty configuration) on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        let start = Instant::now();
        while !self.spawn() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "tgtd did not restart"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn portal(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when process `pid` owns a TCP socket listening on 127.0.0.1:`port`
/// (/proc/net/tcp inode matched against /proc/<pid>/fd).
fn listens(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let Ok(tcp) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inodes: Vec<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|e| e.ok())
        .filter_map(|e| fs::read_link(e.path()).ok())
        .any(|l| inodes.iter().any(|i| l.to_str() == Some(i.as_str())))
}

/// Resolves a tool from PATH or the sbin folders.
pub fn tool(name: &str) -> PathBuf {
    ember_engine::test_util::find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

/// A random lower-case UUID.
pub fn uuid() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A sparse backing file of `size` bytes and the matching volume.
pub fn volume(dir: &Path, size: u64) -> ExportVolume {
    let id = uuid();
    let path = dir.join(format!("{id}.img"));
    let f = fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    ExportVolume::whole(id.clone(), format!("volume-{id}"), path, size)
}

pub fn config(dir: &Path, tgtd: &Tgtd) -> TargetConfig {
    TargetConfig {
        target_port: tgtd.port,
        control_port: Some(tgtd.control_port),
        volumes_dir: dir.join("volumes"),
        ..TargetConfig::default()
    }
}

/// Runs a libiscsi tool with a 30 s limit.
pub fn iscsi_tool(program: &str, args: &[&str]) -> Output {
    Runner::new(Duration::from_secs(30))
        .run_unchecked(
            program,
            &args.iter().map(|a| (*a).into()).collect::<Vec<_>>(),
            &[],
        )
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// `iscsi://[user%secret@]portal/iqn/lun`.
pub fn url(portal: &str, iqn: &str, lun: u32, chap: Option<(&str, &str)>) -> String {
    match chap {
        Some((u, s)) => format!("iscsi://{u}%{s}@{portal}/{iqn}/{lun}"),
        None => format!("iscsi://{portal}/{iqn}/{lun}"),
    }
}

/// Size reported by `iscsi-readcapacity16 -s`.
pub fn capacity(initiator: &str, url: &str) -> u64 {
    let out = iscsi_tool("iscsi-readcapacity16", &["-s", "-i", initiator, url]);
    assert!(out.success, "readcapacity16 failed: {}", out.stderr);
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("capacity output {:?}", out.stdout))
}

pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, offset).unwrap();
    f.sync_all().unwrap();
}

pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
