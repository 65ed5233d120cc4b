//! Allocating first: the destination's data ranges allocated in one pass before the first
//! write, for a destination that reads zeros wherever nothing is written, where allocating as
//! the writes come is costly (pieces of data far apart in a new ext4 file: [`crate::tuning`]
//! decides, and has the threshold's measurements).
//!
//! A write into a hole of an ext4 file allocates its blocks there and then, sized as if the
//! file were being streamed: a 4 KiB write far into a large file asks the allocator for an
//! 8 MiB preallocation, of which it uses one block; a direct write that allocates also takes
//! the file's lock for itself. `fallocate` of a range of up to 128 MiB allocates exactly that
//! range, as unwritten blocks (they read as zeros), and every write then lands on allocated
//! blocks. Ember's copy of 1,048,576 pieces of 4 KiB, one every 1 MiB of 1 TiB, to a new file
//! on this machine's disk: 231 s writing into holes, 19 s allocated first.
//!
//! [`Run::allocate_data`] runs once, from [`Run::before_writes`], while only the first reads
//! are in flight (`fallocate` waits for the file's direct I/O in flight). Ranges are allocated
//! as the plan lists them, adjacent ones in one call. When the file system lacks the space
//! for all of them (`statvfs` before, or ENOSPC during), or refuses to preallocate, the run
//! goes on without it: what was allocated is given back first, so the copy itself can still
//! use the space its zero blocks will not need (`engine/tests/fault_devices.rs` runs a real
//! ext4 out of space in the middle of the pass).
//!
//! A data block found all zeros (or the zero 4 KiB parts of one) is not written, as without
//! allocating first: it reads as zeros, from unwritten blocks. [`Run::release_unused`] gives
//! those blocks back (punches them) once every write is done, so the destination allocates
//! what a copy into holes would.

use super::Run;
use crate::error::Error;
use crate::plan::Op;
use crate::sys;
use std::io;
use std::os::fd::AsFd;

/// The longest range one allocating call covers (keeps cancellation responsive; ext4 allocates
/// up to 128 MiB at once exactly as asked, longer ranges in large pieces anyway).
const ALLOCATE_STEP: u64 = 1 << 30;

/// Allocated ranges left unwritten that are kept for [`Run::release_unused`] (16 bytes each);
/// past it they are given back at once.
const MAX_UNUSED: usize = 1 << 16;

/// The allocating-first side of a run.
#[derive(Default)]
pub(super) struct Prealloc {
    /// The data ranges were allocated before the writes.
    pub(super) active: bool,
    /// Allocated ranges no write will fill (all-zero data), to give back at the end.
    unused: Vec<(u64, u64)>,
}

impl Run<'_, '_> {
    /// Allocates every data range of the plan in the destination (see the module doc); on a
    /// refusal or a lack of space, gives back what it allocated and leaves the run as it was.
    pub(super) fn allocate_data(&mut self) {
        let job = self.job;
        let fd = job.dst.file.as_fd();
        let total: u64 = data_ranges(&job.plan.ops).map(|r| r.1).sum();
        match sys::free_space(fd) {
            Ok((free, _)) if free > total => {}
            Ok((free, _)) => {
                tracing::debug!(
                    total,
                    free,
                    "not allocating first: the file system lacks the space"
                );
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "not allocating first: statvfs failed");
                return;
            }
        }
        for (i, (off, len)) in data_ranges(&job.plan.ops).enumerate() {
            let mut pos = off;
            while pos < off + len {
                if self.cancelled() {
                    self.give_back(i, pos);
                    self.fail(self.cancelled_error());
                    return;
                }
                let n = (off + len - pos).min(ALLOCATE_STEP);
                if let Err(e) = sys::allocate(fd, pos, n) {
                    // A call that failed for space may keep what it allocated before failing.
                    self.give_back(i, pos + n);
                    let space = matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
                    if unsupported(&e) || space {
                        tracing::debug!(error = %e, "not allocating first");
                    } else {
                        self.fail(Error::io("allocate", &job.dst.path, pos, e));
                    }
                    return;
                }
                pos += n;
            }
        }
        self.prealloc.active = true;
        self.c.allocated_first = true;
    }

    /// Punches what [`Run::allocate_data`] may have allocated before it stopped at `end` in the
    /// data range numbered `last`: the ranges before it, and that one up to `end` (the file was
    /// all holes, so nothing else is punched). A failed punch leaves blocks allocated that read
    /// as zeros: logged, not fatal.
    fn give_back(&mut self, last: usize, end: u64) {
        let fd = self.job.dst.file.as_fd();
        for (i, (off, len)) in data_ranges(&self.job.plan.ops).take(last + 1).enumerate() {
            let n = if i == last { end - off } else { len };
            if n > 0 {
                if let Err(e) = sys::punch_hole(fd, off, n) {
                    tracing::debug!(error = %e, offset = off, "giving back an allocated range failed");
                    return;
                }
            }
        }
    }

    /// `[dst, dst + len)` was allocated first and will not be written (its data is zeros).
    pub(super) fn allocated_unused(&mut self, dst: u64, len: u64) {
        if !self.prealloc.active || len == 0 {
            return;
        }
        let unused = &mut self.prealloc.unused;
        match unused.last_mut() {
            Some(last) if last.0 + last.1 == dst => last.1 += len,
            _ => unused.push((dst, len)),
        }
        if unused.len() >= MAX_UNUSED {
            self.release_unused();
        }
    }

    /// Gives back the allocated ranges no write filled (see the module doc); a file system
    /// that will not punch keeps them (they read as zeros either way).
    pub(super) fn release_unused(&mut self) {
        let fd = self.job.dst.file.as_fd();
        for (off, len) in std::mem::take(&mut self.prealloc.unused) {
            if let Err(e) = sys::punch_hole(fd, off, len) {
                tracing::debug!(error = %e, offset = off, "giving back an unused allocated range failed");
                if unsupported(&e) {
                    // Not again: the ranges still read as zeros.
                    self.prealloc.active = false;
                    return;
                }
            }
        }
    }
}

/// The file system refuses this fallocate mode.
fn unsupported(e: &io::Error) -> bool {
    super::holes::refused(e) || e.raw_os_error() == Some(libc::EINVAL)
}

/// The plan's data ranges in the destination (copied or decoded), in plan order, adjacent
/// ones joined (walked again rather than kept: a fragmented plan has a million).
fn data_ranges(ops: &[Op]) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut data = ops
        .iter()
        .filter(|op| matches!(op, Op::Copy { .. } | Op::Decode { .. }))
        .map(|op| op.dst_range())
        .peekable();
    std::iter::from_fn(move || {
        let mut r = data.next()?;
        while let Some(next) = data.next_if(|n| n.start == r.end) {
            r.end = next.end;
        }
        Some((r.start, r.end - r.start))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ranges_join_adjacent_ops_and_skip_zeros() {
        let ops = [
            Op::Copy {
                src: 0,
                dst: 0,
                len: 4096,
            },
            Op::Copy {
                src: 8192,
                dst: 4096,
                len: 4096,
            },
            Op::Zero {
                dst: 8192,
                len: 4096,
            },
            Op::Copy {
                src: 1 << 20,
                dst: 1 << 20,
                len: 4096,
            },
        ];
        let ranges: Vec<_> = data_ranges(&ops).collect();
        assert_eq!(ranges, vec![(0, 8192), (1 << 20, 4096)]);
    }
}
