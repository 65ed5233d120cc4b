//! The windowed read → write pipeline that executes a [`Plan`] on an [`IoBackend`].
//!
//! Up to `queue_depth` items are in flight. An item is a block-sized piece of a `Copy` op
//! (split at absolute multiples of the block size in the destination), a run of `Decode` ops
//! (compressed units whose outputs are contiguous and whose inputs lie within one block: one
//! read, one write), or a piece of a `Zero` op. A copy piece is read into its slot's buffer;
//! if zero detection is on and the block is all zeros it is handled like a hole, else written
//! from the same buffer. A decode run is read into a second buffer and decoded into the slot's
//! buffer, on decoder threads when the job has them (the ring keeps moving data meanwhile),
//! else on the pipeline thread.
//!
//! Holes (`Zero` ops and zero-detected blocks) are handled by the destination's [`ZeroMode`]:
//! left alone on a destination known to read zeros there, punched or zero-ranged on files,
//! BLKZEROOUT on block devices, or written from a shared zero buffer. A method the target
//! refuses (EOPNOTSUPP/EINVAL/ENOTTY) falls back to the next one down to plain writes.
//!
//! Errors: short transfers resubmit the remainder; EAGAIN/EINTR are retried a bounded number of
//! times; anything else stops the pipeline, which drains what is in flight and returns the
//! first error with its operation, path, offset and errno. Reading zero bytes before the
//! expected end is an error (the source shrank), never a silent hole. An I/O that does not
//! complete within `io_timeout` fails the job.
//!
//! # Parts
//!
//! One `Run` owns the ring side of a job (the backend, its buffer pool, the slot table) and
//! drives it from one thread. Each part is a file: its own state, and the methods of `Run` that
//! do its job.
//!
//! | part | its job | its state |
//! |---|---|---|
//! | this file | the job, `run`, the main loop: checkpoint, cancel, fill, wait, complete | `error` |
//! | `window` | cut the plan into items, start them as slots and the throttle allow, push requests | `Cursor`, `Throttle` |
//! | `slot` | what a slot holds while its item is in flight; giving its buffers back | `Active` in `slots`, `free` |
//! | `complete` | one completion: retry, resubmit, fail, or move the slot to its next stage | |
//! | `holes` | make ranges read as zeros with the [`ZeroMode`] and its fallback | `Holes` |
//! | `gaps` | the zero parts inside data blocks: which runs to write, punching the rest last | `Gaps` |
//! | `prealloc` | allocate the destination's data ranges first; give back what stayed unwritten | `Prealloc` |
//! | `decode` | decode runs: on decoder threads or inline, then on to the write | `Decoders` |
//! | `counters` | `Counters`, progress, checksums, the periodic checkpoint | `c` |
//!
//! # Contract between the parts
//!
//! - **Order.** `run` starts the decoder threads when the job has them, then: `before_writes`
//!   (when holes are synchronous calls or data ranges are allocated first: the first reads,
//!   then every hole or every data range at once, before any write), the main loop until the
//!   plan is handed out and nothing is in flight or decoding, then `punch_gaps` and
//!   `release_unused` unless the run failed.
//! - **Requests.** Only `window` (`Run::submit`) pushes requests; only the main loop waits (and
//!   `before_writes` once, without blocking, to submit the first reads), and each completion goes
//!   to `complete`. `user_data` is the slot index. A slot's buffer
//!   belongs to the kernel from its push to its completion; at `Stage::Decode` it is idle (the
//!   decoder threads work on copies, `decode` copies the result in). The last pool buffer is
//!   the shared zero buffer: written from, never read into.
//! - **Holes.** Whoever meets a range that must read as zeros (a `Zero` op or a gap between
//!   ops in `window`, an all-zero block in `complete`) hands it to `Run::zero_range`, which
//!   finishes it at once (left alone, or synchronous calls) or queues zero writes; `window`
//!   starts queued zero writes before any further plan item. The zero mode only moves down its
//!   fallback chain, so later ranges use the method that worked.
//! - **Failure.** A part that fails calls `Run::fail` (the first error wins) and starts nothing
//!   more; the main loop then starts no item, `complete` only frees the slots of what drains,
//!   and `run` returns the first error with the counters so far. A failed wait or an I/O
//!   timeout returns at once instead: the backend's `Drop` cancels what is in flight.
//! - **Accounting.** A destination byte is counted once, by `Run::advance`, when the part
//!   handling it is done with it (see `counters`); a checkpoint hands out only such ranges.

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::extent::ExtentMap;
use crate::plan::Plan;
use crate::uring::IoBackend;
use crate::zero::is_zero;
use crate::zeroing::ZeroMode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod complete;
mod counters;
mod decode;
mod gaps;
mod holes;
mod prealloc;
mod slot;
mod window;

