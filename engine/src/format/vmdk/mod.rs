//! VMDK sparse extents (monolithicSparse, streamOptimized): header, embedded descriptor,
//! optional footer, and the grain directory walk that yields a [`Plan`].
//!
//! Sparse extent header (little-endian, VMware "Virtual Disk Format 5.0"): magic "KDMV",
//! version, flags, capacity (sectors), grainSize (sectors), descriptorOffset/Size (sectors),
//! numGTEsPerGT, rgdOffset, gdOffset (sectors; all-ones = in the footer), overHead, ...,
//! compressAlgorithm at byte 77.

pub mod descriptor;

use super::error::{ImageError, ImageResult};
use super::overlap::HostRanges;
use super::qcow2::reader::PlanBuilder;
use super::source::{check_range, le16, le32, le64, ImageSource};
use super::Format;
use crate::plan::{Codec, Plan};

pub use descriptor::Descriptor;

pub const MAGIC: [u8; 4] = *b"KDMV";
pub const GD_AT_END: u64 = u64::MAX;
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const GTES_PER_GT: u64 = 512;
/// Largest grain accepted (128 sectors is the norm; qcow2's largest cluster is the cap).
pub const MAX_GRAIN_BYTES: u64 = 2 << 20;

/// A validated sparse extent header plus its descriptor.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub flags: u32,
    pub capacity_sectors: u64,
    pub grain_sectors: u64,
    pub descriptor_offset: u64,
    pub descriptor_size: u64,
    pub gd_offset: u64,
    pub compressed: bool,
    pub create_type: String,
    /// The header came from a streamOptimized footer.
    pub footer: bool,
}

impl Header {
    pub fn virtual_size(&self) -> u64 {
        self.capacity_sectors * 512
    }
    pub fn grain_bytes(&self) -> u64 {
        self.grain_sectors * 512
    }
}

fn field(field: &'static str, value: u64, limit: &'static str) -> ImageError {
    ImageError::Field {
        format: Format::Vmdk,
        field,
        value,
        limit,
    }
}

/// True for a sparse extent (binary header).
pub fn probe(head: &[u8]) -> bool {
    head.len() >= 4 && head[..4] == MAGIC
}

/// True for a VMDK3 ("COWD") sparse extent, which qemu reads and Ember does not.
pub fn probe_cowd(head: &[u8]) -> bool {
    head.starts_with(b"COWD")
}

/// True for a text descriptor file (monolithicFlat, twoGbMaxExtent*, vmfs, ...) as any reader
/// that might open it sees one: the `# Disk DescriptorFile` banner, qemu's probe or oslo's.
pub fn probe_text(head: &[u8]) -> bool {
    head.starts_with(b"# Disk DescriptorFile") || qemu_sees_text(head) || oslo_sees_text(head)
}

