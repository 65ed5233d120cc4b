//! Slots: what one of the `queue_depth` places of the window holds while its item is in flight.
//!
//! Slot `i` owns pool buffer `i`; its index is the request's `user_data`. The window takes free
//! slots; a decode run takes a second one (`aux`) for its compressed input, which the decode
//! part gives back as soon as the input is decoded or copied out. An [`Active`] goes `Read` →
//! (`Decode`) → `Write` (a `ZeroWrite` starts at `Write`), and [`Run::release`] gives its
//! buffers back when it is done or failed.

use super::Run;
use std::time::Instant;

/// A piece of the plan that takes one slot: at most one block, read once and written once.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item {
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

impl Item {
    /// Destination offset.
    pub(super) fn dst(self) -> u64 {
        match self {
            Item::Copy { dst, .. } | Item::ZeroWrite { dst, .. } | Item::Decode { dst, .. } => dst,
        }
    }

    /// Bytes written to the destination.
    pub(super) fn len(self) -> u64 {
        match self {
            Item::Copy { len, .. } | Item::ZeroWrite { len, .. } | Item::Decode { len, .. } => len,
        }
    }
}

/// Where an active item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Read,
    /// Handed to a decoder thread (no I/O in flight).
    Decode,
    Write,
}

/// An item in flight.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) item: Item,
    pub(super) stage: Stage,
    /// Bytes of the current transfer done.
    pub(super) done: usize,
    pub(super) retries: u32,
    /// Extra slot whose buffer holds compressed input (Decode).
    pub(super) aux: Option<usize>,
    /// The write comes from the zero buffer / a zero-detected block.
    pub(super) zeroing: bool,
    /// Write only these (offset, len) runs of the buffer (its other 4 KiB blocks are zero and
    /// the destination already reads zeros there, or they are queued for punching); empty:
    /// write it whole.
    pub(super) segs: Vec<(u32, u32)>,
    /// The run being written.
    pub(super) seg: usize,
    /// The zero blocks between `segs` are queued in [`Gaps`](super::gaps::Gaps) (the
    /// destination does not read zeros there yet): they are neither written nor skipped.
    pub(super) gaps_queued: bool,
    pub(super) started: Instant,
}

impl Active {
    /// A new item, at its first stage, with the aux slot of a decode run.
    pub(super) fn new(item: Item, aux: Option<usize>) -> Active {
        let (stage, zeroing) = match item {
            Item::ZeroWrite { .. } => (Stage::Write, true),
            _ => (Stage::Read, false),
        };
        Active {
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
        }
    }

    /// (offset in the item, length) of the current write.
    pub(super) fn write_span(&self) -> (u64, u64) {
        match self.segs.get(self.seg) {
            Some(&(off, len)) => (off as u64, len as u64),
            None => (0, self.item.len()),
        }
    }
}

impl Run<'_, '_> {
    /// Frees `slot` and its aux buffer.
    pub(super) fn release(&mut self, slot: usize) {
        if let Some(a) = self.slots[slot].take() {
            if let Some(aux) = a.aux {
                self.free.push(aux);
            }
        }
        self.free.push(slot);
    }
}
