//! Cases × tools. A [`Case`] builds its fixtures, lists the tools that race on it (Ember, the
//! peers operators use today, and the fio device reference), prepares the destination before
//! each timed run, validates and measures the output, and cleans up. One case family per file:
//! `copy` (raw copies on the work dir's disk), `wipe`, `image`, `fast` (RAM-backed storage),
//! `frag` (heavily fragmented sources), `concurrent` (several copies at once); the command
//! lines they share are in `peers`. New workloads are new `Case` implementations; new
//! contenders are new [`Tool`] entries.

pub mod concurrent;
pub mod copy;
pub mod fast;
pub mod frag;
pub mod image;
pub mod peers;
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
    /// One fio configuration moving the same bytes; the fastest is the device reference.
    Reference,
}

/// One contender on one case: the commands it runs. Usually one job (commands in sequence,
/// timed together); the concurrency case's tools run several jobs at once.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    pub role: Role,
    pub jobs: Vec<Vec<Vec<OsString>>>,
    /// Why the tool is not run (missing binary, ember subcommand not there yet, needs a device).
    pub skip: Option<String>,
    /// The bytes this tool moves when they are not the case's data bytes (the concurrency
    /// case's single reference copy).
    pub bytes: Option<u64>,
    /// The rate limit each job was given (bytes/s): the report checks what each achieved.
    pub rate_limit: Option<u64>,
    /// Bytes of reserved huge pages (hugetlb) its runs need, reserved before each run and
    /// given back after it, untimed (fio's huge-page buffers); 0 for none.
    pub huge_pages: u64,
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
            jobs: vec![steps],
            skip,
            bytes: None,
            rate_limit: None,
            huge_pages: 0,
        }
    }

    pub fn skipped(name: &str, role: Role, reason: String) -> Self {
        Tool {
            skip: Some(reason),
            jobs: Vec::new(),
            ..Tool::new(name, role, Vec::new())
        }
    }

    /// `parts` (one job each) started at once, as one tool; skipped when any part is.
    pub fn concurrent(name: &str, parts: Vec<Tool>) -> Self {
        let role = parts.first().map_or(Role::Peer, |t| t.role);
        if let Some(why) = parts.iter().find_map(|t| t.skip.clone()) {
            return Tool::skipped(name, role, why);
        }
        Tool {
            huge_pages: parts.iter().map(|t| t.huge_pages).sum(),
            jobs: parts.into_iter().flat_map(|t| t.jobs).collect(),
            ..Tool::new(name, role, Vec::new())
        }
    }

    /// The commands, `a && b` for a sequence and `  &  ` between jobs started at once.
    pub fn command_line(&self) -> String {
        self.jobs
            .iter()
            .map(|steps| runner::render_steps(steps))
            .collect::<Vec<_>>()
            .join("  &  ")
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
    /// for devices); None for the device reference.
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

/// What `tool` writes: the device reference its own file, the others the case's destination.
pub fn output_of<'a>(tool: &Tool, dst: &'a Path, fio_dst: &'a Path) -> &'a Path {
    if tool.role == Role::Reference {
        fio_dst
    } else {
        dst
    }
}

/// The verdict for a device reference run (fio writes no copy to check); None for the others.
pub fn reference_unchecked(tool: &Tool) -> Option<Validation> {
    (tool.role == Role::Reference).then(|| Validation::NotChecked {
        reason: "device reference".into(),
    })
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
