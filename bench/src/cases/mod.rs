//! Cases × tools. A [`Case`] builds its fixtures, lists the tools that race on it (Ember, the
//! peers operators use today, and a fio device ceiling), prepares the destination before each
//! timed run, validates and measures the output, and cleans up. New workloads (issue 4 wipes,
//! issue 5 images) are new `Case` implementations; new contenders are new [`Tool`] entries.

pub mod copy;
pub mod image;
pub mod wipe;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::Result;
use crate::fixture::{self, Fill, FixtureSpec};
use crate::runner::{self, RunStatus};
use crate::units::{GIB, MIB, TIB};
use crate::util::{self, LoopDevice};
use crate::verify::Validation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The contender under test.
    Ember,
    /// A tool Cinder (or an operator) uses today.
    Peer,
    /// fio: what the device can do, the upper bound for any copy.
    Ceiling,
}

/// One contender on one case: the commands it runs (in sequence, timed together).
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    pub role: Role,
    pub steps: Vec<Vec<OsString>>,
    /// Why the tool is not run (missing binary, ember subcommand not there yet, needs a device).
    pub skip: Option<String>,
}

impl Tool {
    pub fn new(name: &str, role: Role, steps: Vec<Vec<OsString>>) -> Self {
        let skip = steps
            .iter()
            .filter_map(|s| s.first())
            .find(|bin| util::which(&bin.to_string_lossy()).is_none() && !Path::new(bin).exists())
            .map(|bin| format!("{} is not installed", bin.to_string_lossy()));
        Tool {
            name: name.to_string(),
            role,
            steps,
            skip,
        }
    }

    pub fn skipped(name: &str, role: Role, reason: String) -> Self {
        Tool {
            name: name.to_string(),
            role,
            steps: Vec::new(),
            skip: Some(reason),
        }
    }

    pub fn command_line(&self) -> String {
        runner::render_steps(&self.steps)
    }
}

/// What a case measures, known after setup.
#[derive(Debug, Clone, Serialize)]
pub struct CaseInfo {
    pub kind: &'static str,
    /// Logical size of the source / target (bytes).
    pub logical: u64,
    /// Bytes MB/s is computed from: allocated data for sparse sources, the whole size otherwise.
    pub data_bytes: u64,
    /// Allocated bytes of the source (st_blocks * 512), when there is one.
    pub src_allocated: Option<u64>,
    /// Bytes of the source in SEEK_DATA ranges (data actually mapped, without file-system
    /// metadata blocks).
    pub src_mapped: Option<u64>,
    /// Goal "destination allocation no larger than the source's" applies with this limit
    /// (st_blocks * 512 of the source).
    pub alloc_limit: Option<u64>,
    pub notes: Vec<String>,
}

impl CaseInfo {
    /// The info of a case that reads the file `src`: its allocated and mapped bytes measured
    /// now; the allocation goal applies (limited to the source's allocation) when `alloc_goal`.
    pub fn with_source(
        kind: &'static str,
        logical: u64,
        data_bytes: u64,
        src: &Path,
        alloc_goal: bool,
        notes: Vec<String>,
    ) -> Result<Self> {
        let allocated = util::allocated(src)?;
        let mapped = util::mapped(src)?;
        Ok(CaseInfo {
            kind,
            logical,
            data_bytes,
            src_allocated: Some(allocated),
            src_mapped: Some(mapped),
            alloc_limit: alloc_goal.then_some(allocated),
            notes,
        })
    }
}

pub trait Case {
    fn name(&self) -> &str;
    /// Build (or reuse) fixtures, attach devices.
    fn setup(&mut self, ctx: &Ctx) -> Result<CaseInfo>;
    fn tools(&self, ctx: &Ctx) -> Vec<Tool>;
    /// Untimed: make the destination ready (absent, pre-filled, stamped).
    fn before_run(&self, tool: &Tool) -> Result<()>;
    /// Check the output of a run just made.
    fn validate(&self, tool: &Tool, ctx: &Ctx) -> Result<Validation>;
    /// The regular file whose allocation is the destination's (the loop device's backing file
    /// for devices); None for the fio ceiling.
    fn dst_file(&self, tool: &Tool) -> Option<PathBuf>;
    /// Delete the destination.
    fn after_run(&self, tool: &Tool) -> Result<()>;
    /// Detach devices, delete per-case targets.
    fn teardown(&mut self) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    Full,
    Quick,
}

