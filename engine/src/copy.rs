//! Copies and comparisons: the engine's public entry points for moving volume data.
//!
//! Destination semantics:
//! - a new (or empty) regular file is created at the source's size and only data is written:
//!   holes stay holes;
//! - an existing non-empty regular file is only overwritten with `force`, and is then truncated
//!   and rebuilt the same way (as `cp` does);
//! - a block device (or a byte window of an existing file) must read back as zeros wherever the
//!   source has holes: BLKZEROOUT / PUNCH_HOLE / ZERO_RANGE / zero writes, whichever the target
//!   supports, unless the caller says it is already zeroed (`dest_zeroed`);
//! - all-zero blocks read from the source become holes on such destinations, unless
//!   `preserve_allocation` asks for the source's allocation to be kept exactly.
//!
//! Sparseness is decided by what the destination is, never by a setting of the source.

use crate::alloc;
use crate::endpoint::{Endpoint, Kind, OpenMode};
use crate::error::{Error, Result};
use crate::extent::ExtentMap;
use crate::pipeline::{self, FileSlots, Job, ZeroMode};
use crate::plan::Plan;
use crate::staged::Staged;
use crate::uring::{self, BufferPool};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Smallest and largest block sizes accepted.
pub const MIN_BLOCK_SIZE: usize = 4096;
/// Largest block size accepted (64 MiB).
pub const MAX_BLOCK_SIZE: usize = 64 << 20;
/// Largest queue depth accepted.
pub const MAX_QUEUE_DEPTH: u32 = 1024;

/// A progress callback: (bytes done, bytes total).
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Wraps the I/O backend a job runs on: the seam for in-process fault injection in tests
/// (see `uring::faulty`). Production code leaves it unset.
pub type IoHook = Arc<dyn Fn(Box<dyn uring::IoBackend>) -> Box<dyn uring::IoBackend> + Send + Sync>;

/// Options of a copy.
#[derive(Clone)]
pub struct CopyOptions {
    /// Bytes per I/O (power of two, 4 KiB to 64 MiB).
    pub block_size: usize,
    /// I/Os in flight.
    pub queue_depth: u32,
    /// Use O_DIRECT where the file or device allows it.
    pub direct: bool,
    /// The destination already reads as zeros: holes need no work.
    pub dest_zeroed: bool,
    /// Keep the source's allocation exactly: no zero detection.
    pub preserve_allocation: bool,
    /// Treat all-zero blocks read from the source as holes.
    pub detect_zeroes: bool,
    /// May overwrite an existing non-empty regular file.
    pub force: bool,
    /// fdatasync the destination before reporting success.
    pub sync: bool,
    /// Bytes per second, at most.
    pub bps_limit: Option<u64>,
    /// Set to stop the copy.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Called as bytes complete.
    pub progress: Option<ProgressFn>,
    /// An I/O that does not complete within this fails the copy.
    pub io_timeout: Duration,
    /// Test seam: wraps the I/O backend (fault injection).
    #[doc(hidden)]
    pub io_hook: Option<IoHook>,
    /// Make the copy resumable with this checkpoint ([`copy`] and [`copy_window`]).
    pub checkpoint: Option<crate::checkpoint::Checkpoint>,
    /// After the final flush, read the destination back and check every written block
    /// against the CRC32C of the source bytes, and every other byte of the range is zero.
    pub verify: bool,
    /// Threads decoding compressed image units beside the ring (0: one per CPU; 1: on the
    /// pipeline thread).
    pub decode_threads: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            block_size: 1 << 20,
            queue_depth: 32,
            direct: true,
            dest_zeroed: false,
            preserve_allocation: false,
            detect_zeroes: true,
            force: false,
            sync: true,
            bps_limit: None,
            cancel: None,
            progress: None,
            io_timeout: Duration::from_secs(120),
            io_hook: None,
            checkpoint: None,
            verify: false,
            decode_threads: 0,
        }
    }
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("block_size", &self.block_size)
            .field("queue_depth", &self.queue_depth)
            .field("decode_threads", &self.decode_threads)
            .field("direct", &self.direct)
            .field("dest_zeroed", &self.dest_zeroed)
            .field("preserve_allocation", &self.preserve_allocation)
            .field("detect_zeroes", &self.detect_zeroes)
            .field("force", &self.force)
            .field("sync", &self.sync)
            .field("bps_limit", &self.bps_limit)
            .finish_non_exhaustive()
    }
}

