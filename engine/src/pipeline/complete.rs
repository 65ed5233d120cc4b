//! Completion handling: what a finished request means for its slot.
//!
//! [`Run::complete`] takes one completion: after a failure it only frees the slot (the run is
//! draining); EAGAIN/EINTR resubmit the same transfer up to [`MAX_RETRIES`] times
//! ([`retryable`]); a short transfer resubmits the remainder; zero bytes before the expected
//! end is an error (the source shrank, or the device accepts nothing), never a silent hole; any
//! other errno fails the run with the operation, path and offset ([`Run::transfer_target`]).
//! A finished read goes to [`Run::data_ready`] (a decode run's read to the decode part first),
//! which handles an all-zero block as a hole or starts the write; a finished write moves on to
//! the block's next non-zero run, or counts the block and frees the slot.

use super::slot::{Active, Item, Stage};
use super::Run;
use crate::error::Error;
use crate::uring::Done;
use crate::zero::is_zero;
use crate::zeroing::ZeroMode;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How EAGAIN/EINTR completions are retried before giving up.
const MAX_RETRIES: u32 = 16;

/// A completion failed with `errno` after `retries` retries of the same request: try again?
/// (EAGAIN/EINTR, a bounded number of times.)
pub(crate) fn retryable(errno: i32, retries: u32) -> bool {
    matches!(errno, libc::EAGAIN | libc::EINTR) && retries < MAX_RETRIES
}

impl Run<'_, '_> {
    /// Handles the completion `d` of the request of slot `d.user_data`.
    pub(super) fn complete(&mut self, d: Done) {
        let slot = d.user_data as usize;
        let Some(a) = self.slots[slot].as_mut() else {
            return;
        };
        let total = match (a.item, a.stage) {
            (Item::Decode { src_len, .. }, Stage::Read) => src_len,
            (_, Stage::Write) => a.write_span().1,
            (item, Stage::Read) => item.len(),
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
                let len = item.len();
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
                self.advance(item.dst(), len);
            }
            (Item::ZeroWrite { .. }, Stage::Read) => unreachable!("zero writes never read"),
            (_, Stage::Decode) => unreachable!("a decoding slot has no I/O"),
        }
    }

    /// The slot's buffer holds `len` bytes for `dst`: an all-zero block is handled like a hole
    /// (unless holes are made by writing zeros anyway), anything else is written.
    pub(super) fn data_ready(&mut self, slot: usize, dst: u64, len: u64) {
        let detect =
            self.job.detect_zeroes && is_zero(&self.backend.pool().get(slot)[..len as usize]);
        if detect && self.holes.mode != ZeroMode::Write {
            self.release(slot);
            self.allocated_unused(dst, len);
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

    /// (file offset, path, op name) of the current transfer of `a`.
    pub(super) fn transfer_target<'s>(&'s self, a: &Active) -> (u64, &'s Path, &'static str) {
        match (a.item, a.stage) {
            (Item::Copy { src, .. }, Stage::Read) => (src + a.done as u64, self.src_path(), "read"),
            (Item::Decode { src, .. }, Stage::Read) => {
                (src + a.done as u64, self.src_path(), "read compressed")
            }
            (Item::Decode { src, .. }, Stage::Decode) => (src, self.src_path(), "decode"),
            (item, _) => (
                item.dst() + a.write_span().0 + a.done as u64,
                &self.job.dst.path,
                if a.zeroing { "write zeros" } else { "write" },
            ),
        }
    }

    /// The oldest in-flight I/O if it has waited longer than the I/O timeout.
    pub(super) fn stalled(&self, last_progress: Instant) -> Option<(u64, PathBuf, &'static str)> {
        if last_progress.elapsed() < self.job.io_timeout {
            return None;
        }
        let a = self.slots.iter().flatten().min_by_key(|a| a.started)?;
        let (off, path, op) = self.transfer_target(a);
        Some((off, path.to_path_buf(), op))
    }
}
