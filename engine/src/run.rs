//! One run of a plan on the ring: sizes the buffer pool and queue to the plan, hands the
//! pipeline its files, flushes the destination, optionally reads it back against the
//! checksums taken while writing, and turns the pipeline's counters into a [`Summary`].
//! Copies, image writes, resumable copies and wipes all end here.

use crate::alloc;
use crate::dest::{dup, Opened};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::extent::ExtentMap;
use crate::options::{CopyOptions, Summary};
use crate::pagecache;
use crate::pipeline::{self, FileSlots, Job};
use crate::plan::{Op, Plan};
use crate::tuning::{self, Medium, Shape};
use crate::uring::{self, BufferPool};
use crate::verify;
use crate::zeroing::ZeroMode;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

/// The destination side of a pipeline run.
pub(crate) struct Target<'a> {
    pub ep: &'a Endpoint,
    pub mode: ZeroMode,
    pub created: bool,
    /// Every byte of the destination is a hole before the run (a new or rebuilt file): its data
    /// ranges may be allocated first.
    pub all_holes: bool,
    /// Fall back to the next zeroing method when one is refused.
    pub zero_fallback: bool,
}

/// Runs `plan` from `src` onto an opened destination (its zeroing mode, falling back when a
/// method is refused), then flushes.
pub(crate) fn run_plan(
    src: Option<&Endpoint>,
    dest: &Opened,
    plan: &Plan,
    opts: &CopyOptions,
    started: Instant,
) -> Result<Summary> {
    let target = Target {
        ep: &dest.ep,
        mode: dest.mode,
        created: dest.created,
        all_holes: dest.rebuilt(),
        zero_fallback: true,
    };
    run_plan_on(
        src,
        &target,
        plan,
        opts,
        opts.zero_detection(),
        started,
        None,
    )
    .0
    .map(|(s, _)| s)
}

/// The smallest buffer a run sizes down to (see `open_ring`).
const SMALLEST_BUFFER: usize = 64 << 10;

/// Buffer bytes any run may keep in flight, however little it moves (see `open_ring`).
const SMALL_RUN_POOL: u64 = 8 << 20;

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
    let d = t.ep;
    let asked = tuning::Asked {
        direct: opts.direct,
        queue_depth: opts.queue_depth,
        block_size: opts.block_size,
        limited: opts.bps_limit.is_some(),
        allocate_first: opts.allocate_first,
        tune: opts.tune,
    };
    let mut shape = tuning::choose(src, d, asked);
    // Data is allocated first only into a file that is all holes (nothing of anyone's is
    // punched on give-back), and never under a checkpoint (it would count an unwritten zero
    // block as done before its allocation is given back).
    shape.allocate_first &=
        src.is_some() && t.all_holes && t.mode == ZeroMode::Leave && checkpoint.is_none();
    // What the rule chose also serves the read-back.
    let chosen;
    let opts = if (shape.block_size, shape.queue_depth) == (opts.block_size, opts.queue_depth) {
        opts
    } else {
        chosen = CopyOptions {
            block_size: shape.block_size,
            queue_depth: shape.queue_depth,
            ..opts.clone()
        };
        &chosen
    };
    let failure = pagecache::Failure::default();
    let (mut backend, files, queue_depth, block_size) =
        match open_ring(src, t, plan, opts, (&asked, &mut shape), &failure) {
            Ok(r) => r,
            Err(e) => return (Err(e), None),
        };
    let job = Job {
        src,
        dst: d,
        plan,
        block_size,
        queue_depth,
        detect_zeroes,
        zero_mode: t.mode,
        bps_limit: opts.bps_limit,
        cancel: opts.cancel.as_deref(),
        progress: opts.progress.as_deref(),
        io_timeout: opts.io_timeout,
        files,
        zero_fallback: t.zero_fallback,
        checkpoint: checkpoint.map(|c| c.0),
        checkpoint_every: checkpoint.map_or(Duration::MAX, |c| c.1),
        checksum: opts.verify,
        decode_threads: match opts.decode_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        allocate_first: shape.allocate_first,
    };
    let (mut c, err) = pipeline::run(&job, backend.as_mut());
    shape.allocate_first = c.allocated_first;
    let backend_name = backend.name();
    // Dropping the backend reaps (or cancels) everything still in flight.
    drop(backend);
    let completed = c.completed.take();
    if let Some(source) = failure.take() {
        // A window's writeback failed: data the pipeline saw written never reached the
        // device. That is a failed flush, and nothing is durable.
        let path = d.path.clone();
        return (Err(Error::Flush { path, source }), None);
    }
    if let Some(e) = err {
        return (Err(e), completed);
    }
    // What completed is only durable once the flush succeeded: after a failed flush (or
    // read-back) nothing may be claimed done.
    let direct = (files.src_direct.is_some(), files.dst_direct.is_some());
    match finish(t, plan, opts, c, (backend_name, direct, shape), started) {
        Ok(r) => (Ok(r), completed),
        Err(e) => (Err(e), None),
    }
}