impl CopyOptions {
    /// Checks sizes and limits.
    pub fn validate(&self) -> Result<()> {
        if !self.block_size.is_power_of_two()
            || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size)
        {
            return Err(Error::invalid(format!(
                "invalid block size {}: must be a power of two from 4 KiB to 64 MiB",
                self.block_size
            )));
        }
        if self.queue_depth == 0 || self.queue_depth > MAX_QUEUE_DEPTH {
            return Err(Error::invalid(format!(
                "invalid queue depth {}: must be 1 to {MAX_QUEUE_DEPTH}",
                self.queue_depth
            )));
        }
        if self.bps_limit == Some(0) {
            return Err(Error::invalid(
                "invalid bps limit 0: leave it unset for no limit",
            ));
        }
        Ok(())
    }

    fn zero_detection(&self) -> bool {
        self.detect_zeroes && !self.preserve_allocation
    }
}

/// What a copy did. Serialised as the CLI's `--json` summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Bytes of the volume (source window).
    pub logical_size: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Data bytes written to the destination.
    pub bytes_written: u64,
    /// Bytes made to read as zeros by zeroout/punch/zero-range/zero writes.
    pub bytes_zeroed: u64,
    /// Bytes left as holes (no I/O needed).
    pub bytes_skipped: u64,
    /// Data extents found in the source.
    pub extents: u64,
    /// Wall time, including discovery and the final flush.
    pub seconds: f64,
    /// Logical megabytes (10^6) per second.
    pub mb_per_s: f64,
    /// The I/O backend used ("io_uring" or "sync").
    pub backend: &'static str,
    /// Whether O_DIRECT was used on the (source, destination).
    pub direct: (bool, bool),
    /// How holes were made to read as zeros (after fallbacks).
    pub zero_modes: Vec<ZeroMode>,
    /// With `verify`: bytes of the destination read back and proven (checksums and zeros).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_bytes: Option<u64>,
}

/// A byte window of a file or block device (drivers: an LV segment on a PV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The file or device.
    pub path: PathBuf,
    /// Where the window starts.
    pub offset: u64,
    /// Its length; `None` for "to the end" (source) or "the source's length" (destination).
    pub len: Option<u64>,
}

impl Window {
    /// The whole file or device.
    pub fn whole(path: impl Into<PathBuf>) -> Self {
        Window {
            path: path.into(),
            offset: 0,
            len: None,
        }
    }

    /// `len` bytes at `offset`.
    pub fn range(path: impl Into<PathBuf>, offset: u64, len: u64) -> Self {
        Window {
            path: path.into(),
            offset,
            len: Some(len),
        }
    }

    fn is_whole(&self) -> bool {
        self.offset == 0 && self.len.is_none()
    }
}

