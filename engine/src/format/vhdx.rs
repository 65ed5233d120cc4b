//! VHDX: file identifier "vhdxfile", region tables at 192 KiB and 256 KiB, metadata region with
//! the virtual disk size. Differencing disks (parent locator / has-parent flag) are refused.

use super::error::{ImageError, ImageResult};
use super::source::{check_range, le16, le32, le64, ImageSource};
use super::{Format, FormatInfo};

const REGION_TABLE: u64 = 192 * 1024;
const MAX_ENTRIES: u64 = 2047;

/// GUIDs in on-disk (mixed-endian) byte order.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}
const METADATA_REGION: [u8; 16] = guid(
    0x8B7CA206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2FA54224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const FILE_PARAMETERS: [u8; 16] = guid(
    0xCAA16737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
const PARENT_LOCATOR: [u8; 16] = guid(
    0xA8D35F2D,
    0xB30B,
    0x454D,
    [0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C],
);

pub fn probe(head: &[u8]) -> bool {
    head.starts_with(b"vhdxfile")
}

fn not(reason: &str) -> ImageError {
    ImageError::NotFormat {
        format: Format::Vhdx,
        reason: reason.into(),
    }
}

fn field(field: &'static str, value: u64, limit: &'static str) -> ImageError {
    ImageError::Field {
        format: Format::Vhdx,
        field,
        value,
        limit,
    }
}

pub fn info(src: &(impl ImageSource + ?Sized), max_virtual_size: u64) -> ImageResult<FormatInfo> {
    let rt = src
        .read_struct("vhdx region table", REGION_TABLE, 64 * 1024)
        .map_err(|_| not("region table truncated"))?;
    if &rt[..4] != b"regi" {
        return Err(not("bad region table signature"));
    }
    let count = u64::from(le32(&rt, 8));
    if count > MAX_ENTRIES {
        return Err(field("region entry count", count, "<= 2047"));
    }
    let mut meta: Option<(u64, u64)> = None;
    for i in 0..count as usize {
        let e = &rt[16 + i * 32..16 + (i + 1) * 32];
        let off = le64(e, 16);
        let len = u64::from(le32(e, 24));
        check_range(src.len(), "vhdx region", off, len)?;
        if e[..16] == METADATA_REGION {
            if meta.is_some() {
                return Err(not("duplicate metadata region"));
            }
            meta = Some((off, len));
        }
    }
    let (moff, mlen) = meta.ok_or_else(|| not("no metadata region"))?;
    if mlen < 64 * 1024 {
        return Err(field("metadata region length", mlen, ">= 64 KiB"));
    }
    let mt = src.read_struct("vhdx metadata table", moff, 64 * 1024)?;
    if &mt[..8] != b"metadata" {
        return Err(not("bad metadata table signature"));
    }
    let entries = u64::from(le16(&mt, 10));
    if entries > MAX_ENTRIES {
        return Err(field("metadata entry count", entries, "<= 2047"));
    }
    let mut size = None;
    let mut block = None;
    for i in 0..entries as usize {
        let e = &mt[32 + i * 32..32 + (i + 1) * 32];
        let item_off = u64::from(le32(e, 16));
        let item_len = u64::from(le32(e, 20));
        if item_off.saturating_add(item_len) > mlen {
            return Err(field(
                "metadata item offset",
                item_off,
                "inside the metadata region",
            ));
        }
        let id: [u8; 16] = e[..16].try_into().unwrap_or_default();
        if id == PARENT_LOCATOR {
            return Err(ImageError::Unsupported {
                format: Format::Vhdx,
                what: "a differencing disk (parent locator)".into(),
            });
        }
        if id == VIRTUAL_DISK_SIZE && item_len >= 8 {
            let b = src.read_struct("vhdx virtual disk size", moff + item_off, 8)?;
            size = Some(le64(&b, 0));
        }
        if id == FILE_PARAMETERS && item_len >= 8 {
            let b = src.read_struct("vhdx file parameters", moff + item_off, 8)?;
            if le32(&b, 4) & 2 != 0 {
                return Err(ImageError::Unsupported {
                    format: Format::Vhdx,
                    what: "a differencing disk (has parent)".into(),
                });
            }
            block = Some(u64::from(le32(&b, 0)));
        }
    }
    let size = size.ok_or_else(|| not("no virtual disk size metadata item"))?;
    if size > max_virtual_size {
        return Err(ImageError::VirtualSizeTooLarge {
            format: Format::Vhdx,
            size,
            limit: max_virtual_size,
        });
    }
    Ok(FormatInfo::new(size, block, "dynamic"))
}