/// qemu's probe of its first 2 KiB: comment lines and lines of spaces, then `version=1|2|3`
/// ending the line.
fn qemu_sees_text(head: &[u8]) -> bool {
    let buf = &head[..head.len().min(2048)];
    let mut p = 0;
    while p < buf.len() {
        match buf[p] {
            b'#' => {
                p += buf[p..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(buf.len() - p, |n| n + 1);
            }
            b' ' => {
                while buf.get(p) == Some(&b' ') {
                    p += 1;
                }
                if buf.get(p) == Some(&b'\r') {
                    p += 1;
                }
                if buf.get(p) != Some(&b'\n') {
                    return false;
                }
                p += 1;
            }
            _ => {
                let line = &buf[p..];
                return [b"1", b"2", b"3"].iter().any(|v| {
                    line.strip_prefix(b"version=")
                        .and_then(|l| l.strip_prefix(&v[..]))
                        .is_some_and(|l| l.starts_with(b"\n") || l.starts_with(b"\r\n"))
                });
            }
        }
    }
    false
}

/// oslo's rule: at least 64 bytes, the first 512 of which are printable ASCII or whitespace
/// (Python's `isprintable`/`isspace`), and `createType="` (any case) in the first 4 KiB before
/// a NUL, its value shorter than 64 bytes or unterminated.
fn oslo_sees_text(head: &[u8]) -> bool {
    let text = |b: &u8| matches!(b, 0x20..=0x7e | 0x09..=0x0d | 0x1c..=0x1f);
    if head.len() < 64 || !head[..head.len().min(512)].iter().all(text) {
        return false;
    }
    let chunk = &head[..head.len().min(4096)];
    let chunk = &chunk[..chunk.iter().position(|&b| b == 0).unwrap_or(chunk.len())];
    let key = b"createtype=\"";
    let Some(start) = chunk
        .windows(key.len())
        .position(|w| w.eq_ignore_ascii_case(key))
    else {
        return false;
    };
    let value = &chunk[start + key.len()..];
    !matches!(value.iter().position(|&b| b == b'"'), Some(n) if n >= 64)
}

#[derive(Debug, Clone, Copy)]
struct Raw {
    version: u32,
    flags: u32,
    capacity: u64,
    grain: u64,
    desc_off: u64,
    desc_size: u64,
    gtes: u32,
    gd_offset: u64,
    compress: u16,
}

fn raw(b: &[u8]) -> Raw {
    Raw {
        version: le32(b, 4),
        flags: le32(b, 8),
        capacity: le64(b, 12),
        grain: le64(b, 20),
        desc_off: le64(b, 28),
        desc_size: le64(b, 36),
        gtes: le32(b, 44),
        gd_offset: le64(b, 56),
        compress: le16(b, 77),
    }
}

/// Reads and validates the header, descriptor and (if any) footer.
pub fn parse(src: &(impl ImageSource + ?Sized), max_virtual_size: u64) -> ImageResult<Header> {
    let mut b = [0u8; 512];
    let n = src.read_up_to(0, &mut b)?;
    if n < 4 || b[..4] != MAGIC {
        return Err(ImageError::NotFormat {
            format: Format::Vmdk,
            reason: "no KDMV magic".into(),
        });
    }
    if n < 512 {
        return Err(ImageError::NotFormat {
            format: Format::Vmdk,
            reason: format!("header truncated at {n} bytes"),
        });
    }
    let mut r = raw(&b);
    if !(1..=3).contains(&r.version) {
        return Err(field("version", r.version.into(), "1..=3"));
    }
    let mut footer = false;
    if r.gd_offset == GD_AT_END {
        r = read_footer(src, &r)?;
        footer = true;
    }
    if r.grain < 8 || !r.grain.is_power_of_two() || r.grain > MAX_GRAIN_BYTES / 512 {
        return Err(field(
            "grainSize",
            r.grain,
            "power of two, 8..=4096 sectors",
        ));
    }
    if u64::from(r.gtes) != GTES_PER_GT {
        return Err(field("numGTEsPerGT", r.gtes.into(), "512"));
    }
    let size = r.capacity.saturating_mul(512);
    if size > max_virtual_size {
        return Err(ImageError::VirtualSizeTooLarge {
            format: Format::Vmdk,
            size,
            limit: max_virtual_size,
        });
    }
    let compressed = r.flags & FLAG_COMPRESSED != 0;
    if compressed && r.compress != 1 {
        return Err(field("compressAlgorithm", r.compress.into(), "1 (deflate)"));
    }
    if !compressed && r.compress != 0 {
        return Err(field(
            "compressAlgorithm",
            r.compress.into(),
            "0 without the compressed flag",
        ));
    }
    if (r.flags & FLAG_MARKERS != 0) != compressed {
        return Err(field(
            "flags",
            r.flags.into(),
            "markers iff compressed grains",
        ));
    }
    // The descriptor: embedded right after the header, bounded.
    if r.desc_size == 0 || r.desc_off == 0 {
        return Err(ImageError::Descriptor {
            reason: "no embedded descriptor".into(),
        });
    }
    if r.desc_off != 1 {
        return Err(field(
            "descriptorOffset",
            r.desc_off,
            "1 (right after the header)",
        ));
    }
    let desc_bytes = r
        .desc_size
        .checked_mul(512)
        .filter(|&s| s <= descriptor::MAX_DESCRIPTOR)
        .ok_or(ImageError::TableTooLarge {
            what: "vmdk descriptor",
            bytes: r.desc_size.saturating_mul(512),
            cap: descriptor::MAX_DESCRIPTOR,
        })?;
    let text = src.read_struct("vmdk descriptor", 512, desc_bytes as usize)?;
    let d = descriptor::parse(&text)?;
    descriptor::check(&d, r.capacity)?;
    let create_type = d.create_type.unwrap_or_default();
    if (create_type == "streamOptimized") != compressed {
        return Err(ImageError::Descriptor {
            reason: format!(
                "createType {create_type} does not match the header's compressed flag ({compressed})"
            ),
        });
    }
    if r.gd_offset == 0 {
        return Err(field("gdOffset", 0, "non-zero"));
    }
    Ok(Header {
        version: r.version,
        flags: r.flags,
        capacity_sectors: r.capacity,
        grain_sectors: r.grain,
        descriptor_offset: r.desc_off,
        descriptor_size: r.desc_size,
        gd_offset: r.gd_offset,
        compressed,
        create_type,
        footer,
    })
}

/// streamOptimized with the grain directory in the footer: footer marker, footer (a header
/// copy) and end-of-stream marker are the last three sectors. The footer must agree with the
/// header and must not itself defer to a footer.
fn read_footer(src: &(impl ImageSource + ?Sized), head: &Raw) -> ImageResult<Raw> {
    let bad = |reason: &str| ImageError::Descriptor {
        reason: format!("streamOptimized footer: {reason}"),
    };
    let len = src.len();
    if len < 512 * 4 {
        return Err(bad("file too short for a footer"));
    }
    let tail = src.read_struct("vmdk footer", len - 1536, 1536)?;
    let (marker, foot, eos) = (&tail[..512], &tail[512..1024], &tail[1024..]);
    if le32(marker, 8) != 0 || le32(marker, 12) != 3 {
        return Err(bad("no footer marker"));
    }
    if le32(eos, 8) != 0 || le32(eos, 12) != 0 || le64(eos, 0) != 0 {
        return Err(bad("no end-of-stream marker"));
    }
    if foot[..4] != MAGIC {
        return Err(bad("bad footer signature"));
    }
    let f = raw(foot);
    if f.version != head.version || f.desc_off != head.desc_off || f.desc_size != head.desc_size {
        return Err(bad("footer does not match the header"));
    }
    if f.gd_offset == GD_AT_END {
        return Err(bad("footer points to another footer"));
    }
    Ok(f)
}

/// Walks the grain directory and returns the plan. Every table and grain must lie in the
/// file, and none may overlap the header, descriptor, tables or each other.
pub fn build_plan(src: &(impl ImageSource + ?Sized), h: &Header) -> ImageResult<(Plan, u64)> {
    let file_len = src.len();
    let mut ranges = HostRanges::new();
    ranges.add("vmdk header", 0, 512)?;
    ranges.add("vmdk descriptor", 512, h.descriptor_size * 512)?;
    let grain = h.grain_bytes();
    let gt_cov = GTES_PER_GT * grain;
    let size = h.virtual_size();
    let gd_entries = size.div_ceil(gt_cov);
    let gd_off = h.gd_offset.checked_mul(512).ok_or(ImageError::Overflow {
        what: "vmdk gdOffset",
    })?;
    check_range(file_len, "vmdk grain directory", gd_off, gd_entries * 4)?;
    ranges.add("vmdk grain directory", gd_off, gd_entries * 4)?;

    let mut out = PlanBuilder::new(size);
    let mut data_bytes = 0u64;
    let mut gd_chunk = vec![0u8; 64 * 1024];
    let mut gt = vec![0u8; (GTES_PER_GT * 4) as usize];
    let mut seen_gt = std::collections::HashSet::new();
    let mut i = 0u64;
    while i < gd_entries {
        let n = (gd_entries - i).min(gd_chunk.len() as u64 / 4);
        let chunk = &mut gd_chunk[..(n * 4) as usize];
        src.read_exact_at(gd_off + i * 4, chunk)?;
        for j in 0..n {
            let gt_sector = u64::from(le32(chunk, (j * 4) as usize));
            if gt_sector == 0 {
                continue;
            }
            let gt_off = gt_sector * 512;
            check_range(file_len, "vmdk grain table", gt_off, gt.len() as u64)?;
            if !seen_gt.insert(gt_off) {
                return Err(ImageError::Overlap {
                    a: "vmdk grain table",
                    a_offset: gt_off,
                    b: "vmdk grain table",
                    b_offset: gt_off,
                });
            }
            ranges.add("vmdk grain table", gt_off, gt.len() as u64)?;
            src.read_exact_at(gt_off, &mut gt)?;
            for k in 0..GTES_PER_GT {
                let guest = (i + j) * gt_cov + k * grain;
                if guest >= size {
                    break;
                }
                let len = grain.min(size - guest);
                let gte = u64::from(le32(&gt, (k * 4) as usize));
                match gte {
                    0 => {}
                    1 if h.flags & FLAG_ZERO_GRAIN != 0 => out.zero(guest, len),
                    s => {
                        grain_op(src, h, s * 512, guest, len, &mut out, &mut ranges)?;
                        data_bytes += len;
                    }
                }
            }
            if out.ops_len() > super::overlap::MAX_RANGES {
                return Err(ImageError::TooFragmented {
                    limit: super::overlap::MAX_RANGES,
                });
            }
        }
        i += n;
    }
    ranges.check()?;
    Ok((out.finish(), data_bytes))
}

fn grain_op(
    src: &(impl ImageSource + ?Sized),
    h: &Header,
    off: u64,
    guest: u64,
    len: u64,
    out: &mut PlanBuilder,
    ranges: &mut HostRanges,
) -> ImageResult<()> {
    let file_len = src.len();
    if !h.compressed {
        check_range(file_len, "vmdk grain", off, len)?;
        ranges.add("vmdk grain", off, len)?;
        out.copy(off, guest, len);
        return Ok(());
    }
    // Grain marker: lba (u64), size (u32), then `size` bytes of zlib data.
    let m = src.read_struct("vmdk grain marker", off, 14)?;
    let lba = le64(&m, 0);
    let size = u64::from(le32(&m, 8));
    let bad = |reason| ImageError::BadEntry {
        what: "vmdk grain marker",
        offset: off,
        entry: lba,
        reason,
    };
    if lba != guest / 512 {
        return Err(bad("marker lba does not match the grain's position"));
    }
    if size < 2 || size > 2 * h.grain_bytes() {
        return Err(bad("compressed size out of range"));
    }
    check_range(file_len, "vmdk compressed grain", off, 12 + size)?;
    // zlib header: CM 8 (deflate), window <= 32 KiB, no preset dictionary, FCHECK valid.
    let (cmf, flg) = (m[12], m[13]);
    if cmf & 0x0f != 8
        || cmf >> 4 > 7
        || flg & 0x20 != 0
        || (u16::from(cmf) * 256 + u16::from(flg)) % 31 != 0
    {
        return Err(bad("grain data is not a zlib stream"));
    }
    ranges.add_shared("vmdk compressed grain", off, 12 + size)?;
    // Skip the 2-byte zlib header: the rest is raw deflate (+ adler32 trailer, ignored).
    out.decode(off + 14, size - 2, guest, len, Codec::Deflate);
    Ok(())
}
