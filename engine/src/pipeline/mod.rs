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
//! refuses (EOPNOTSUPP/EINVAL) falls back to the next one down to plain writes.
//!
//! Errors: short transfers resubmit the remainder; EAGAIN/EINTR are retried a bounded number of
//! times; anything else stops the pipeline, which drains what is in flight and returns the
//! first error with its operation, path, offset and errno. Reading zero bytes before the
//! expected end is an error (the source shrank), never a silent hole. An I/O that does not
//! complete within `io_timeout` fails the job.

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::extent::ExtentMap;
use crate::plan::{Op, Plan};
use crate::uring::{Done, IoBackend, IoOp, Req};
use crate::zero::is_zero;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod counters;
mod decode;
mod gaps;
mod holes;

pub(crate) use counters::Counters;
pub use counters::{ChunkSum, ZeroedRange};
use decode::{Decoders, DECODE_POLL};
use gaps::Gaps;
use holes::Holes;
pub use holes::ZeroMode;

/// How EAGAIN/EINTR completions are retried before giving up.
const MAX_RETRIES: u32 = 16;

/// A completion failed with `errno` after `retries` retries of the same request: try again?
/// (EAGAIN/EINTR, a bounded number of times.)
pub(crate) fn retryable(errno: i32, retries: u32) -> bool {
    matches!(errno, libc::EAGAIN | libc::EINTR) && retries < MAX_RETRIES
}

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
}

/// A checkpoint callback: persists the completed ranges, after making them durable.
pub(crate) type CheckpointFn<'a> = dyn Fn(&ExtentMap) -> Result<()> + 'a;

#[derive(Debug, Clone, Copy)]
enum Item {
    Copy {
        src: u64,
        dst: u64,
        len: u64,
    },
    ZeroWrite {
        dst: u64,
        len: u64,
    },
    /// A run of `n` Decode ops from `plan.ops[first]` whose outputs are contiguous (one
    /// write) and whose inputs lie in `[src, src + src_len)` (one read), both within a block.
    Decode {
        src: u64,
        src_len: u64,
        dst: u64,
        len: u64,
        first: usize,
        n: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Read,
    /// Handed to a decoder thread (no I/O in flight).
    Decode,
    Write,
}

#[derive(Debug)]
struct Active {
    item: Item,
    stage: Stage,
    /// Bytes of the current transfer done.
    done: usize,
    retries: u32,
    /// Extra slot whose buffer holds compressed input (Decode).
    aux: Option<usize>,
    /// The write comes from the zero buffer / a zero-detected block.
    zeroing: bool,
    /// Write only these (offset, len) runs of the buffer (its other 4 KiB blocks are zero and
    /// the destination already reads zeros there, or they are queued for punching); empty:
    /// write it whole.
    segs: Vec<(u32, u32)>,
    /// The run being written.
    seg: usize,
    /// The zero blocks between `segs` are queued in [`Gaps`] (the destination does not
    /// read zeros there yet): they are neither written nor skipped.
    gaps_queued: bool,
    started: Instant,
}

impl Active {
    /// (offset in the item, length) of the current write.
    fn write_span(&self) -> (u64, u64) {
        match self.segs.get(self.seg) {
            Some(&(off, len)) => (off as u64, len as u64),
            None => (0, item_len(self.item)),
        }
    }
}

struct Run<'a, 'b> {
    job: &'b Job<'a>,
    backend: &'b mut dyn IoBackend,
    zero_buf: usize,
    slots: Vec<Option<Active>>,
    free: Vec<usize>,
    op_idx: usize,
    op_pos: u64,
    covered_to: u64,
    holes: Holes,
    c: Counters,
    submitted_bytes: u64,
    started: Instant,
    error: Option<Error>,
    decoders: Option<Decoders>,
    gaps: Gaps,
}

/// Runs `job` on `backend`, whose pool has `queue_depth + 1` buffers of `block_size` (the last
/// is the zero buffer and is never written into). Returns the counters even on failure (what
/// completed before the error is still known, for a final checkpoint).
pub(crate) fn run(job: &Job<'_>, backend: &mut dyn IoBackend) -> (Counters, Option<Error>) {
    decode::with_decoders(job, |decoders| run_with(job, backend, decoders))
}

fn run_with(
    job: &Job<'_>,
    backend: &mut dyn IoBackend,
    decoders: Option<Decoders>,
) -> (Counters, Option<Error>) {
    let zero_buf = backend.pool().count() - 1;
    debug_assert!(is_zero(backend.pool().get(zero_buf)));
    let mut r = Run {
        job,
        zero_buf,
        slots: (0..job.queue_depth).map(|_| None).collect(),
        free: (0..job.queue_depth).rev().collect(),
        backend,
        op_idx: 0,
        op_pos: 0,
        covered_to: job.plan.dst_base,
        holes: Holes::new(job.zero_mode),
        c: Counters::for_job(job),
        submitted_bytes: 0,
        started: Instant::now(),
        error: None,
        decoders,
        gaps: Gaps::new(job),
    };
    r.zero_first();
    r.main_loop();
    if r.error.is_none() {
        r.punch_gaps();
    }
    let err = r.error.take();
    (r.c, err)
}

impl Run<'_, '_> {
    fn main_loop(&mut self) {
        let mut completions = Vec::with_capacity(self.job.queue_depth * 2);
        let mut last_progress = Instant::now();
        let mut last_checkpoint = Instant::now();
        loop {
            self.checkpoint_if_due(&mut last_checkpoint);
            if self.error.is_none() && self.job.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                self.error = Some(Error::Cancelled {
                    done: self.c.done,
                    total: self.job.plan.logical_size,
                });
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

    fn finished(&self) -> bool {
        self.op_idx >= self.job.plan.ops.len()
            && self.holes.is_idle()
            && self.covered_to >= self.job.plan.dst_base + self.job.plan.logical_size
    }

    /// The oldest in-flight I/O if it has waited longer than the I/O timeout.
    fn stalled(&self, last_progress: Instant) -> Option<(u64, std::path::PathBuf, &'static str)> {
        if last_progress.elapsed() < self.job.io_timeout {
            return None;
        }
        let a = self.slots.iter().flatten().min_by_key(|a| a.started)?;
        let (off, path, op) = self.transfer_target(a);
        Some((off, path.to_path_buf(), op))
    }

    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            tracing::debug!(error = %e, "pipeline stopping");
            self.error = Some(e);
        }
    }

