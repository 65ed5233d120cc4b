//! qcow2 -> [`Plan`]: walks the active L1/L2 tables (one L2 table in memory at a time),
//! validates every entry, and coalesces contiguous clusters into long ops.
//!
//! Entry layouts (qemu docs/interop/qcow2.txt):
//! - L1: bits 9..=55 L2 table offset (cluster aligned), bit 63 "copied"; others reserved.
//! - L2 standard: bit 0 "reads as zeros" (v3), bits 9..=55 host cluster offset, bit 62
//!   compressed = 0, bit 63 copied; bits 1..=8 and 56..=61 reserved.
//! - L2 compressed (bit 62 = 1): with x = 62 - (cluster_bits - 8), bits 0..x host byte offset,
//!   bits x..=61 number of additional 512-byte sectors.
//! - Extended L2: a second u64 per entry, bits 0..32 "allocated" and 32..64 "reads as zeros",
//!   one bit per 1/32 of the cluster (subcluster).

use super::super::error::{ImageError, ImageResult};
use super::super::overlap::HostRanges;
use super::super::source::{be64, check_range, ImageSource};
use super::header::{CompressionType, Header};
use crate::plan::{Codec, Op, Plan};

const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01fe;
const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_STD_RESERVED: u64 = 0x3f00_0000_0000_01fe;
const L2_ZERO: u64 = 1;

/// What a walk found, besides the plan.
#[derive(Debug, Default, Clone, Copy)]
pub struct WalkStats {
    /// Guest bytes backed by (uncompressed or compressed) data.
    pub data_bytes: u64,
    /// Guest bytes that are explicit zero clusters.
    pub zero_bytes: u64,
    /// Number of compressed clusters.
    pub compressed_clusters: u64,
}

/// Builds the coalesced plan.
#[derive(Debug)]
pub(crate) struct PlanBuilder {
    plan: Plan,
}

impl PlanBuilder {
    pub(crate) fn new(logical_size: u64) -> Self {
        PlanBuilder {
            plan: Plan {
                logical_size,
                dst_base: 0,
                ops: Vec::new(),
                unit: 0,
            },
        }
    }
    pub(crate) fn copy(&mut self, src: u64, dst: u64, len: u64) {
        if len == 0 {
            return;
        }
        if let Some(Op::Copy {
            src: s,
            dst: d,
            len: l,
        }) = self.plan.ops.last_mut()
        {
            if *s + *l == src && *d + *l == dst {
                *l += len;
                return;
            }
        }
        self.plan.ops.push(Op::Copy { src, dst, len });
    }
    pub(crate) fn zero(&mut self, dst: u64, len: u64) {
        if len == 0 {
            return;
        }
        if let Some(Op::Zero { dst: d, len: l }) = self.plan.ops.last_mut() {
            if *d + *l == dst {
                *l += len;
                return;
            }
        }
        self.plan.ops.push(Op::Zero { dst, len });
    }
    pub(crate) fn decode(&mut self, src: u64, src_len: u64, dst: u64, len: u64, codec: Codec) {
        self.plan.ops.push(Op::Decode {
            src,
            src_len,
            dst,
            len,
            codec,
        });
    }
    pub(crate) fn ops_len(&self) -> usize {
        self.plan.ops.len()
    }
    pub(crate) fn finish(self) -> Plan {
        self.plan
    }
}