/// The ring for one run: the job's descriptors registered (buffered and O_DIRECT of each
/// end), the queue depth and buffer pool sized to what the plan moves (`shape` records a
/// deeper queue for small buffers), the test hook applied.
fn open_ring(
    src: Option<&Endpoint>,
    t: &Target<'_>,
    plan: &Plan,
    opts: &CopyOptions,
    (asked, shape): (&tuning::Asked, &mut Shape),
    failure: &pagecache::Failure,
) -> Result<(Box<dyn uring::IoBackend>, FileSlots, usize, usize)> {
    let d = t.ep;
    let mut files = Vec::with_capacity(4);
    let mut push = |f: &File, p: &Path| -> Result<usize> {
        files.push(dup(f, p)?);
        Ok(files.len() - 1)
    };
    let (s_idx, s_direct) = match src {
        Some(s) => (
            push(&s.file, &s.path)?,
            s.direct
                .as_ref()
                .filter(|_| shape.direct.0)
                .map(|f| push(f, &s.path))
                .transpose()?,
        ),
        None => (usize::MAX, None),
    };
    let dst_idx = push(&d.file, &d.path)?;
    let dst_direct = d
        .direct
        .as_ref()
        .filter(|_| shape.direct.1)
        .map(|f| push(f, &d.path))
        .transpose()?;
    // Bytes the ring will move (data, and zeros it writes), and so the buffers worth having:
    // a job that moves little gets a small pool (less memory to fault in and pin). Zeroing
    // methods that may fall back to writes could need the full depth.
    // One pass over the plan (a fragmented source's has an op per extent): the bytes moved,
    // the zeros that may be written, and the largest piece of data.
    // And the allocation windows holding data (see `tuning::allocate_first_pays`).
    let (mut io_bytes, mut may_write_zeros, mut largest) = (0u64, 0u64, 0u64);
    let mut windows = tuning::Windows::default();
    for op in &plan.ops {
        match *op {
            Op::Copy { dst, len, .. } => {
                io_bytes += len;
                largest = largest.max(len);
                windows.add(dst, len);
            }
            Op::Decode {
                dst, src_len, len, ..
            } => {
                io_bytes += len;
                largest = largest.max(src_len.max(len));
                windows.add(dst, len);
            }
            Op::Zero { len, .. } if t.mode == ZeroMode::Write => io_bytes += len,
            Op::Zero { len, .. } if t.zero_fallback && t.mode != ZeroMode::Leave => {
                may_write_zeros += len
            }
            _ => {}
        }
    }
    // Buffers as large as the largest piece of data (at least 64 KiB), when no hole will be
    // written with zeros: a source of small scattered extents then pins a few MiB, not the
    // depth times the block size.
    let block_size = if may_write_zeros == 0 && t.mode != ZeroMode::Write {
        let fit = largest.next_power_of_two().max(SMALLEST_BUFFER as u64);
        shape
            .block_size
            .min(usize::try_from(fit).unwrap_or(usize::MAX))
    } else {
        shape.block_size
    };
    tuning::deepen_for_small_buffers(shape, asked, block_size);
    if shape.allocate_first && asked.tune.allocate && !asked.allocate_first {
        shape.allocate_first = tuning::allocate_first_pays(&windows, d);
    }
    shape.block_size = block_size;
    let bs = block_size as u64;
    let moved = io_bytes + may_write_zeros;
    // A small run keeps at most a quarter of what it moves in flight (at least
    // [`SMALL_RUN_POOL`], and two buffers) unless its depth was given; measured in
    // `crate::tuning`'s module doc.
    let budget = if asked.tune.queue_depth {
        (moved / 4).max(SMALL_RUN_POOL)
    } else {
        u64::MAX
    };
    let qd = (shape.queue_depth as u64).min(moved.div_ceil(bs).min(budget / bs).max(2)) as usize;
    let pool = BufferPool::with_zero_buffer(qd, block_size)
        .map_err(|e| Error::open("allocate I/O buffers for", &d.path, e))?;
    shape.huge_pages = pool.huge_pages();
    let mut backend = if shape.threads > 0 {
        Box::new(
            uring::ThreadBackend::new(files, pool, shape.threads as usize).map_err(Error::Ring)?,
        )
    } else {
        uring::open_backend(files, qd as u32, pool, io_bytes).map_err(Error::Ring)?
    };
    // Through the page cache on a disk: keep the pages the run leaves there bounded (the
    // destination's dirty pages, the source's pages once read).
    let bound_writes = dst_direct.is_none() && shape.media.1 == Medium::Device && io_bytes > 0;
    let bound_reads =
        src.filter(|_| s_direct.is_none() && shape.media.0 == Some(Medium::Device) && io_bytes > 0);
    if bound_writes || bound_reads.is_some() {
        let mut bounded = pagecache::Bounded::new(backend, failure.clone());
        if bound_writes {
            bounded = bounded.writes_to(dst_idx, dup(&d.file, &d.path)?);
        }
        if let Some(s) = bound_reads {
            bounded = bounded.reads_from(s_idx, dup(&s.file, &s.path)?);
        }
        backend = Box::new(bounded);
    }
    if let Some(hook) = &opts.io_hook {
        backend = hook(backend);
    }
    let slots = FileSlots {
        src: s_idx,
        src_direct: s_direct,
        dst: dst_idx,
        dst_direct,
    };
    Ok((backend, slots, qd, block_size))
}

/// After a successful pipeline run: flush (and the new file's folder), read back with
/// `verify`, and report.
fn finish(
    t: &Target<'_>,
    plan: &Plan,
    opts: &CopyOptions,
    c: pipeline::Counters,
    (backend, direct, shape): (&'static str, (bool, bool), Shape),
    started: Instant,
) -> Result<(Summary, Vec<pipeline::ZeroedRange>)> {
    let d = t.ep;
    if opts.sync {
        d.sync()?;
        if t.created {
            sync_parent(&d.path);
        }
    }
    let verified_bytes = if opts.verify {
        Some(verify_written(d, plan, &c.sums, opts)?)
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
        backend,
        direct,
        io: Some(shape),
        zero_modes: c.zero_modes,
        verified_bytes,
    };
    Ok((summary, c.zero_ranges))
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
    let r = verify::scan_chunks(&[&rd], chunks, opts, |off, bufs| {
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
    let z = verify::first_nonzero(&rd, &must_be_zero, opts)?;
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
