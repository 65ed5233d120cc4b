//! Small helpers: sizes and allocation, PATH lookup, cache dropping, loop devices, tmpfs
//! mounts, timestamps.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{io_err, Result};
use crate::runner;

/// Size of a regular file or block device.
pub fn len_of(path: &Path) -> Result<u64> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    f.seek(SeekFrom::End(0))
        .map_err(io_err("seek to the end of", path))
}

/// Allocated bytes of a regular file (st_blocks * 512).
pub fn allocated(path: &Path) -> Result<u64> {
    let m = fs::metadata(path).map_err(io_err("stat", path))?;
    Ok(m.blocks() * 512)
}

/// First executable called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Bytes of a regular file inside SEEK_DATA ranges: data actually mapped (unwritten
/// preallocations and file-system metadata blocks are not counted).
pub fn mapped(path: &Path) -> Result<u64> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let len = f.metadata().map_err(io_err("stat", path))?.len();
    let ranges = crate::sys::data_ranges(&f, len).map_err(io_err("list data ranges of", path))?;
    Ok(ranges.iter().map(|r| r.end - r.start).sum())
}

pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// Huge pages reserved in the kernel's pool (`vm.nr_hugepages` raised) for one run; the pool
/// goes back to its size before on drop.
pub struct HugePages {
    before: u64,
}

impl HugePages {
    /// Raises the pool by `bytes` in whole huge pages (as root). Fails, with the pool as it was,
    /// when the kernel cannot find that many (memory too fragmented) or it may not be changed.
    pub fn reserve(bytes: u64) -> Result<HugePages> {
        let fail = |detail: String| crate::error::BenchError::HugePages { bytes, detail };
        let page =
            huge_page_size().ok_or_else(|| fail("no Hugepagesize in /proc/meminfo".into()))?;
        let before = read_u64(Path::new(NR_HUGEPAGES))?;
        let want = before + bytes.div_ceil(page);
        let guard = HugePages { before };
        fs::write(NR_HUGEPAGES, format!("{want}\n"))
            .map_err(io_err("write", Path::new(NR_HUGEPAGES)))?;
        let got = read_u64(Path::new(NR_HUGEPAGES))?;
        if got < want {
            return Err(fail(format!(
                "the kernel found {} of {} pages",
                got - before.min(got),
                want - before
            )));
        }
        Ok(guard)
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        if let Err(e) = fs::write(NR_HUGEPAGES, format!("{}\n", self.before)) {
            eprintln!(
                "  warning: cannot give back huge pages ({NR_HUGEPAGES} = {}): {e}",
                self.before
            );
        }
    }
}