/// Copies `src` to `dst` (files or block devices).
pub fn copy(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<Summary> {
    copy_window(&Window::whole(src), &Window::whole(dst), opts)
}

/// Copies a window of `src` to a window of `dst`.
pub fn copy_window(src: &Window, dst: &Window, opts: &CopyOptions) -> Result<Summary> {
    if let Some(cp) = &opts.checkpoint {
        return crate::checkpoint::copy_resumable(src, dst, opts, cp);
    }
    let started = Instant::now();
    opts.validate()?;
    let s = open_source(&src.path, opts.direct)?;
    copy_from(s, src, DestRef::Path(dst), opts, started)
}

/// Copies the whole of `src`, a file already open for reading (one that was inspected
/// through this descriptor: what is copied is that file, whatever happens to its path), to
/// `dst`. `src_path` names it in messages.
pub fn copy_open(src: File, src_path: &Path, dst: &Path, opts: &CopyOptions) -> Result<Summary> {
    copy_open_into(src, src_path, DestRef::Path(&Window::whole(dst)), opts)
}

/// [`copy_open`] into `dst`, a new file that appears at its path once complete (see
/// [`Staged::publish`], which the caller runs after this succeeds).
pub fn copy_open_to_staged(
    src: File,
    src_path: &Path,
    dst: &Staged,
    opts: &CopyOptions,
) -> Result<Summary> {
    copy_open_into(src, src_path, DestRef::Staged(dst), opts)
}

pub(crate) fn copy_open_into(
    src: File,
    src_path: &Path,
    to: DestRef<'_>,
    opts: &CopyOptions,
) -> Result<Summary> {
    let started = Instant::now();
    opts.validate()?;
    if opts.checkpoint.is_some() {
        return Err(Error::invalid(
            "a resumable copy opens its source by path; it cannot start from an open file",
        ));
    }
    let s = Endpoint::from_open_file(src, src_path, opts.direct)?;
    copy_from(s, &Window::whole(src_path), to, opts, started)
}

/// Where a run writes: a window of a path (opened here), or a staged new file.
#[derive(Clone, Copy)]
pub(crate) enum DestRef<'a> {
    Path(&'a Window),
    Staged(&'a Staged),
}

fn copy_from(
    s: Endpoint,
    src: &Window,
    to: DestRef<'_>,
    opts: &CopyOptions,
    started: Instant,
) -> Result<Summary> {
    let len = window_len(&s, src)?;
    let mut dest = Destination::open_ref(to, len, opts)?;
    let dst = dest.window.clone();
    let res = (|| {
        if s.identity == dest.ep.identity {
            let a = src.offset..src.offset + len;
            let b = dst.offset..dst.offset + len;
            if a.start < b.end && b.start < a.end {
                return Err(Error::invalid(format!(
                    "source {} and destination {} are the same file",
                    src.path.display(),
                    dst.path.display()
                )));
            }
        }
        dest.prepare(len)?;
        let data = alloc::data_ranges(&s, src.offset..src.offset + len)?;
        let plan = Plan::from_data(&data, src.offset, dst.offset, len);
        let mut summary = run_plan(Some(&s), &dest, &plan, opts, opts.zero_detection(), started)?;
        summary.extents = data.extent_count() as u64;
        Ok(summary)
    })();
    // Any failure after the destination was created (sizing, discovery, the copy itself)
    // removes it, so nothing half-done looks like a volume.
    dest.discard_if_failed(&res);
    res
}

/// Runs an image plan: `Copy`/`Decode` source offsets are in `src` (e.g. a qcow2 file); the
/// destination gets the plan's `logical_size` bytes with the same semantics as [`copy`].
pub fn execute_plan(src: &Path, plan: &Plan, dst: &Path, opts: &CopyOptions) -> Result<Summary> {
    let started = Instant::now();
    opts.validate()?;
    let s = open_source(src, opts.direct)?;
    execute_plan_from(s, plan, DestRef::Path(&Window::whole(dst)), opts, started)
}

/// [`execute_plan`] reading `src`, a file already open (the image the plan was made from,
/// through the same descriptor: a path swapped after inspection changes nothing).
pub fn execute_plan_open(
    src: File,
    src_path: &Path,
    plan: &Plan,
    dst: &Path,
    opts: &CopyOptions,
) -> Result<Summary> {
    execute_plan_open_into(
        src,
        src_path,
        plan,
        DestRef::Path(&Window::whole(dst)),
        opts,
    )
}

/// [`execute_plan_open`] into `dst`, a new file that appears at its path once complete (see
/// [`Staged::publish`], which the caller runs after this succeeds).
pub fn execute_plan_open_to_staged(
    src: File,
    src_path: &Path,
    plan: &Plan,
    dst: &Staged,
    opts: &CopyOptions,
) -> Result<Summary> {
    execute_plan_open_into(src, src_path, plan, DestRef::Staged(dst), opts)
}

pub(crate) fn execute_plan_open_into(
    src: File,
    src_path: &Path,
    plan: &Plan,
    to: DestRef<'_>,
    opts: &CopyOptions,
) -> Result<Summary> {
    let started = Instant::now();
    opts.validate()?;
    let s = Endpoint::from_open_file(src, src_path, opts.direct)?;
    execute_plan_from(s, plan, to, opts, started)
}

fn execute_plan_from(
    s: Endpoint,
    plan: &Plan,
    to: DestRef<'_>,
    opts: &CopyOptions,
    started: Instant,
) -> Result<Summary> {
    let src = s.path.clone();
    let src = src.as_path();
    plan.validate().map_err(|reason| Error::BadImage {
        path: src.to_path_buf(),
        reason,
    })?;
    let mut dest = Destination::open_ref(to, plan.logical_size, opts)?;
    if plan.dst_base != dest.window.offset {
        return Err(Error::invalid(format!(
            "an image plan for destination offset {} must start there, not at {}",
            dest.window.offset, plan.dst_base
        )));
    }
    let dst = dest.window.path.clone();
    let res = (|| {
        if s.identity == dest.ep.identity {
            return Err(Error::invalid(format!(
                "image {} and destination {} are the same file",
                src.display(),
                dst.display()
            )));
        }
        dest.prepare(plan.logical_size)?;
        let mut summary = run_plan(Some(&s), &dest, plan, opts, opts.zero_detection(), started)?;
        summary.extents = plan
            .ops
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    crate::plan::Op::Copy { .. } | crate::plan::Op::Decode { .. }
                )
            })
            .count() as u64;
        Ok(summary)
    })();
    dest.discard_if_failed(&res);
    res
}