    /// Starts as many items as slots and the throttle allow. Returns how long to wait before
    /// the throttle lets the next item start, if it is what stops us.
    fn fill(&mut self) -> Option<Duration> {
        while let Some(&slot) = self.free.last() {
            if let Some(d) = self.throttle_delay() {
                return Some(d);
            }
            let item = self.next_item()?;
            if let Item::Decode { .. } = item {
                if self.free.len() < 2 {
                    // Needs a second buffer for the compressed input: wait for one.
                    self.push_back(item);
                    return None;
                }
            }
            self.free.pop();
            let aux = match item {
                Item::Decode { .. } => self.free.pop(),
                _ => None,
            };
            let (stage, zeroing) = match item {
                Item::ZeroWrite { .. } => (Stage::Write, true),
                _ => (Stage::Read, false),
            };
            self.submitted_bytes += match item {
                Item::Copy { len, .. } | Item::ZeroWrite { len, .. } => len,
                Item::Decode { src_len, .. } => src_len,
            };
            self.slots[slot] = Some(Active {
                item,
                stage,
                done: 0,
                retries: 0,
                aux,
                zeroing,
                segs: Vec::new(),
                seg: 0,
                gaps_queued: false,
                started: Instant::now(),
            });
            self.submit(slot);
            if self.error.is_some() {
                return None;
            }
        }
        None
    }

    fn throttle_delay(&self) -> Option<Duration> {
        let rate = self.job.bps_limit.filter(|r| *r > 0)?;
        let due = Duration::from_secs_f64(self.submitted_bytes as f64 / rate as f64);
        let elapsed = self.started.elapsed();
        (due > elapsed).then(|| due - elapsed)
    }

    /// A pending item pushed back because it could not start yet.
    fn push_back(&mut self, item: Item) {
        if let Item::Decode { n, .. } = item {
            // Decode items are whole ops: rewind to the first.
            self.op_idx -= n;
            self.op_pos = 0;
            self.covered_to = item_dst(item);
        }
    }

