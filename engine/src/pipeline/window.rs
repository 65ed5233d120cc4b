//! The submission window: cuts the plan into items and keeps up to `queue_depth` of them in
//! flight, as fast as the bandwidth limit allows.
//!
//! [`Cursor`] walks the plan in destination order: a `Copy` op in block-sized pieces (split at
//! absolute multiples of the block size in the destination), a run of `Decode` ops as one item
//! ([`decode::run_at`]), and `Zero` ops, `Skip` ops and the gaps between ops as ranges that
//! need no slot. [`Run::fill`] starts items while a slot is free: zero writes queued by the hole
//! part first, then the cursor's next step, handing holes to [`Run::zero_range`] and counting
//! skips on the way. A decode run needs two free slots (the second for its compressed input);
//! while it cannot have them the cursor is rewound to it. [`Run::submit`] is the one place a
//! request is pushed, for a new stage or to resubmit the rest of a transfer, through the
//! O_DIRECT file when offset, length and buffer are aligned.

use super::decode;
use super::slot::{Active, Item, Stage};
use super::Run;
use crate::error::Error;
use crate::plan::{Op, Plan};
use crate::uring::{IoOp, Req};
use std::time::{Duration, Instant};

/// Where the plan walk stands.
pub(super) struct Cursor {
    /// The next op.
    op_idx: usize,
    /// Bytes of the next op (a `Copy`) already cut into items.
    op_pos: u64,
    /// The destination is handled up to here.
    covered_to: u64,
}

/// The cursor's next step.
enum Step {
    /// A piece that needs a slot.
    Item(Item),
    /// A range to make read as zeros (a `Zero` op, or a gap between ops).
    Hole { dst: u64, len: u64 },
    /// A range to leave as it is (a `Skip` op).
    Skip { dst: u64, len: u64 },
}

impl Cursor {
    pub(super) fn new(plan: &Plan) -> Cursor {
        Cursor {
            op_idx: 0,
            op_pos: 0,
            covered_to: plan.dst_base,
        }
    }

    /// The whole plan has been handed out.
    pub(super) fn finished(&self, plan: &Plan) -> bool {
        self.op_idx >= plan.ops.len() && self.covered_to >= plan.dst_base + plan.logical_size
    }

    /// The next step over `plan` in `bs`-byte blocks; `Ok(None)` at its end. Err: a decode run
    /// larger than a block (the reason).
    fn step(&mut self, plan: &Plan, bs: u64) -> Result<Option<Step>, String> {
        let end = plan.dst_base + plan.logical_size;
        let next_op = plan.ops.get(self.op_idx).copied();
        // A gap before the next op (or the end) is an implicit Zero op.
        let gap_to = next_op.map_or(end, |op| op.dst_range().start);
        if self.covered_to < gap_to {
            let (dst, len) = (self.covered_to, gap_to - self.covered_to);
            self.covered_to = gap_to;
            return Ok(Some(Step::Hole { dst, len }));
        }
        let Some(op) = next_op else {
            return Ok(None);
        };
        Ok(Some(match op {
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
                Step::Item(Item::Copy {
                    src: src + pos,
                    dst: at,
                    len: n,
                })
            }
            Op::Zero { dst, len } => {
                self.op_idx += 1;
                self.covered_to = dst + len;
                Step::Hole { dst, len }
            }
            Op::Skip { dst, len } => {
                self.op_idx += 1;
                self.covered_to = dst + len;
                Step::Skip { dst, len }
            }
            Op::Decode { .. } => {
                let item = decode::run_at(plan, self.op_idx, bs)?;
                if let Item::Decode { n, .. } = item {
                    self.op_idx += n;
                }
                self.covered_to = item.dst() + item.len();
                Step::Item(item)
            }
        }))
    }

    /// Rewinds to `item`, which could not start yet.
    fn push_back(&mut self, item: Item) {
        if let Item::Decode { n, .. } = item {
            // Decode items are whole ops: rewind to the first.
            self.op_idx -= n;
            self.op_pos = 0;
            self.covered_to = item.dst();
        }
    }
}

/// The bandwidth limit: bytes started so far against the time since the run started.
pub(super) struct Throttle {
    /// Bytes per second (none, or 0: no limit).
    limit: Option<u64>,
    submitted: u64,
    started: Instant,
}

impl Throttle {
    pub(super) fn new(limit: Option<u64>) -> Throttle {
        Throttle {
            limit,
            submitted: 0,
            started: Instant::now(),
        }
    }

    /// How long to wait before the next byte may start, if at all.
    pub(super) fn delay(&self) -> Option<Duration> {
        let rate = self.limit.filter(|r| *r > 0)?;
        let due = Duration::from_secs_f64(self.submitted as f64 / rate as f64);
        let elapsed = self.started.elapsed();
        (due > elapsed).then(|| due - elapsed)
    }

    /// `n` more bytes started.
    pub(super) fn charge(&mut self, n: u64) {
        self.submitted += n;
    }
}