pub(crate) fn open_source(path: &Path, direct: bool) -> Result<Endpoint> {
    Endpoint::open(
        path,
        OpenMode {
            write: false,
            create: false,
            direct,
            exclusive: false,
        },
    )
    .map_err(|e| match e {
        Error::Open { path, source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::Open {
                op: "open source",
                path,
                source,
            }
        }
        e => e,
    })
}

pub(crate) fn window_len(ep: &Endpoint, w: &Window) -> Result<u64> {
    if w.offset > ep.size {
        return Err(Error::invalid(format!(
            "offset {} is past the end of {} ({} bytes)",
            w.offset,
            w.path.display(),
            ep.size
        )));
    }
    let avail = ep.size - w.offset;
    match w.len {
        None => Ok(avail),
        Some(l) if l <= avail => Ok(l),
        Some(l) => Err(Error::invalid(format!(
            "range {}+{} runs past the end of {} ({} bytes)",
            w.offset,
            l,
            w.path.display(),
            ep.size
        ))),
    }
}

/// An opened destination and how its holes are made to read as zeros.
pub(crate) struct Destination {
    pub(crate) ep: Endpoint,
    window: Window,
    pub(crate) mode: ZeroMode,
    pub(crate) created: bool,
    /// Truncate the whole file and rebuild it sparse.
    rebuild: bool,
    /// Opened by its path (a failed run that created it removes it); false for a staged file.
    by_path: bool,
}

impl Destination {
    pub(crate) fn open_ref(to: DestRef<'_>, len: u64, opts: &CopyOptions) -> Result<Destination> {
        let st = match to {
            DestRef::Path(w) => return Self::open(w, len, opts),
            DestRef::Staged(st) => st,
        };
        let file = dup(st.file(), st.out())?;
        let ep = Endpoint::from_new_file(file, st.out(), &st.reopen_path(), opts.direct)?;
        if ep.kind != Kind::File || ep.size != 0 {
            return Err(Error::invalid(format!(
                "staged output for {} is not a new empty file",
                st.out().display()
            )));
        }
        Ok(Destination {
            ep,
            window: Window::whole(st.out()),
            mode: ZeroMode::Leave,
            created: true,
            rebuild: true,
            by_path: false,
        })
    }

