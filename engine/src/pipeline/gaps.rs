//! Gaps: the zero 4 KiB blocks inside a data block that is written (a partly used image
//! cluster's zero tail, a sparse region of a read block).
//!
//! With zero detection on, [`Run::write_segments`] chooses which runs of a data block are
//! written: all of it, or only its non-zero runs where the destination already reads zeros
//! (`ZeroMode::Leave`, as qemu-img does) or where holes are punched. In the punch case the zero
//! parts between the runs are queued in [`Gaps`] and punched by [`Run::punch_gaps`] once every
//! write is done (punched one by one meanwhile, each would wait behind the writes in flight).
//! The first gap is punched at once, so a destination that refuses punching is known before
//! anything piles up; past [`MAX_GAPS`] queued parts, or under a checkpoint, blocks are written
//! whole. A gap whose punch fails is zeroed the next way ([`ZeroMode::fallback`]), else written
//! with zeros.

use super::{Counters, Job, Run};
use crate::error::Error;
use crate::sys;
use crate::zero::is_zero;
use crate::zeroing::ZeroMode;
use std::os::fd::{AsFd, BorrowedFd};

/// Zero 4 KiB blocks inside a data block are skipped on destinations that already read zeros
/// (as qemu-img does), so partly used image clusters do not allocate their zero tails.
const ZERO_GRAIN: usize = 4096;

/// Most zero parts of data blocks queued for punching (16 bytes each); past it, such blocks
/// are written whole.
const MAX_GAPS: usize = 1 << 16;

/// The zero parts of data blocks waiting to be punched.
pub(super) struct Gaps {
    /// Zero 4 KiB blocks inside written data blocks, left unwritten and punched once every
    /// write is done ([`Run::punch_gaps`]). `None` where holes are not punched, or under a
    /// checkpoint (it must never record a block whose zero parts still hold old data).
    queued: Option<Vec<(u64, u64)>>,
    /// A zero part of a data block was punched at once (the destination punches).
    probed: bool,
}

impl Gaps {
    pub(super) fn new(job: &Job<'_>) -> Gaps {
        Gaps {
            queued: (job.zero_mode == ZeroMode::Punch
                && job.checkpoint.is_none()
                && job.detect_zeroes)
                .then(Vec::new),
            probed: false,
        }
    }

    /// Queues the parts of `dst..dst + len` outside `runs` (offsets in the block) for
    /// punching; false (write the block whole) when the queue is full or punching is refused.
    /// The very first part is punched at once, so a destination that refuses punching is
    /// known before anything piles up.
    fn queue(
        &mut self,
        fd: BorrowedFd<'_>,
        c: &mut Counters,
        dst: u64,
        len: u64,
        runs: &[(u32, u32)],
    ) -> bool {
        let mut mine = zero_parts(dst, len, runs);
        if !self.probed {
            let Some(&(off, n)) = mine.first() else {
                return false;
            };
            if let Err(e) = sys::punch_hole(fd, off, n) {
                tracing::debug!(error = %e, "punching zero parts of data blocks refused; writing them");
                self.queued = None;
                return false;
            }
            self.probed = true;
            c.bytes_zeroed += n;
            c.record(off, n, ZeroMode::Punch);
            mine.remove(0);
        }
        let Some(gaps) = self.queued.as_mut() else {
            return false;
        };
        if gaps.len() + mine.len() > MAX_GAPS {
            return false;
        }
        for (off, n) in mine {
            match gaps.last_mut() {
                Some(g) if g.0 + g.1 == off => g.1 += n,
                _ => gaps.push((off, n)),
            }
        }
        true
    }
}