/// The kernel's default huge page size (bytes), from `/proc/meminfo`.
fn huge_page_size() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let kib = info
        .lines()
        .find_map(|l| l.strip_prefix("Hugepagesize:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = fs::read_to_string(path).map_err(io_err("read", path))?;
    text.trim()
        .parse()
        .map_err(|_| crate::error::BenchError::Command {
            command: format!("read {}", path.display()),
            detail: format!("not a number: {:?}", text.trim()),
        })
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`. Returns false when not permitted.
pub fn drop_caches() -> bool {
    let _ = runner::run_helper(&[OsString::from("sync")], Duration::from_secs(600));
    fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// An attached loop device, detached on drop.
pub struct LoopDevice {
    pub device: PathBuf,
}

impl LoopDevice {
    /// `losetup --find --show --direct-io=on BACKING`: direct I/O so data written through the
    /// device is not parked in the backing file's page cache.
    pub fn attach(backing: &Path) -> Result<Self> {
        Self::losetup(backing, false)
    }

    /// The same, read-only (`--read-only`): a source device.
    pub fn attach_read_only(backing: &Path) -> Result<Self> {
        Self::losetup(backing, true)
    }

    fn losetup(backing: &Path, read_only: bool) -> Result<Self> {
        let mut argv: Vec<OsString> = vec![
            "losetup".into(),
            "--find".into(),
            "--show".into(),
            "--direct-io=on".into(),
        ];
        if read_only {
            argv.push("--read-only".into());
        }
        argv.push(backing.as_os_str().to_owned());
        let out = runner::run_helper(&argv, Duration::from_secs(60))?;
        Ok(LoopDevice {
            device: PathBuf::from(out.trim()),
        })
    }

    /// A case's loop device over a new sparse backing file of `len` bytes (replacing any file
    /// at `backing`); loop devices need root, so without it the case `name` fails to set up.
    pub fn over_new_sparse(name: &str, root: bool, backing: &Path, len: u64) -> Result<Self> {
        if !root {
            return Err(crate::error::BenchError::Skipped {
                case: name.to_string(),
                reason: "loop devices need root".into(),
            });
        }
        remove_if_exists(backing)?;
        File::create(backing)
            .and_then(|f| f.set_len(len))
            .map_err(io_err("create", backing))?;
        Self::attach(backing)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let argv: Vec<OsString> = vec![
            "losetup".into(),
            "-d".into(),
            self.device.as_os_str().to_owned(),
        ];
        if let Err(e) = runner::run_helper(&argv, Duration::from_secs(60)) {
            eprintln!("warning: cannot detach {}: {e}", self.device.display());
        }
    }
}

/// A tmpfs the harness mounted (private: no propagation to other mount namespaces), unmounted
/// and its mount point removed on drop.
pub struct TmpfsMount {
    pub path: PathBuf,
}

impl TmpfsMount {
    /// `mount -t tmpfs -o size=SIZE,mode=0700 --make-private tmpfs PATH` (PATH created). A mount
    /// a killed run left at PATH is unmounted first. Mounting needs root: without it the case
    /// `name` is skipped.
    pub fn new(name: &str, root: bool, path: &Path, size: u64) -> Result<Self> {
        if !root {
            return Err(crate::error::BenchError::Skipped {
                case: name.to_string(),
                reason: "mounting a tmpfs needs root".into(),
            });
        }
        fs::create_dir_all(path).map_err(io_err("create mount point", path))?;
        if is_mount_point(path)? {
            eprintln!("note: unmounting {} left by an earlier run", path.display());
            runner::run_helper(&["umount".into(), path.into()], Duration::from_secs(60))?;
        }
        let argv: Vec<OsString> = vec![
            "mount".into(),
            "-t".into(),
            "tmpfs".into(),
            "-o".into(),
            format!("size={size},mode=0700").into(),
            "--make-private".into(),
            "tmpfs".into(),
            path.into(),
        ];
        runner::run_helper(&argv, Duration::from_secs(60))?;
        Ok(TmpfsMount {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let argv: Vec<OsString> = vec!["umount".into(), self.path.clone().into()];
        match runner::run_helper(&argv, Duration::from_secs(60)) {
            Ok(_) => {
                let _ = fs::remove_dir(&self.path);
            }
            Err(e) => eprintln!("warning: cannot unmount {}: {e}", self.path.display()),
        }
    }
}

/// `path` is the root of a mount (its device differs from its parent's).
fn is_mount_point(path: &Path) -> Result<bool> {
    let parent = path.parent().unwrap_or(path);
    let here = fs::metadata(path).map_err(io_err("stat", path))?;
    let up = fs::metadata(parent).map_err(io_err("stat", parent))?;
    Ok(here.dev() != up.dev())
}

/// (compact, iso) UTC timestamps of now: `20261123T170000Z`, `2026-11-23T17:00:00Z`.
pub fn timestamps() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (proleptic Gregorian), after H. Hinnant's public-domain algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        format!("{y:04}{mo:02}{d:02}T{h:02}{m:02}{s:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z"),
    )
}

/// Kernel release and file system type of `dir`, for the record.
pub fn environment(dir: &Path) -> serde_json::Value {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fstype = runner::run_helper(
        &[
            "findmnt".into(),
            "-n".into(),
            "-o".into(),
            "FSTYPE,SOURCE".into(),
            "-T".into(),
            dir.as_os_str().to_owned(),
        ],
        Duration::from_secs(10),
    )
    .unwrap_or_default();
    serde_json::json!({
        "kernel": kernel.trim(),
        "cpus": cpus,
        "loadavg_at_start": loadavg.trim(),
        "work_dir_fs": fstype.trim(),
    })
}

/// Newest modification time of the `.rs` files under `dirs` (recursively).
pub fn newest_source(dirs: &[PathBuf]) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                if let Ok(t) = m.modified() {
                    newest = newest.max(Some(t));
                }
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> u64 {
        read_u64(Path::new(NR_HUGEPAGES)).unwrap()
    }

    #[test]
    fn huge_pages_are_reserved_for_a_run_and_given_back() {
        if !is_root() {
            let why =
                "huge_pages_are_reserved_for_a_run_and_given_back needs root (vm.nr_hugepages)";
            assert!(
                std::env::var_os("EMBER_REQUIRE_SYSTEM_TESTS").is_none_or(|v| v != "1"),
                "{why}"
            );
            eprintln!("skipped: {why}");
            return;
        }
        let page = huge_page_size().expect("Hugepagesize in /proc/meminfo");
        let before = pool();
        {
            let _r = HugePages::reserve(3 * page - 1).unwrap();
            assert_eq!(pool(), before + 3, "3 pages for 3 pages less a byte");
        }
        assert_eq!(pool(), before, "given back on drop");
    }

    #[test]
    fn timestamp_shape() {
        let (c, i) = super::timestamps();
        assert_eq!(c.len(), 16);
        assert!(i.ends_with('Z') && i.len() == 20);
    }
}