    /// The next item needing a slot. Zero ranges handled without I/O (left alone, or zeroed by
    /// a synchronous call) are done here on the way.
    fn next_item(&mut self) -> Option<Item> {
        let bs = self.job.block_size as u64;
        loop {
            if let Some(item) = self.holes.next_write(bs) {
                return Some(item);
            }
            let plan = self.job.plan;
            let end = plan.dst_base + plan.logical_size;
            let next_op = plan.ops.get(self.op_idx).copied();
            // A gap before the next op (or the end) is an implicit Zero op.
            let gap_to = next_op.map_or(end, |op| op.dst_range().start);
            if self.covered_to < gap_to {
                let (dst, len) = (self.covered_to, gap_to - self.covered_to);
                self.covered_to = gap_to;
                if self.holes.zeroed_first {
                    continue;
                }
                self.zero_range(dst, len);
                if self.error.is_some() {
                    return None;
                }
                continue;
            }
            let op = next_op?;
            match op {
                Op::Copy { src, dst, len } => {
                    let pos = self.op_pos;
                    let at = dst + pos;
                    let n = (len - pos).min(bs - at % bs);
                    self.op_pos += n;
                    if self.op_pos == len {
                        self.op_idx += 1;
                        self.op_pos = 0;
                        self.covered_to = dst + len;
                    }
                    return Some(Item::Copy {
                        src: src + pos,
                        dst: at,
                        len: n,
                    });
                }
                Op::Zero { dst, len } => {
                    self.op_idx += 1;
                    self.covered_to = dst + len;
                    if self.holes.zeroed_first {
                        continue;
                    }
                    self.zero_range(dst, len);
                    if self.error.is_some() {
                        return None;
                    }
                }
                Op::Skip { dst, len } => {
                    self.op_idx += 1;
                    self.covered_to = dst + len;
                    self.c.bytes_skipped += len;
                    self.advance(dst, len);
                }
                Op::Decode { .. } => match decode::run_at(plan, self.op_idx, bs) {
                    Ok(item @ Item::Decode { dst, len, n, .. }) => {
                        self.op_idx += n;
                        self.covered_to = dst + len;
                        return Some(item);
                    }
                    Ok(_) => unreachable!("a decode run is a Decode item"),
                    Err(reason) => {
                        self.fail(Error::BadImage {
                            path: self.src_path().to_path_buf(),
                            reason,
                        });
                        return None;
                    }
                },
            }
        }
    }

    /// The slot's buffer holds `len` bytes for `dst`: an all-zero block is handled like a hole
    /// (unless holes are made by writing zeros anyway), anything else is written.
    fn data_ready(&mut self, slot: usize, dst: u64, len: u64) {
        let detect =
            self.job.detect_zeroes && is_zero(&self.backend.pool().get(slot)[..len as usize]);
        if detect && self.holes.mode != ZeroMode::Write {
            self.release(slot);
            self.zero_range(dst, len);
            return;
        }
        if detect {
            self.c.record(dst, len, ZeroMode::Write);
        }
        self.checksum(slot, dst, len);
        let (segs, gaps_queued) = if detect {
            (Vec::new(), false)
        } else {
            self.write_segments(slot, dst, len)
        };
        let a = self.slots[slot].as_mut().expect("active slot");
        a.stage = Stage::Write;
        a.done = 0;
        a.zeroing = detect;
        a.segs = segs;
        a.seg = 0;
        a.gaps_queued = gaps_queued;
        self.submit(slot);
    }

    fn src_path(&self) -> &std::path::Path {
        self.job.src.map_or(&self.job.dst.path, |s| &s.path)
    }

    /// (file offset, path, op name) of the current transfer of `a`.
    fn transfer_target<'s>(&'s self, a: &Active) -> (u64, &'s std::path::Path, &'static str) {
        match (a.item, a.stage) {
            (Item::Copy { src, .. }, Stage::Read) => (src + a.done as u64, self.src_path(), "read"),
            (Item::Decode { src, .. }, Stage::Read) => {
                (src + a.done as u64, self.src_path(), "read compressed")
            }
            (Item::Decode { src, .. }, Stage::Decode) => (src, self.src_path(), "decode"),
            (item, _) => (
                item_dst(item) + a.write_span().0 + a.done as u64,
                &self.job.dst.path,
                if a.zeroing { "write zeros" } else { "write" },
            ),
        }
    }

    fn submit(&mut self, slot: usize) {
        let a = self.slots[slot].as_ref().expect("active slot");
        let job = self.job;
        let (op, file, direct, buf, offset, total) = match (a.item, a.stage) {
            (Item::Copy { src, len, .. }, Stage::Read) => (
                IoOp::Read,
                job.files.src,
                job.files.src_direct,
                slot,
                src,
                len,
            ),
            (Item::Decode { src, src_len, .. }, Stage::Read) => (
                IoOp::Read,
                job.files.src,
                None,
                a.aux.expect("decode has an aux buffer"),
                src,
                src_len,
            ),
            (item, Stage::Write) => {
                let buf = match item {
                    Item::ZeroWrite { .. } => self.zero_buf,
                    _ => slot,
                };
                let (off, len) = a.write_span();
                (
                    IoOp::Write,
                    job.files.dst,
                    job.files.dst_direct,
                    buf,
                    item_dst(item) + off,
                    len,
                )
            }
            (Item::ZeroWrite { .. }, Stage::Read) => unreachable!("zero writes never read"),
            (_, Stage::Decode) => unreachable!("a decoding slot has no I/O"),
        };
        let span_off = match a.stage {
            Stage::Write => a.write_span().0 as usize,
            Stage::Read | Stage::Decode => 0,
        };
        let done = a.done as u64;
        let remaining = total - done;
        let align = match op {
            IoOp::Read => job.src.map_or(job.dst.align, |s| s.align),
            IoOp::Write => job.dst.align,
        };
        // O_DIRECT only when offset, length and buffer address are all aligned; the zero buffer
        // offset is 0 for every write (it is all zeros), others continue where they stopped.
        let buf_off = if buf == self.zero_buf {
            0
        } else {
            span_off + a.done
        };
        let aligned = (offset + done).is_multiple_of(align)
            && remaining.is_multiple_of(align)
            && (buf_off as u64).is_multiple_of(align);
        let file = match direct {
            Some(d) if aligned => d,
            _ => file,
        };
        let req = Req {
            user_data: slot as u64,
            op,
            file,
            buf,
            buf_off,
            len: remaining as usize,
            offset: offset + done,
        };
        if let Err(e) = self.backend.push(req) {
            let (off, path, opname) = self.transfer_target(self.slots[slot].as_ref().unwrap());
            let err = Error::io(opname, path, off, e);
            self.slots[slot] = None;
            self.free.push(slot);
            self.fail(err);
        }
    }