pub(crate) use complete::retryable;
pub(crate) use counters::Counters;
pub use counters::{ChunkSum, ZeroedRange};

use decode::{Decoders, DECODE_POLL};
use gaps::Gaps;
use holes::Holes;
use prealloc::Prealloc;
use slot::Active;
use window::{Cursor, Throttle};

/// Indices of the job's files in the backend's file table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileSlots {
    pub src: usize,
    pub src_direct: Option<usize>,
    pub dst: usize,
    pub dst_direct: Option<usize>,
}

/// A job for the pipeline.
pub(crate) struct Job<'a> {
    pub src: Option<&'a Endpoint>,
    pub dst: &'a Endpoint,
    pub plan: &'a Plan,
    pub block_size: usize,
    pub queue_depth: usize,
    pub detect_zeroes: bool,
    pub zero_mode: ZeroMode,
    pub bps_limit: Option<u64>,
    pub cancel: Option<&'a AtomicBool>,
    pub progress: Option<&'a (dyn Fn(u64, u64) + Send + Sync)>,
    pub io_timeout: Duration,
    pub files: FileSlots,
    /// Fall back to the next zeroing method when the target refuses one (else: fail).
    pub zero_fallback: bool,
    /// Called every `checkpoint_every` with the ranges completed so far (it flushes the
    /// destination, then persists them). Turns on completed-range tracking.
    pub checkpoint: Option<&'a CheckpointFn<'a>>,
    /// Interval between checkpoints.
    pub checkpoint_every: Duration,
    /// Record a CRC32C of every block written, as read from the source.
    pub checksum: bool,
    /// Threads decoding compressed units while the ring keeps moving data (0 or 1: decode on
    /// the pipeline thread).
    pub decode_threads: usize,
    /// Allocate the destination's data ranges before the first write (`prealloc`); only for a
    /// copy (with a source) into a file that is all holes, with `ZeroMode::Leave` and without
    /// a checkpoint.
    pub allocate_first: bool,
}

/// A checkpoint callback: persists the completed ranges, after making them durable.
pub(crate) type CheckpointFn<'a> = dyn Fn(&ExtentMap) -> Result<()> + 'a;

/// One job's run: the ring side of the pipeline (see the module doc for its parts).
struct Run<'a, 'b> {
    job: &'b Job<'a>,
    backend: &'b mut dyn IoBackend,
    /// The pool's zero buffer.
    zero_buf: usize,
    /// The window's slots, by index (`None`: free).
    slots: Vec<Option<Active>>,
    /// Free slot indices (popped from the end).
    free: Vec<usize>,
    cursor: Cursor,
    throttle: Throttle,
    holes: Holes,
    gaps: Gaps,
    prealloc: Prealloc,
    decoders: Option<Decoders>,
    c: Counters,
    /// The first failure: nothing new starts once it is set.
    error: Option<Error>,
}

/// Runs `job` on `backend`, whose pool has `queue_depth` buffers of `block_size` and a zero
/// buffer ([`crate::uring::BufferPool::with_zero_buffer`]). Returns the counters even on
/// failure (what completed before the error is still known, for a final checkpoint).
pub(crate) fn run(job: &Job<'_>, backend: &mut dyn IoBackend) -> (Counters, Option<Error>) {
    decode::with_decoders(job, |decoders| run_with(job, backend, decoders))
}

