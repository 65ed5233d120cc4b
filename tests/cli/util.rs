//! Helpers for the CLI tests: running `ember`, generating sparse files, loop devices.

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn ember() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ember"))
}

/// Runs ember with `args`, returning its output.
pub fn run(args: &[&str]) -> Output {
    ember().args(args).output().expect("run ember")
}

/// Runs ember and asserts success.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "ember {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs ember, asserts failure, returns stderr.
pub fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        !o.status.success(),
        "ember {args:?} unexpectedly succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error must be one line: {err}"
    );
    err
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A sparse file of `size` bytes with `extents` random data extents (some at unaligned
/// offsets and lengths), seeded. Returns the data ranges written.
pub fn sparse_file(path: &Path, size: u64, extents: usize, seed: u64) -> Vec<(u64, u64)> {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::new();
    if size == 0 {
        return out;
    }
    for _ in 0..extents {
        let off = rng.gen_range(0..size);
        let len = rng.gen_range(1..=(256 << 10)).min(size - off);
        let mut buf = vec![0u8; len as usize];
        rng.fill_bytes(&mut buf);
        // Never all zero (a random buffer never is, but be explicit).
        buf[0] |= 1;
        f.write_at(&buf, off).unwrap();
        out.push((off, len));
    }
    f.sync_all().unwrap();
    out
}

/// Fills `path` (file or device) with a non-zero pattern over `len` bytes at `offset`.
pub fn fill_pattern(path: &Path, offset: u64, len: u64, byte: u8) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let chunk = vec![byte; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], offset + pos).unwrap();
        pos += n as u64;
    }
    f.sync_all().unwrap();
}

/// Reads `len` bytes at `offset` with plain std I/O (independent of the engine).
pub fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let f = File::open(path).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// Data ranges by SEEK_DATA/SEEK_HOLE, via the engine's discovery.
pub fn allocated(path: &Path) -> u64 {
    ember_engine::alloc::data_map(path).unwrap().total_len()
}

/// Bytes the filesystem really allocated (st_blocks).
pub fn st_blocks_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// `cmp` as an independent oracle: true when identical.
pub fn cmp(a: &Path, b: &Path) -> bool {
    Command::new("cmp")
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

/// A loop device over a backing file, detached on drop.
pub struct LoopDev {
    pub dev: PathBuf,
}

impl LoopDev {
    pub fn new(backing: &Path, read_only: bool) -> LoopDev {
        let mut c = Command::new("losetup");
        c.arg("-f").arg("--show");
        if read_only {
            c.arg("-r");
        }
        let o = c.arg(backing).output().expect("losetup");
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let dev = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
        LoopDev { dev }
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A mount, unmounted on drop.
pub struct Mount(pub PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Runs `cmd` to the end and returns its stdout with its peak resident set in KiB: the
/// largest `VmHWM` of `/proc/PID/status` seen while it ran, read every millisecond. (Not
/// `ru_maxrss`: a child's includes the high-water mark of the test process it was spawned
/// from.) Polling can only miss growth in the last millisecond, so a bound checked on it is
/// never failed wrongly. Panics if the command fails.
pub fn ok_with_peak_rss(mut cmd: Command) -> (String, u64) {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ember");
    // Both pipes drained while it runs, so a chatty child never blocks on a full one.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            r.read_to_string(&mut text).map(|_| text)
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        let hwm = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|t| {
                let line = t.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        peak = peak.max(hwm);
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    let out = out.join().unwrap().unwrap();
    let err = err.join().unwrap().unwrap();
    assert!(status.success(), "{cmd:?} failed ({status}): {err}");
    assert!(peak > 0, "no VmHWM read from {status_file}");
    (out, peak)
}
