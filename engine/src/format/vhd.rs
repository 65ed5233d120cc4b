//! VHD (qemu "vpc"): footer copy at offset 0 ("conectix"), dynamic header ("cxsparse").
//! Differencing disks (a parent = backing file) are refused.

use super::error::{ImageError, ImageResult};
use super::source::{be32, be64, check_range, ImageSource};
use super::{Format, FormatInfo};

pub fn probe(head: &[u8]) -> bool {
    head.starts_with(b"conectix")
}

fn field(field: &'static str, value: u64, limit: &'static str) -> ImageError {
    ImageError::Field {
        format: Format::Vhd,
        field,
        value,
        limit,
    }
}

pub fn info(src: &(impl ImageSource + ?Sized), max_virtual_size: u64) -> ImageResult<FormatInfo> {
    let f = src
        .read_struct("vhd footer", 0, 512)
        .map_err(|_| ImageError::NotFormat {
            format: Format::Vhd,
            reason: "footer truncated".into(),
        })?;
    let data_offset = be64(&f, 16);
    let current_size = be64(&f, 48);
    let disk_type = be32(&f, 60);
    if current_size > max_virtual_size {
        return Err(ImageError::VirtualSizeTooLarge {
            format: Format::Vhd,
            size: current_size,
            limit: max_virtual_size,
        });
    }
    match disk_type {
        2 => Ok(FormatInfo::new(current_size, None, "fixed")),
        3 => {
            let d = src.read_struct("vhd dynamic header", data_offset, 1024)?;
            if &d[..8] != b"cxsparse" {
                return Err(ImageError::NotFormat {
                    format: Format::Vhd,
                    reason: "no cxsparse dynamic header".into(),
                });
            }
            let table_offset = be64(&d, 16);
            let entries = u64::from(be32(&d, 28));
            let block = u64::from(be32(&d, 32));
            if block < 512 || !block.is_power_of_two() || block > (256 << 20) {
                return Err(field("block_size", block, "power of two, 512..=256 MiB"));
            }
            let covered = entries.checked_mul(block).ok_or(ImageError::Overflow {
                what: "vhd max_table_entries * block_size",
            })?;
            if covered < current_size {
                return Err(field(
                    "max_table_entries",
                    entries,
                    "must cover the disk size",
                ));
            }
            check_range(
                src.len(),
                "vhd block allocation table",
                table_offset,
                entries * 4,
            )?;
            Ok(FormatInfo::new(current_size, Some(block), "dynamic"))
        }
        4 => Err(ImageError::Unsupported {
            format: Format::Vhd,
            what: "a differencing disk (parent image)".into(),
        }),
        t => Err(field("disk_type", t.into(), "2 (fixed) or 3 (dynamic)")),
    }
}