fn run_with(
    job: &Job<'_>,
    backend: &mut dyn IoBackend,
    decoders: Option<Decoders>,
) -> (Counters, Option<Error>) {
    let zero_buf = backend
        .pool()
        .zero_buffer()
        .expect("a pipeline pool has a zero buffer");
    debug_assert!(is_zero(backend.pool().get(zero_buf)));
    let mut r = Run {
        job,
        zero_buf,
        slots: (0..job.queue_depth).map(|_| None).collect(),
        free: (0..job.queue_depth).rev().collect(),
        backend,
        cursor: Cursor::new(job.plan),
        throttle: Throttle::new(job.bps_limit),
        holes: Holes::new(job.zero_mode),
        gaps: Gaps::new(job),
        prealloc: Prealloc::default(),
        decoders,
        c: Counters::for_job(job),
        error: None,
    };
    r.before_writes();
    r.main_loop();
    if r.error.is_none() {
        r.punch_gaps();
    }
    if r.error.is_none() {
        r.release_unused();
    }
    let err = r.error.take();
    (r.c, err)
}

impl Run<'_, '_> {
    /// Until the plan is done and nothing is in flight, or a failure has drained: checkpoints
    /// when due, notices cancellation, starts what the window allows, then waits for
    /// completions (or finished decodes, or the throttle) and handles them.
    fn main_loop(&mut self) {
        let mut completions = Vec::with_capacity(self.job.queue_depth * 2);
        let mut last_progress = Instant::now();
        let mut last_checkpoint = Instant::now();
        loop {
            self.checkpoint_if_due(&mut last_checkpoint);
            if self.error.is_none() && self.cancelled() {
                self.error = Some(self.cancelled_error());
            }
            let mut throttle_wait = None;
            if self.error.is_none() {
                throttle_wait = self.fill();
            }
            let in_flight = self.backend.in_flight();
            let decoding = self.decoding();
            if in_flight == 0 && decoding == 0 {
                if self.error.is_some() || self.finished() {
                    return;
                }
                if let Some(d) = throttle_wait {
                    std::thread::sleep(d);
                }
                continue;
            }
            let mut timeout = throttle_wait
                .unwrap_or(self.job.io_timeout)
                .min(self.job.io_timeout)
                .min(Duration::from_millis(500));
            if in_flight == 0 {
                // Only decodes pending: wait for one of them.
                if self.wait_decoded(Some(timeout)) {
                    last_progress = Instant::now();
                }
                continue;
            }
            if decoding > 0 {
                timeout = timeout.min(DECODE_POLL);
            }
            completions.clear();
            if let Err(e) = self.backend.wait(1, timeout, &mut completions) {
                self.fail(Error::io("wait for completions", &self.job.dst.path, 0, e));
                // Nothing more can be learned from this backend; its Drop cancels the rest.
                return;
            }
            if decoding > 0 && self.wait_decoded(None) {
                last_progress = Instant::now();
            }
            if completions.is_empty() {
                if let Some((off, path, op)) = self.stalled(last_progress) {
                    self.fail(Error::TimedOut {
                        op,
                        path,
                        offset: off,
                        secs: self.job.io_timeout.as_secs(),
                    });
                    return;
                }
                continue;
            }
            last_progress = Instant::now();
            for d in completions.drain(..) {
                self.complete(d);
            }
        }
    }

    fn cancelled(&self) -> bool {
        self.job.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// The error a cancelled run returns.
    fn cancelled_error(&self) -> Error {
        Error::Cancelled {
            done: self.c.done,
            total: self.job.plan.logical_size,
        }
    }

    /// Every item has been started and no zero write waits.
    fn finished(&self) -> bool {
        self.cursor.finished(self.job.plan) && self.holes.is_idle()
    }

    /// Stops the run with `e`, unless it has already failed.
    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            tracing::debug!(error = %e, "pipeline stopping");
            self.error = Some(e);
        }
    }

    /// The source's path (the destination's when there is no source), for errors.
    fn src_path(&self) -> &std::path::Path {
        self.job.src.map_or(&self.job.dst.path, |s| &s.path)
    }
}
