//! Plans: what the pipeline must do, as a list of operations over the destination's byte space.

use crate::extent::ExtentMap;

/// A compression codec of a compressed image cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Raw deflate (no zlib header), as qcow2 stores it.
    Deflate,
    /// A zstd frame.
    Zstd,
}

/// One operation of a plan. Offsets are absolute in the source and destination files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes at `src` in the source, write them at `dst` in the destination.
    Copy {
        /// Source offset.
        src: u64,
        /// Destination offset.
        dst: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The destination range must read back as zeros (source hole, image zero cluster).
    Zero {
        /// Destination offset.
        dst: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Leave the destination range as it is (a wipe's holes, a resumed copy's done chunks).
    Skip {
        /// Destination offset.
        dst: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Read `src_len` compressed bytes at `src`, decode to exactly `len` bytes, write at `dst`.
    Decode {
        /// Source offset of the compressed bytes.
        src: u64,
        /// Compressed length.
        src_len: u64,
        /// Destination offset.
        dst: u64,
        /// Decoded length.
        len: u64,
        /// The codec.
        codec: Codec,
    },
}

impl Op {
    /// The destination range this operation covers.
    pub fn dst_range(&self) -> std::ops::Range<u64> {
        match *self {
            Op::Copy { dst, len, .. }
            | Op::Zero { dst, len }
            | Op::Skip { dst, len }
            | Op::Decode { dst, len, .. } => dst..dst + len,
        }
    }
}

/// A plan: operations ascending by destination offset, disjoint. The destination range covered
/// is `[dst_base, dst_base + logical_size)`; parts no operation covers are treated as `Zero`.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Bytes of destination the plan covers.
    pub logical_size: u64,
    /// Destination offset where the covered range starts.
    pub dst_base: u64,
    /// The operations.
    pub ops: Vec<Op>,
    /// What any one compressed unit ([`Op::Decode`]) may decode to at most: the image's
    /// cluster or grain size (a cut last unit keeps its first `len` bytes of it). 0: only the
    /// general cap of the largest unit any format has.
    pub unit: u64,
}

impl Plan {
    /// The same plan writing `offset` bytes further into the destination (an image written into
    /// a window that starts there). Offsets past `u64::MAX` are refused.
    pub fn shifted(&self, offset: u64) -> Result<Plan, String> {
        let add = |v: u64| {
            v.checked_add(offset)
                .ok_or_else(|| format!("destination offset {v} + {offset} overflows"))
        };
        let ops = self
            .ops
            .iter()
            .map(|o| {
                Ok(match *o {
                    Op::Copy { src, dst, len } => Op::Copy {
                        src,
                        dst: add(dst)?,
                        len,
                    },
                    Op::Zero { dst, len } => Op::Zero {
                        dst: add(dst)?,
                        len,
                    },
                    Op::Skip { dst, len } => Op::Skip {
                        dst: add(dst)?,
                        len,
                    },
                    Op::Decode {
                        src,
                        src_len,
                        dst,
                        len,
                        codec,
                    } => Op::Decode {
                        src,
                        src_len,
                        dst: add(dst)?,
                        len,
                        codec,
                    },
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        add(self.dst_base.saturating_add(self.logical_size))?;
        Ok(Plan {
            dst_base: add(self.dst_base)?,
            ops,
            ..self.clone()
        })
    }

    /// A copy plan: `data` (absolute source offsets inside `src_base..src_base+len`) is copied
    /// to the same relative place at `dst_base`; everything else is a gap between ops, which
    /// the pipeline makes read as zeros exactly as it does a `Zero` op. Only data takes memory
    /// (one op per extent, a heavily fragmented source's map handed over and freed as it goes).
    pub fn from_data(data: ExtentMap, src_base: u64, dst_base: u64, len: u64) -> Plan {
        let mut plan = Plan::copying(dst_base, len);
        for r in data.into_ranges() {
            plan.push_data(r, src_base);
        }
        plan
    }

    /// An empty copy plan of `len` bytes at `dst_base`, to be filled by [`Plan::push_data`].
    pub fn copying(dst_base: u64, len: u64) -> Plan {
        Plan {
            logical_size: len,
            dst_base,
            ops: Vec::new(),
            unit: 0,
        }
    }

    /// Appends a data range of the source (absolute offsets, ascending, after the previous
    /// one; clipped to the `src_base..src_base+logical_size` window) as a `Copy` op.
    pub fn push_data(&mut self, r: std::ops::Range<u64>, src_base: u64) {
        let (start, end) = (
            r.start.max(src_base),
            r.end.min(src_base + self.logical_size),
        );
        if start < end {
            self.ops.push(Op::Copy {
                src: start,
                dst: self.dst_base + (start - src_base),
                len: end - start,
            });
        }
    }

    /// Every op, with the gaps between them as the `Zero` ops they stand for.
    fn with_gaps(&self) -> impl Iterator<Item = Op> + '_ {
        let end = self.dst_base + self.logical_size;
        let mut pos = self.dst_base;
        let mut ops = self.ops.iter().peekable();
        std::iter::from_fn(move || {
            let next = ops.peek().map(|o| o.dst_range().start).unwrap_or(end);
            if pos < next {
                let gap = Op::Zero {
                    dst: pos,
                    len: next - pos,
                };
                pos = next;
                return Some(gap);
            }
            let op = *ops.next()?;
            pos = op.dst_range().end;
            Some(op)
        })
    }

    /// The same plan with every part that lies inside `done` (destination offsets) turned into
    /// [`Op::Skip`]: what a resumed copy still has to do. `Decode` ops are kept whole unless
    /// entirely done.
    pub fn skip_done(&self, done: &ExtentMap) -> Plan {
        let mut ops = Vec::with_capacity(self.ops.len());
        for op in self.with_gaps() {
            let op = &op;
            let r = op.dst_range();
            if let Op::Decode { .. } = op {
                ops.push(if done.contains_range(r.clone()) {
                    Op::Skip {
                        dst: r.start,
                        len: r.end - r.start,
                    }
                } else {
                    *op
                });
                continue;
            }
            let mut pos = r.start;
            let piece = |from: u64, to: u64, skip: bool, ops: &mut Vec<Op>| {
                if from >= to {
                    return;
                }
                ops.push(match *op {
                    _ if skip => Op::Skip {
                        dst: from,
                        len: to - from,
                    },
                    Op::Copy { src, dst, .. } => Op::Copy {
                        src: src + (from - dst),
                        dst: from,
                        len: to - from,
                    },
                    Op::Zero { .. } => Op::Zero {
                        dst: from,
                        len: to - from,
                    },
                    _ => Op::Skip {
                        dst: from,
                        len: to - from,
                    },
                });
            };
            for d in done.iter_range(r.clone()) {
                piece(pos, d.start, false, &mut ops);
                piece(d.start, d.end, true, &mut ops);
                pos = d.end;
            }
            piece(pos, r.end, false, &mut ops);
        }
        Plan {
            logical_size: self.logical_size,
            dst_base: self.dst_base,
            ops,
            unit: self.unit,
        }
    }

    /// Checks the plan's invariants: ops ascending, disjoint, inside the covered range,
    /// non-empty. Plans built from untrusted image metadata are validated with this before any
    /// write.
    pub fn validate(&self) -> Result<(), String> {
        let end = self
            .dst_base
            .checked_add(self.logical_size)
            .ok_or("plan range overflows")?;
        let mut pos = self.dst_base;
        for op in &self.ops {
            let r = op.dst_range();
            if r.start < pos {
                return Err(format!(
                    "operation at {} overlaps or is out of order",
                    r.start
                ));
            }
            if r.end > end || r.end < r.start {
                return Err(format!("operation at {} runs past the end {end}", r.start));
            }
            if r.is_empty() {
                return Err(format!("empty operation at {}", r.start));
            }
            if let Op::Copy { src, len, .. }
            | Op::Decode {
                src, src_len: len, ..
            } = *op
            {
                src.checked_add(len).ok_or("source range overflows")?;
            }
            pos = r.end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_data_copies_data_and_leaves_holes_as_gaps() {
        let data = ExtentMap::from_ranges([100..200, 300..400]);
        let p = Plan::from_data(data, 50, 1000, 400);
        let copies = vec![
            Op::Copy {
                src: 100,
                dst: 1050,
                len: 100,
            },
            Op::Copy {
                src: 300,
                dst: 1250,
                len: 100,
            },
        ];
        assert_eq!(p.ops, copies);
        p.validate().unwrap();
        // The gaps stand for the Zero ops a hole needs.
        assert_eq!(
            p.with_gaps().collect::<Vec<_>>(),
            vec![
                Op::Zero { dst: 1000, len: 50 },
                copies[0],
                Op::Zero {
                    dst: 1150,
                    len: 100
                },
                copies[1],
                Op::Zero { dst: 1350, len: 50 },
            ]
        );
    }

    #[test]
    fn skip_done_splits_ops() {
        let data = {
            let mut m = ExtentMap::new();
            m.insert(100..200);
            m
        };
        let p = Plan::from_data(data, 0, 0, 300).skip_done(&{
            let mut m = ExtentMap::new();
            m.insert(50..150);
            m
        });
        assert_eq!(
            p.ops,
            vec![
                Op::Zero { dst: 0, len: 50 },
                Op::Skip { dst: 50, len: 50 },
                Op::Skip { dst: 100, len: 50 },
                Op::Copy {
                    src: 150,
                    dst: 150,
                    len: 50
                },
                Op::Zero { dst: 200, len: 100 },
            ]
        );
        p.validate().unwrap();
    }

    #[test]
    fn validate_rejects_overlap_and_overrun() {
        let mut p = Plan {
            logical_size: 100,
            dst_base: 0,
            ops: vec![Op::Zero { dst: 0, len: 60 }, Op::Zero { dst: 50, len: 10 }],
            unit: 0,
        };
        assert!(p.validate().is_err());
        p.ops = vec![Op::Zero { dst: 90, len: 20 }];
        assert!(p.validate().is_err());
    }
}