    pub(crate) fn open(w: &Window, len: u64, opts: &CopyOptions) -> Result<Destination> {
        let existed = w.path.exists();
        let ep = Endpoint::open(
            &w.path,
            OpenMode {
                write: true,
                create: w.is_whole() && !existed,
                direct: opts.direct,
                // A whole device is claimed (refused when mounted or held); a byte window (an
                // LV's extents on a PV) shares the device with its neighbours' windows.
                exclusive: w.is_whole(),
            },
        )?;
        let need = w
            .offset
            .checked_add(len)
            .ok_or_else(|| Error::invalid("range overflows"))?;
        if let Some(wl) = w.len {
            if wl < len {
                return Err(Error::invalid(format!(
                    "destination range of {} is {wl} bytes, smaller than the source ({len} bytes)",
                    w.path.display()
                )));
            }
        }
        let (mode, rebuild) = match ep.kind {
            Kind::Block => {
                if need > ep.size {
                    return Err(Error::invalid(format!(
                        "destination {} ({} bytes) is smaller than the source ({len} bytes)",
                        w.path.display(),
                        ep.size.saturating_sub(w.offset)
                    )));
                }
                (
                    if opts.dest_zeroed {
                        ZeroMode::Leave
                    } else if opts.preserve_allocation {
                        // Thick: keep every block allocated.
                        ZeroMode::Zeroout
                    } else {
                        // Unmap-allowed write-zeroes: a thin device keeps its holes.
                        ZeroMode::Punch
                    },
                    false,
                )
            }
            Kind::File if w.is_whole() => {
                if existed && ep.size > 0 && !opts.force {
                    return Err(Error::invalid(format!(
                        "destination {} exists and is not empty (use --force to overwrite it)",
                        w.path.display()
                    )));
                }
                (ZeroMode::Leave, true)
            }
            Kind::File => {
                if need > ep.size {
                    return Err(Error::invalid(format!(
                        "destination range {}+{len} runs past the end of {} ({} bytes)",
                        w.offset,
                        w.path.display(),
                        ep.size
                    )));
                }
                let mode = if opts.dest_zeroed {
                    ZeroMode::Leave
                } else if opts.preserve_allocation {
                    ZeroMode::ZeroRange
                } else {
                    ZeroMode::Punch
                };
                (mode, false)
            }
        };
        Ok(Destination {
            ep,
            window: w.clone(),
            mode,
            created: !existed,
            rebuild,
            by_path: true,
        })
    }

    /// Makes a whole-file destination a sparse file of `len` bytes (called after the same-file
    /// check, so a source is never truncated).
    pub(crate) fn prepare(&mut self, len: u64) -> Result<()> {
        if self.rebuild {
            let path = &self.window.path;
            self.ep
                .file
                .set_len(0)
                .and_then(|_| self.ep.file.set_len(len))
                .map_err(|e| Error::io("set the size of", path, len, e))?;
        }
        Ok(())
    }

    pub(crate) fn discard_if_failed<T>(&self, res: &Result<T>) {
        if res.is_err() && self.created && self.by_path {
            // A file we created holds a partial copy: remove it so nothing half-done looks
            // like a volume.
            let _ = std::fs::remove_file(&self.window.path);
        }
    }
}

fn dup(f: &File, path: &Path) -> Result<File> {
    f.try_clone()
        .map_err(|e| Error::open("duplicate descriptor of", path, e))
}

/// The destination side of a pipeline run.
pub(crate) struct Target<'a> {
    pub ep: &'a Endpoint,
    pub mode: ZeroMode,
    pub created: bool,
    /// Fall back to the next zeroing method when one is refused.
    pub zero_fallback: bool,
}

fn run_plan(
    src: Option<&Endpoint>,
    dest: &Destination,
    plan: &Plan,
    opts: &CopyOptions,
    detect_zeroes: bool,
    started: Instant,
) -> Result<Summary> {
    let target = Target {
        ep: &dest.ep,
        mode: dest.mode,
        created: dest.created,
        zero_fallback: true,
    };
    run_plan_on(src, &target, plan, opts, detect_zeroes, started, None)
        .0
        .map(|(s, _)| s)
}

/// What a pipeline run returns: the summary and zeroing record, or the error; plus the ranges
/// completed (when checkpointing), known even after a failure.
pub(crate) type RunResult = (
    Result<(Summary, Vec<pipeline::ZeroedRange>)>,
    Option<ExtentMap>,
);