impl Run<'_, '_> {
    /// Starts as many items as slots and the throttle allow. Returns how long to wait before
    /// the throttle lets the next item start, if it is what stops us.
    pub(super) fn fill(&mut self) -> Option<Duration> {
        while let Some(&slot) = self.free.last() {
            if let Some(d) = self.throttle.delay() {
                return Some(d);
            }
            let item = self.next_item()?;
            if let Item::Decode { .. } = item {
                if self.free.len() < 2 {
                    // Needs a second buffer for the compressed input: wait for one.
                    self.cursor.push_back(item);
                    return None;
                }
            }
            self.free.pop();
            let aux = match item {
                Item::Decode { .. } => self.free.pop(),
                _ => None,
            };
            self.throttle.charge(match item {
                Item::Copy { len, .. } | Item::ZeroWrite { len, .. } => len,
                Item::Decode { src_len, .. } => src_len,
            });
            self.slots[slot] = Some(Active::new(item, aux));
            self.submit(slot);
            if self.error.is_some() {
                return None;
            }
        }
        None
    }

    /// The next item needing a slot. Zero ranges handled without I/O (left alone, or zeroed by
    /// a synchronous call) are done here on the way.
    fn next_item(&mut self) -> Option<Item> {
        let bs = self.job.block_size as u64;
        loop {
            if let Some(item) = self.holes.next_write(bs) {
                return Some(item);
            }
            let step = match self.cursor.step(self.job.plan, bs) {
                Ok(step) => step?,
                Err(reason) => {
                    self.fail(Error::BadImage {
                        path: self.src_path().to_path_buf(),
                        reason,
                    });
                    return None;
                }
            };
            match step {
                Step::Item(item) => return Some(item),
                Step::Hole { dst, len } => {
                    if self.holes.zeroed_first {
                        continue;
                    }
                    self.zero_range(dst, len);
                    if self.error.is_some() {
                        return None;
                    }
                }
                Step::Skip { dst, len } => {
                    self.c.bytes_skipped += len;
                    self.advance(dst, len);
                }
            }
        }
    }

    /// Pushes the current transfer of `slot` (or the rest of it); a refused push fails the run.
    pub(super) fn submit(&mut self, slot: usize) {
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
                    item.dst() + off,
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
            self.release(slot);
            self.fail(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Codec;

    fn plan(dst_base: u64, logical_size: u64, unit: u64, ops: Vec<Op>) -> Plan {
        Plan {
            logical_size,
            dst_base,
            ops,
            unit,
        }
    }

    /// Every step of `plan` in 4 KiB blocks, as `kind dst+len` ('c' copy piece, 'd' decode
    /// run, 'h' hole, 's' skip).
    fn walk(plan: &Plan) -> String {
        let mut cursor = Cursor::new(plan);
        let mut steps = Vec::new();
        while let Some(step) = cursor.step(plan, 4096).unwrap() {
            let (kind, dst, len) = match step {
                Step::Item(item @ Item::Copy { .. }) => ('c', item.dst(), item.len()),
                Step::Item(item) => ('d', item.dst(), item.len()),
                Step::Hole { dst, len } => ('h', dst, len),
                Step::Skip { dst, len } => ('s', dst, len),
            };
            steps.push(format!("{kind}{dst}+{len}"));
        }
        assert!(cursor.finished(plan));
        steps.join(" ")
    }

    #[test]
    fn copies_are_cut_at_destination_blocks_and_gaps_are_holes() {
        let ops = vec![
            Op::Copy {
                src: 0,
                dst: 1500,
                len: 5000,
            },
            Op::Skip {
                dst: 6500,
                len: 500,
            },
            Op::Zero {
                dst: 7000,
                len: 1000,
            },
        ];
        assert_eq!(
            walk(&plan(1000, 9000, 0, ops)),
            "h1000+500 c1500+2596 c4096+2404 s6500+500 h7000+1000 h8000+2000"
        );
    }

    #[test]
    fn decode_units_within_a_block_are_one_run_and_push_back_rewinds_to_it() {
        let unit = |src, dst| Op::Decode {
            src,
            src_len: 300,
            dst,
            len: 1024,
            codec: Codec::Deflate,
        };
        // Three units in the first 4 KiB block, then one in the next.
        let ops = [(0, 0), (300, 1024), (600, 2048), (900, 4096)];
        let plan = plan(0, 6144, 1024, ops.map(|(s, d)| unit(s, d)).to_vec());
        assert_eq!(walk(&plan), "d0+3072 h3072+1024 d4096+1024 h5120+1024");
        let mut cursor = Cursor::new(&plan);
        let Some(Step::Item(first)) = cursor.step(&plan, 4096).unwrap() else {
            panic!("a decode run first");
        };
        cursor.push_back(first);
        assert!(matches!(
            cursor.step(&plan, 4096).unwrap(),
            Some(Step::Item(Item::Decode { dst: 0, n: 3, .. }))
        ));
    }

    #[test]
    fn a_decode_run_larger_than_a_block_is_refused() {
        let op = Op::Decode {
            src: 0,
            src_len: 100,
            dst: 0,
            len: 8192,
            codec: Codec::Zstd,
        };
        let plan = plan(0, 8192, 0, vec![op]);
        let err = Cursor::new(&plan).step(&plan, 4096).err().unwrap();
        assert!(
            err.contains("larger than the 4096-byte block size"),
            "{err}"
        );
    }
}