/// Walks the image and returns its plan. Nothing is written anywhere; every table and data
/// cluster is checked to lie inside the file and not to overlap any other.
pub fn build_plan(src: &(impl ImageSource + ?Sized), h: &Header) -> ImageResult<(Plan, WalkStats)> {
    let file_len = src.len();
    let cs = h.cluster_size();
    let mut ranges = HostRanges::new();
    let mut stats = WalkStats::default();
    ranges.add("header", 0, cs.min(file_len))?;
    ranges.add("L1 table", h.l1_table_offset, u64::from(h.l1_size) * 8)?;
    let reft_bytes = u64::from(h.refcount_table_clusters) * cs;
    ranges.add("refcount table", h.refcount_table_offset, reft_bytes)?;
    // The fixed metadata first, so that e.g. an L1 table placed on the refcount table is
    // reported as such rather than as whatever its entries then point at.
    let mut fixed = HostRanges::new();
    fixed.add("header", 0, cs.min(file_len))?;
    fixed.add("L1 table", h.l1_table_offset, u64::from(h.l1_size) * 8)?;
    fixed.add("refcount table", h.refcount_table_offset, reft_bytes)?;
    fixed.check()?;
    mark_refcount_blocks(src, h, &mut ranges)?;

    let mut out = PlanBuilder::new(h.size);
    let codec = match h.compression {
        CompressionType::Deflate => Codec::Deflate,
        CompressionType::Zstd => Codec::Zstd,
    };
    let entry_size = h.l2_entry_size();
    let entries_per_l2 = cs / entry_size;
    let l2_cov = h.l2_coverage();
    let l1_used = h.size.div_ceil(l2_cov); // entries past the virtual size are ignored
    let mut l2 = vec![0u8; cs as usize];
    let mut seen_l2 = std::collections::HashSet::new();
    let mut l1_chunk = vec![0u8; 64 * 1024];
    let mut i = 0u64;
    while i < l1_used {
        let n = (l1_used - i).min(l1_chunk.len() as u64 / 8);
        let chunk = &mut l1_chunk[..(n * 8) as usize];
        src.read_exact_at(h.l1_table_offset + i * 8, chunk)?;
        for j in 0..n {
            let idx = i + j;
            let e = be64(chunk, (j * 8) as usize);
            let at = h.l1_table_offset + idx * 8;
            if e & L1_RESERVED != 0 {
                return Err(bad("L1", at, e, "reserved bits set"));
            }
            let l2_off = e & L1_OFFSET_MASK;
            if l2_off == 0 {
                continue; // unallocated: reads as zeros (no backing file)
            }
            if l2_off & (cs - 1) != 0 {
                return Err(ImageError::Misaligned {
                    what: "L2 table",
                    offset: l2_off,
                    align: cs,
                });
            }
            check_range(file_len, "qcow2 L2 table", l2_off, cs)?;
            // A table shared by several L1 entries would multiply the plan (a small file
            // claiming a huge one): refuse at once rather than at the final overlap check.
            if !seen_l2.insert(l2_off) {
                return Err(ImageError::Overlap {
                    a: "L2 table",
                    a_offset: l2_off,
                    b: "L2 table",
                    b_offset: l2_off,
                });
            }
            ranges.add("L2 table", l2_off, cs)?;
            src.read_exact_at(l2_off, &mut l2)?;
            let guest_base = idx * l2_cov;
            for k in 0..entries_per_l2 {
                let guest = guest_base + k * cs;
                if guest >= h.size {
                    break;
                }
                let len = cs.min(h.size - guest);
                let eo = (k * entry_size) as usize;
                let entry = be64(&l2, eo);
                let bitmap = if h.extended_l2() {
                    be64(&l2, eo + 8)
                } else {
                    0
                };
                let entry_at = l2_off + k * entry_size;
                cluster(
                    src,
                    h,
                    entry,
                    bitmap,
                    entry_at,
                    guest,
                    len,
                    codec,
                    &mut out,
                    &mut ranges,
                    &mut stats,
                )?;
                if out.ops_len() > super::super::overlap::MAX_RANGES {
                    return Err(ImageError::TooFragmented {
                        limit: super::super::overlap::MAX_RANGES,
                    });
                }
            }
        }
        i += n;
    }
    ranges.check()?;
    Ok((out.finish(), stats))
}