    fn release(&mut self, slot: usize) {
        if let Some(a) = self.slots[slot].take() {
            if let Some(aux) = a.aux {
                self.free.push(aux);
            }
        }
        self.free.push(slot);
    }

    fn complete(&mut self, d: Done) {
        let slot = d.user_data as usize;
        let Some(a) = self.slots[slot].as_mut() else {
            return;
        };
        let total = match (a.item, a.stage) {
            (Item::Decode { src_len, .. }, Stage::Read) => src_len,
            (_, Stage::Write) => a.write_span().1,
            (item, Stage::Read) => item_len(item),
            (_, Stage::Decode) => unreachable!("a decoding slot has no I/O"),
        } as usize;
        if self.error.is_some() {
            // Draining after a failure: just take the buffers back.
            self.release(slot);
            return;
        }
        if d.result < 0 {
            let errno = -d.result;
            if retryable(errno, a.retries) {
                a.retries += 1;
                self.submit(slot);
                return;
            }
            let (off, path, op) = self.transfer_target(self.slots[slot].as_ref().unwrap());
            let err = Error::io(op, path, off, io::Error::from_raw_os_error(errno));
            self.release(slot);
            self.fail(err);
            return;
        }
        let n = d.result as usize;
        if n == 0 && a.done < total {
            let (off, path, op) = self.transfer_target(self.slots[slot].as_ref().unwrap());
            let kind = if op.starts_with("read") {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "end of file before the expected end: the source shrank or is truncated",
                )
            } else {
                io::Error::new(io::ErrorKind::WriteZero, "the device accepted no bytes")
            };
            let err = Error::io(op, path, off, kind);
            self.release(slot);
            self.fail(err);
            return;
        }
        a.done += n;
        a.retries = 0;
        if a.done < total {
            // Short transfer: resubmit the remainder.
            self.submit(slot);
            return;
        }
        match (a.item, a.stage) {
            (Item::Copy { dst, len, .. }, Stage::Read) => {
                self.c.bytes_read += len;
                self.data_ready(slot, dst, len);
            }
            (Item::Decode { src_len, .. }, Stage::Read) => {
                self.c.bytes_read += src_len;
                self.decode_read(slot);
            }
            (item, Stage::Write) => {
                if a.seg + 1 < a.segs.len() {
                    // Next non-zero run of this block.
                    a.seg += 1;
                    a.done = 0;
                    self.submit(slot);
                    return;
                }
                let len = item_len(item);
                let written = if a.segs.is_empty() {
                    len
                } else {
                    a.segs.iter().map(|s| s.1 as u64).sum()
                };
                if a.zeroing {
                    self.c.bytes_zeroed += written;
                } else {
                    self.c.bytes_written += written;
                }
                if !a.gaps_queued {
                    self.c.bytes_skipped += len - written;
                }
                self.release(slot);
                self.advance(item_dst(item), len);
            }
            (Item::ZeroWrite { .. }, Stage::Read) => unreachable!("zero writes never read"),
            (_, Stage::Decode) => unreachable!("a decoding slot has no I/O"),
        }
    }
}

fn item_dst(item: Item) -> u64 {
    match item {
        Item::Copy { dst, .. } | Item::ZeroWrite { dst, .. } | Item::Decode { dst, .. } => dst,
    }
}

fn item_len(item: Item) -> u64 {
    match item {
        Item::Copy { len, .. } | Item::ZeroWrite { len, .. } | Item::Decode { len, .. } => len,
    }
}