impl Scale {
    fn suffix(self) -> &'static str {
        match self {
            Scale::Full => "",
            Scale::Quick => "-quick",
        }
    }

    pub fn sparse8g(self) -> FixtureSpec {
        let logical = match self {
            Scale::Full => 8 * GIB,
            Scale::Quick => 512 * MIB,
        };
        FixtureSpec {
            name: format!("sparse8g{}", self.suffix()),
            logical,
            data: logical / 10,
            ext_min: MIB,
            ext_max: 4 * MIB,
            seed: 0x8_0001,
            fill: Fill::Random,
            stride: None,
        }
    }

    pub fn full4g(self) -> FixtureSpec {
        let logical = match self {
            Scale::Full => 4 * GIB,
            Scale::Quick => 256 * MIB,
        };
        FixtureSpec::full(format!("full4g{}", self.suffix()), logical, 0x4_0002)
    }

    pub fn sparse4t(self) -> FixtureSpec {
        let (logical, data) = match self {
            Scale::Full => (4 * TIB, 64 * MIB),
            Scale::Quick => (64 * GIB, 16 * MIB),
        };
        FixtureSpec {
            name: format!("sparse4t{}", self.suffix()),
            logical,
            data,
            ext_min: 4 * MIB,
            ext_max: 16 * MIB,
            seed: 0x4_0003,
            fill: Fill::Random,
            stride: None,
        }
    }

    /// Compressible data for compressed images: 4 GiB logical, 1 GiB of printable text in
    /// 1-4 MiB extents (quick: 256 MiB logical, 64 MiB of text).
    pub fn text4g(self) -> FixtureSpec {
        let (logical, data) = match self {
            Scale::Full => (4 * GIB, GIB),
            Scale::Quick => (256 * MIB, 64 * MIB),
        };
        FixtureSpec {
            name: format!("text4g{}", self.suffix()),
            logical,
            data,
            ext_min: MIB,
            ext_max: 4 * MIB,
            seed: 0x4_0004,
            fill: Fill::Text,
            stride: None,
        }
    }

    pub fn wipe_size(self) -> u64 {
        match self {
            Scale::Full => 4 * GIB,
            Scale::Quick => 256 * MIB,
        }
    }
}

/// The `ember` binary and which subcommands it has.
pub struct Ember {
    pub path: PathBuf,
    helps: RefCell<HashMap<String, std::result::Result<String, String>>>,
}

impl Ember {
    pub fn new(path: PathBuf) -> Self {
        Ember {
            path,
            helps: RefCell::new(HashMap::new()),
        }
    }

    fn help(&self, sub: &[&str]) -> std::result::Result<String, String> {
        let key = sub.join(" ");
        if let Some(h) = self.helps.borrow().get(&key) {
            return h.clone();
        }
        let h = if !self.path.exists() {
            Err(format!(
                "{} not found (cargo build --release, or --ember PATH)",
                self.path.display()
            ))
        } else {
            let mut argv: Vec<OsString> = vec![self.path.clone().into()];
            argv.extend(sub.iter().map(OsString::from));
            argv.push("--help".into());
            let o = runner::run_steps(&[argv], Duration::from_secs(20));
            match o.status {
                RunStatus::Ok => Ok(o.stdout),
                _ => Err(format!(
                    "`ember {key}` does not exist in {} yet",
                    self.path.display()
                )),
            }
        };
        self.helps.borrow_mut().insert(key, h.clone());
        h
    }

    /// `ember SUB... ARGS [--json]` (`--json` when the subcommand has it), or why not.
    pub fn tool(&self, name: &str, sub: &[&str], args: Vec<OsString>) -> Tool {
        match self.help(sub) {
            Err(reason) => Tool::skipped(name, Role::Ember, reason),
            Ok(help) => {
                let mut argv: Vec<OsString> = vec![self.path.clone().into()];
                argv.extend(sub.iter().map(OsString::from));
                argv.extend(args);
                if help.contains("--json") {
                    argv.push("--json".into());
                }
                Tool::new(name, Role::Ember, vec![argv])
            }
        }
    }

    /// Whether `ember SUB --help` mentions `flag`.
    pub fn has_flag(&self, sub: &[&str], flag: &str) -> bool {
        self.help(sub).map(|h| h.contains(flag)).unwrap_or(false)
    }
}

pub struct Ctx {
    pub dir: PathBuf,
    pub ember: Ember,
    pub timeout: Duration,
    pub root: bool,
}