#[allow(clippy::too_many_arguments)]
fn cluster(
    src: &(impl ImageSource + ?Sized),
    h: &Header,
    entry: u64,
    bitmap: u64,
    entry_at: u64,
    guest: u64,
    len: u64,
    codec: Codec,
    out: &mut PlanBuilder,
    ranges: &mut HostRanges,
    stats: &mut WalkStats,
) -> ImageResult<()> {
    let file_len = src.len();
    let cs = h.cluster_size();
    if entry & L2_COMPRESSED != 0 {
        if bitmap != 0 {
            return Err(bad(
                "extended L2 bitmap",
                entry_at + 8,
                bitmap,
                "must be 0 for a compressed cluster",
            ));
        }
        let x = 62 - (h.cluster_bits - 8);
        let off = entry & ((1u64 << x) - 1);
        if off >> 56 != 0 {
            return Err(bad("L2", entry_at, entry, "compressed offset above bit 55"));
        }
        let sectors = (entry & !L2_COMPRESSED & !(1u64 << 63)) >> x;
        let max_len = (sectors + 1) * 512 - (off & 511);
        if off == 0 || off >= file_len {
            return Err(ImageError::PastEof {
                what: "qcow2 compressed cluster",
                offset: off,
                len: max_len,
                file_len,
            });
        }
        // The sector count rounds up; the last sectors may be past a file not padded to 512.
        let src_len = max_len.min(file_len - off);
        ranges.add_shared("compressed cluster", off, src_len)?;
        out.decode(off, src_len, guest, len, codec);
        stats.data_bytes += len;
        stats.compressed_clusters += 1;
        return Ok(());
    }
    if entry & L2_STD_RESERVED != 0 {
        return Err(bad("L2", entry_at, entry, "reserved bits set"));
    }
    let host = entry & L2_OFFSET_MASK;
    let zero_flag = entry & L2_ZERO != 0;
    if h.version == 2 && zero_flag {
        return Err(bad("L2", entry_at, entry, "zero flag in a version 2 image"));
    }
    if host != 0 && host & (cs - 1) != 0 {
        return Err(ImageError::Misaligned {
            what: "data cluster",
            offset: host,
            align: cs,
        });
    }
    if !h.extended_l2() {
        if zero_flag {
            out.zero(guest, len);
            stats.zero_bytes += len;
        } else if host != 0 {
            // The last cluster may be cut by the virtual size, and the file by the data end.
            check_range(file_len, "qcow2 data cluster", host, len)?;
            ranges.add("data cluster", host, cs.min(file_len - host))?;
            out.copy(host, guest, len);
            stats.data_bytes += len;
        }
        return Ok(());
    }
    // Extended L2: bit 0 of the standard entry is reserved.
    if zero_flag {
        return Err(bad(
            "L2",
            entry_at,
            entry,
            "bit 0 is reserved with extended L2",
        ));
    }
    let alloc = bitmap & 0xffff_ffff;
    let zeros = bitmap >> 32;
    if alloc & zeros != 0 {
        return Err(bad(
            "extended L2 bitmap",
            entry_at + 8,
            bitmap,
            "subcluster both allocated and zero",
        ));
    }
    if host == 0 && alloc != 0 {
        return Err(bad(
            "extended L2 bitmap",
            entry_at + 8,
            bitmap,
            "allocated subclusters in an unallocated cluster",
        ));
    }
    let sc = cs / 32;
    if host != 0 {
        // Only allocated subclusters need to exist in the file.
        let top = 64 - u64::from(alloc.leading_zeros() as u8);
        let need = (top * sc).min(len);
        check_range(file_len, "qcow2 data cluster", host, need)?;
        ranges.add("data cluster", host, cs.min(file_len.saturating_sub(host)))?;
    }
    for s in 0..32u64 {
        let g = guest + s * sc;
        if g >= guest + len {
            break;
        }
        let l = sc.min(guest + len - g);
        if alloc >> s & 1 == 1 {
            out.copy(host + s * sc, g, l);
            stats.data_bytes += l;
        } else if zeros >> s & 1 == 1 {
            out.zero(g, l);
            stats.zero_bytes += l;
        }
    }
    Ok(())
}

fn bad(what: &'static str, offset: u64, entry: u64, reason: &'static str) -> ImageError {
    ImageError::BadEntry {
        what,
        offset,
        entry,
        reason,
    }
}

/// Records every refcount block as metadata (read from the table in 64 KiB chunks).
fn mark_refcount_blocks(
    src: &(impl ImageSource + ?Sized),
    h: &Header,
    ranges: &mut HostRanges,
) -> ImageResult<()> {
    let cs = h.cluster_size();
    let total = u64::from(h.refcount_table_clusters) * cs / 8;
    let mut buf = vec![0u8; 64 * 1024];
    let mut i = 0u64;
    while i < total {
        let n = (total - i).min(buf.len() as u64 / 8);
        let chunk = &mut buf[..(n * 8) as usize];
        src.read_exact_at(h.refcount_table_offset + i * 8, chunk)?;
        for j in 0..n {
            let e = be64(chunk, (j * 8) as usize);
            let at = h.refcount_table_offset + (i + j) * 8;
            if e & 0x1ff != 0 {
                return Err(bad("refcount table", at, e, "reserved bits set"));
            }
            if e == 0 {
                continue;
            }
            if e & (cs - 1) != 0 {
                return Err(ImageError::Misaligned {
                    what: "refcount block",
                    offset: e,
                    align: cs,
                });
            }
            check_range(src.len(), "qcow2 refcount block", e, cs)?;
            ranges.add("refcount block", e, cs)?;
        }
        i += n;
    }
    Ok(())
}
