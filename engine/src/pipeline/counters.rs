//! Bookkeeping: what the run did ([`Counters`]), the progress callback, checksums of written
//! blocks and the periodic checkpoint.
//!
//! Every destination byte is accounted once, by [`Run::advance`], when the part that handles it
//! is done with it: its write completed, its zeroing call returned, it was left as a hole or
//! skipped (the zero parts of a data block queued for punching count with their block, which
//! is why they are not queued under a checkpoint). Only then is it reported to the progress
//! callback and, when checkpointing, added to the completed ranges that
//! [`Run::checkpoint_if_due`] hands to the job's [`CheckpointFn`](super::CheckpointFn): a
//! checkpoint never records a range whose write is still in flight.

use super::{Job, Run};
use crate::extent::ExtentMap;
use crate::zeroing::ZeroMode;
use std::time::Instant;

/// The CRC32C of a block written to the destination, computed from the source's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSum {
    /// Destination offset.
    pub dst: u64,
    /// Length.
    pub len: u32,
    /// CRC32C of the bytes.
    pub crc: u32,
}

/// What the pipeline did.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub bytes_zeroed: u64,
    pub bytes_skipped: u64,
    pub done: u64,
    /// The zero modes actually used (after fallbacks), in order of first use.
    pub zero_modes: Vec<ZeroMode>,
    /// Ranges zeroed, with the method (consecutive ones coalesced; ranges left as they are
    /// are only counted).
    pub zero_ranges: Vec<ZeroedRange>,
    /// Destination ranges fully processed (tracked only when checkpointing).
    pub completed: Option<ExtentMap>,
    /// Checksums of written blocks (only with `Job::checksum`).
    pub sums: Vec<ChunkSum>,
    /// The destination's data ranges were allocated before the writes (`prealloc`).
    pub allocated_first: bool,
}

/// A destination range made to read as zeros, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ZeroedRange {
    /// Start offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// The method.
    pub method: ZeroMode,
}

impl Counters {
    /// Empty counters for `job`: its zero mode counts as used, completed ranges are tracked
    /// when it checkpoints.
    pub(super) fn for_job(job: &Job<'_>) -> Counters {
        let mut c = Counters::default();
        c.zero_modes.push(job.zero_mode);
        if job.checkpoint.is_some() {
            c.completed = Some(ExtentMap::new());
        }
        c
    }

    /// `len` bytes at `offset` were made to read as zeros with `method`.
    pub(super) fn record(&mut self, offset: u64, len: u64, method: ZeroMode) {
        if let Some(last) = self.zero_ranges.last_mut() {
            if last.method == method && last.offset + last.len == offset {
                last.len += len;
                return;
            }
        }
        self.zero_ranges.push(ZeroedRange {
            offset,
            len,
            method,
        });
    }

    /// `mode` was used (a fallback): listed once, in order of first use.
    pub(super) fn note_mode(&mut self, mode: ZeroMode) {
        if !self.zero_modes.contains(&mode) {
            self.zero_modes.push(mode);
        }
    }
}

impl Run<'_, '_> {
    /// `n` destination bytes at `at` are final.
    pub(super) fn advance(&mut self, at: u64, n: u64) {
        self.c.done += n;
        if let Some(m) = self.c.completed.as_mut() {
            m.insert(at..at + n);
        }
        if let Some(p) = self.job.progress {
            p(self.c.done, self.job.plan.logical_size);
        }
    }

    /// Records the checksum of the `len` bytes in `slot` bound for `dst` (when the job wants
    /// checksums).
    pub(super) fn checksum(&mut self, slot: usize, dst: u64, len: u64) {
        if self.job.checksum {
            let crc = crc32c::crc32c(&self.backend.pool().get(slot)[..len as usize]);
            self.c.sums.push(ChunkSum {
                dst,
                len: len as u32,
                crc,
            });
        }
    }

    /// Calls the job's checkpoint with the completed ranges when `checkpoint_every` has passed
    /// since `last` (and nothing failed); a failing checkpoint fails the run.
    pub(super) fn checkpoint_if_due(&mut self, last: &mut Instant) {
        if let (Some(cp), Some(done)) = (self.job.checkpoint, self.c.completed.as_ref()) {
            if self.error.is_none() && last.elapsed() >= self.job.checkpoint_every {
                if let Err(e) = cp(done) {
                    self.fail(e);
                }
                *last = Instant::now();
            }
        }
    }
}