/// Runs `plan` from `src` (none for wipes) onto `t`, then flushes; returns the summary and the
/// pipeline's per-range zeroing record.
pub(crate) fn run_plan_on(
    src: Option<&Endpoint>,
    t: &Target<'_>,
    plan: &Plan,
    opts: &CopyOptions,
    detect_zeroes: bool,
    started: Instant,
    checkpoint: Option<(&pipeline::CheckpointFn<'_>, Duration)>,
) -> RunResult {
    match run_inner(src, t, plan, opts, detect_zeroes, started, checkpoint) {
        Ok(r) => r,
        Err(e) => (Err(e), None),
    }
}

fn run_inner(
    src: Option<&Endpoint>,
    t: &Target<'_>,
    plan: &Plan,
    opts: &CopyOptions,
    detect_zeroes: bool,
    started: Instant,
    checkpoint: Option<(&pipeline::CheckpointFn<'_>, Duration)>,
) -> Result<RunResult> {
    let d = t.ep;
    let mut files = Vec::with_capacity(4);
    let mut push = |f: &File, p: &Path| -> Result<usize> {
        files.push(dup(f, p)?);
        Ok(files.len() - 1)
    };
    let (s_idx, s_direct) = match src {
        Some(s) => (
            push(&s.file, &s.path)?,
            s.direct.as_ref().map(|f| push(f, &s.path)).transpose()?,
        ),
        None => (usize::MAX, None),
    };
    let dst_idx = push(&d.file, &d.path)?;
    let dst_direct = d.direct.as_ref().map(|f| push(f, &d.path)).transpose()?;
    // Bytes the ring will move (data, and zeros it writes), and so the buffers worth having:
    // a job that moves little gets a small pool (less memory to fault in and pin). Zeroing
    // methods that may fall back to writes could need the full depth.
    let (mut io_bytes, mut may_write_zeros) = (0u64, 0u64);
    for op in &plan.ops {
        match *op {
            crate::plan::Op::Copy { len, .. } | crate::plan::Op::Decode { len, .. } => {
                io_bytes += len
            }
            crate::plan::Op::Zero { len, .. } if t.mode == ZeroMode::Write => io_bytes += len,
            crate::plan::Op::Zero { len, .. } if t.zero_fallback && t.mode != ZeroMode::Leave => {
                may_write_zeros += len
            }
            _ => {}
        }
    }
    let bs = opts.block_size as u64;
    let qd =
        (opts.queue_depth as u64).min((io_bytes + may_write_zeros).div_ceil(bs).max(2)) as usize;
    let pool = BufferPool::new(qd + 1, opts.block_size)
        .map_err(|e| Error::open("allocate I/O buffers for", &d.path, e))?;
    let mut backend = uring::open_backend(files, qd as u32, pool, io_bytes).map_err(Error::Ring)?;
    if let Some(hook) = &opts.io_hook {
        backend = hook(backend);
    }
    let job = Job {
        src,
        dst: d,
        plan,
        block_size: opts.block_size,
        queue_depth: qd,
        detect_zeroes,
        zero_mode: t.mode,
        bps_limit: opts.bps_limit,
        cancel: opts.cancel.as_deref(),
        progress: opts.progress.as_deref(),
        io_timeout: opts.io_timeout,
        files: FileSlots {
            src: s_idx,
            src_direct: s_direct,
            dst: dst_idx,
            dst_direct,
        },
        zero_fallback: t.zero_fallback,
        checkpoint: checkpoint.map(|c| c.0),
        checkpoint_every: checkpoint.map_or(Duration::MAX, |c| c.1),
        checksum: opts.verify,
        decode_threads: match opts.decode_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
    };
    let (mut c, err) = pipeline::run(&job, backend.as_mut());
    let backend_name = backend.name();
    // Dropping the backend reaps (or cancels) everything still in flight.
    drop(backend);
    let completed = c.completed.take();
    if let Some(e) = err {
        return Ok((Err(e), completed));
    }
    if opts.sync {
        if let Err(e) = d.sync() {
            return Ok((Err(e), None));
        }
        if t.created {
            sync_parent(&d.path);
        }
    }
    let verified_bytes = if opts.verify {
        match verify_written(d, plan, &c.sums, opts) {
            Ok(n) => Some(n),
            Err(e) => return Ok((Err(e), None)),
        }
    } else {
        None
    };
    let seconds = started.elapsed().as_secs_f64();
    let summary = Summary {
        logical_size: plan.logical_size,
        bytes_read: c.bytes_read,
        bytes_written: c.bytes_written,
        bytes_zeroed: c.bytes_zeroed,
        bytes_skipped: c.bytes_skipped,
        extents: 0,
        seconds,
        mb_per_s: if seconds > 0.0 {
            plan.logical_size as f64 / 1e6 / seconds
        } else {
            0.0
        },
        backend: backend_name,
        direct: (src.is_some_and(|s| s.direct.is_some()), d.direct.is_some()),
        zero_modes: c.zero_modes,
        verified_bytes,
    };
    Ok((Ok((summary, c.zero_ranges)), completed))
}

/// Reads the destination back (O_DIRECT where possible): every block written must match the
/// CRC32C taken from the source bytes, and everything else in the plan's range must be zero.
fn verify_written(
    d: &Endpoint,
    plan: &Plan,
    sums: &[pipeline::ChunkSum],
    opts: &CopyOptions,
) -> Result<u64> {
    // The very file written (through its descriptor), not whatever its path names now.
    let rd = Endpoint::from_open_file(dup(&d.file, &d.path)?, &d.path, opts.direct)?;
    let mut sums = sums.to_vec();
    sums.sort_unstable_by_key(|s| s.dst);
    let chunks = sums.iter().map(|s| (s.dst, s.len as usize));
    let r = crate::verify::scan_chunks(&[&rd], chunks, opts, |off, bufs| {
        // Completions arrive in any order: look the chunk's expected sum up by offset.
        let ok = sums
            .binary_search_by_key(&off, |s| s.dst)
            .is_ok_and(|i| crc32c::crc32c(bufs[0]) == sums[i].crc);
        (!ok).then_some(off)
    })?;
    if let Some(offset) = r.offset {
        return Err(Error::VerifyFailed {
            path: d.path.clone(),
            offset,
        });
    }
    let range = plan.dst_base..plan.dst_base + plan.logical_size;
    let written = ExtentMap::from_ranges(sums.iter().map(|s| s.dst..s.dst + s.len as u64));
    let must_be_zero = alloc::data_ranges(&rd, range.clone())?.difference(&written);
    let z = crate::verify::first_nonzero(&rd, &must_be_zero, opts)?;
    if let Some(offset) = z.offset {
        return Err(Error::VerifyFailed {
            path: d.path.clone(),
            offset,
        });
    }
    Ok(r.bytes_compared + z.bytes_compared)
}

fn sync_parent(path: &Path) {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(dir) = File::open(parent) {
        let _ = crate::sys::fdatasync(dir.as_fd());
    }
}

/// The result of [`compare`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Comparison {
    /// Same size and same bytes (holes read as zeros).
    pub identical: bool,
    /// The first offset where they differ (the shorter one's size if only sizes differ).
    pub first_difference: Option<u64>,
    /// Size of A.
    pub size_a: u64,
    /// Size of B.
    pub size_b: u64,
    /// Bytes read from each side (ranges where both are holes are not read).
    pub bytes_compared: u64,
}

/// Compares two files or devices, holes reading as zeros. Ranges that are holes in both are
/// equal without being read; the rest is read through the same I/O backend as copies.
pub fn compare(a: &Path, b: &Path) -> Result<Comparison> {
    compare_with(a, b, &CopyOptions::default())
}

/// [`compare`] with explicit block size, queue depth and O_DIRECT choice.
pub fn compare_with(a: &Path, b: &Path, opts: &CopyOptions) -> Result<Comparison> {
    opts.validate()?;
    let ea = open_source(a, opts.direct)?;
    let eb = open_source(b, opts.direct)?;
    let common = ea.size.min(eb.size);
    let data = alloc::data_ranges(&ea, 0..common)?.union(&alloc::data_ranges(&eb, 0..common)?);
    let diff = crate::verify::first_difference(&ea, &eb, &data, opts)?;
    let first_difference = diff.offset.or((ea.size != eb.size).then_some(common));
    Ok(Comparison {
        identical: first_difference.is_none(),
        first_difference,
        size_a: ea.size,
        size_b: eb.size,
        bytes_compared: diff.bytes_compared,
    })
}

/// True when cancellation was requested.
pub fn cancelled(flag: &Option<Arc<AtomicBool>>) -> bool {
    flag.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
}

#[doc(hidden)]
pub fn data_map(path: &Path) -> Result<ExtentMap> {
    let ep = open_source(path, false)?;
    alloc::data_ranges(&ep, 0..ep.size)
}