pub fn os(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

pub fn arg(s: impl Into<String>) -> OsString {
    OsString::from(s.into())
}

/// `qemu-img convert -f FROM -O TO OPTS... SRC DST`: every qemu-img peer and derived image.
pub fn qemu_img_convert(
    from: &str,
    to: &str,
    opts: &[&str],
    src: &Path,
    dst: &Path,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = ["qemu-img", "convert", "-f", from, "-O", to]
        .into_iter()
        .chain(opts.iter().copied())
        .map(arg)
        .collect();
    argv.extend([os(src), os(dst)]);
    argv
}

/// A destination loop device over a new sparse backing file `backing` of `len` bytes; adds the
/// report note that says how it is prepared before every run (`stamp`), ending in `why`.
pub fn stamped_loop(
    ctx: &Ctx,
    name: &str,
    backing: &Path,
    len: u64,
    why: &str,
    notes: &mut Vec<String>,
) -> Result<LoopDevice> {
    let dev = LoopDevice::over_new_sparse(name, ctx.root, backing, len)?;
    notes.push(format!(
        "{} over sparse {} (losetup --direct-io=on), discarded and stamped with 1 MiB of non-zero data every 64 MiB before every run{why}",
        dev.device.display(),
        backing.display()
    ));
    Ok(dev)
}

/// Prepares a [`stamped_loop`] device before a run: discarded, then stamped with 1 MiB of
/// non-zero data every 64 MiB of its `len` bytes.
pub fn discard_and_stamp(dev: &LoopDevice, len: u64) -> Result<()> {
    runner::run_helper(
        &[arg("blkdiscard"), os(&dev.device)],
        Duration::from_secs(120),
    )?;
    fixture::stamp(&dev.device, len, 64 * MIB)
}

/// `sync PATH`: an fsync of the file or device a peer wrote (for peers that do not flush), so
/// they pay what Ember's fdatasync of its destination costs, no more (`sync -f` would flush the
/// whole file system, other processes' dirty data included) and no less (a loop device's own
/// page cache is flushed too, which a sync of its backing file's file system skips).
pub fn sync_file(path: &Path) -> Vec<OsString> {
    vec![arg("sync"), os(path)]
}

/// fio device ceiling: a reader job (`read` = file, bytes) and a writer job (`write` = file,
/// bytes) running at once, 1 MiB blocks, iodepth 32, io_uring, O_DIRECT; the writer fsyncs at
/// its end, as every timed tool makes its data durable. Sizes are rounded up to 1 MiB.
pub fn fio_ceiling(read: Option<(&Path, u64)>, write: (&Path, u64)) -> Tool {
    let mib = |n: u64| n.div_ceil(MIB).max(1) * MIB;
    let mut argv = vec![
        arg("fio"),
        arg("--output-format=json"),
        arg("--bs=1M"),
        arg("--iodepth=32"),
        arg("--ioengine=io_uring"),
        arg("--direct=1"),
    ];
    if let Some((path, n)) = read {
        argv.push(arg("--name=read"));
        argv.push(arg(format!("--filename={}", path.display())));
        argv.push(arg("--rw=read"));
        argv.push(arg(format!("--size={}", mib(n))));
    }
    argv.push(arg("--name=write"));
    argv.push(arg(format!("--filename={}", write.0.display())));
    argv.push(arg("--rw=write"));
    argv.push(arg(format!("--size={}", mib(write.1))));
    // A new file is first sized with ftruncate, as ember and qemu-img do: without it every
    // write extends the file, which ext4 runs synchronously, one at a time (a slower pattern
    // than any copy tool's, so not a ceiling).
    argv.push(arg("--fallocate=truncate"));
    argv.push(arg("--end_fsync=1"));
    Tool::new("fio ceiling", Role::Ceiling, vec![argv])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_img_convert_argv() {
        let argv = qemu_img_convert(
            "qcow2",
            "raw",
            &["-t", "none", "-W"],
            Path::new("/a/src.qcow2"),
            Path::new("/dev/loop7"),
        );
        let want = [
            "qemu-img",
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "-t",
            "none",
            "-W",
            "/a/src.qcow2",
            "/dev/loop7",
        ];
        assert_eq!(argv, want.map(OsString::from));
        let plain = qemu_img_convert("raw", "qcow2", &[], Path::new("/s"), Path::new("/d"));
        assert_eq!(
            plain,
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "/s", "/d"].map(OsString::from)
        );
    }
}