impl Run<'_, '_> {
    /// Which (offset, len) runs of the data block in `slot` (`len` bytes for `dst`) to write,
    /// empty for all of it; and whether the zero parts between them were queued for punching
    /// (else the destination reads zeros there already).
    pub(super) fn write_segments(
        &mut self,
        slot: usize,
        dst: u64,
        len: u64,
    ) -> (Vec<(u32, u32)>, bool) {
        if !self.job.detect_zeroes {
            return (Vec::new(), false);
        }
        let buf = &self.backend.pool().get(slot)[..len as usize];
        match self.holes.mode {
            ZeroMode::Leave => {
                let runs = nonzero_runs(buf, dst);
                if self.prealloc.active && !runs.is_empty() {
                    for (off, n) in zero_parts(dst, len, &runs) {
                        self.allocated_unused(off, n);
                    }
                }
                (runs, false)
            }
            ZeroMode::Punch
                if self
                    .gaps
                    .queued
                    .as_ref()
                    .is_some_and(|g| g.len() < MAX_GAPS) =>
            {
                // Holes are punched here: so are the zero parts of a partly used block (an
                // image cluster's zero tail), as qemu-img does, instead of writing them.
                let runs = nonzero_runs(buf, dst);
                let fd = self.job.dst.file.as_fd();
                if !runs.is_empty() && self.gaps.queue(fd, &mut self.c, dst, len, &runs) {
                    (runs, true)
                } else {
                    (Vec::new(), false)
                }
            }
            _ => (Vec::new(), false),
        }
    }

    /// Makes the queued zero parts of data blocks read as zeros, once every write is done:
    /// punched; where a punch fails, zeroed the next way (BLKZEROOUT on a device, ZERO_RANGE
    /// on a file), else written with zeros.
    pub(super) fn punch_gaps(&mut self) {
        let Some(gaps) = self.gaps.queued.take() else {
            return;
        };
        use std::os::unix::fs::FileExt;
        let job = self.job;
        let file = &job.dst.file;
        let zeros = vec![0u8; ZERO_GRAIN * 16];
        let mut punch = true;
        let mut fallback = true;
        for (off, len) in gaps {
            if self.cancelled() {
                self.error = Some(self.cancelled_error());
                return;
            }
            if punch {
                match sys::punch_hole(file.as_fd(), off, len) {
                    Ok(()) => {
                        self.c.bytes_zeroed += len;
                        self.c.record(off, len, ZeroMode::Punch);
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, offset = off, "punching a zero part of a data block failed");
                        // Refused outright: stop trying; anything else (an odd tail): this one.
                        punch = !super::holes::refused(&e);
                    }
                }
            }
            let mode = ZeroMode::Punch.fallback(job.dst.is_block());
            let zeroed = fallback
                && mode
                    .zero(file.as_fd(), off, len)
                    .map_err(|e| fallback = !super::holes::refused(&e))
                    .is_ok();
            let mode = if zeroed {
                mode
            } else {
                let mut at = off;
                while at < off + len {
                    let n = (off + len - at).min(zeros.len() as u64) as usize;
                    if let Err(e) = file.write_all_at(&zeros[..n], at) {
                        self.fail(Error::io("write zeros", &job.dst.path, at, e));
                        return;
                    }
                    at += n as u64;
                }
                ZeroMode::Write
            };
            self.c.bytes_zeroed += len;
            self.c.record(off, len, mode);
            self.c.note_mode(mode);
        }
    }
}

/// The parts of the block `dst..dst + len` outside `runs` (offsets in the block), as
/// destination (offset, len).
fn zero_parts(dst: u64, len: u64, runs: &[(u32, u32)]) -> Vec<(u64, u64)> {
    let mut parts = Vec::with_capacity(runs.len() + 1);
    let mut pos = 0u64;
    for &(off, n) in runs {
        if u64::from(off) > pos {
            parts.push((dst + pos, u64::from(off) - pos));
        }
        pos = u64::from(off) + u64::from(n);
    }
    if pos < len {
        parts.push((dst + pos, len - pos));
    }
    parts
}

/// The runs of non-zero [`ZERO_GRAIN`] blocks of `buf` (which lands at `dst`), as (offset, len);
/// empty when every block holds data (write it whole) or `dst` is not grain-aligned.
fn nonzero_runs(buf: &[u8], dst: u64) -> Vec<(u32, u32)> {
    if !dst.is_multiple_of(ZERO_GRAIN as u64) || buf.len() <= ZERO_GRAIN {
        return Vec::new();
    }
    let mut runs: Vec<(u32, u32)> = Vec::new();
    let mut any_zero = false;
    for (i, block) in buf.chunks(ZERO_GRAIN).enumerate() {
        if is_zero(block) {
            any_zero = true;
            continue;
        }
        let off = (i * ZERO_GRAIN) as u32;
        match runs.last_mut() {
            Some(r) if r.0 + r.1 == off => r.1 += block.len() as u32,
            _ => runs.push((off, block.len() as u32)),
        }
    }
    if any_zero {
        runs
    } else {
        Vec::new()
    }
}
