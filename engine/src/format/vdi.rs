//! VirtualBox VDI: signature 0xbeda107f at 0x40, disk size at 0x170. Differencing and undo
//! images (a parent) are refused.

use super::error::{ImageError, ImageResult};
use super::source::{le32, le64, ImageSource};
use super::{Format, FormatInfo};

const SIGNATURE: u32 = 0xbeda_107f;

pub fn probe(head: &[u8]) -> bool {
    head.len() >= 0x44 && le32(head, 0x40) == SIGNATURE
}

fn field(field: &'static str, value: u64, limit: &'static str) -> ImageError {
    ImageError::Field {
        format: Format::Vdi,
        field,
        value,
        limit,
    }
}

pub fn info(src: &(impl ImageSource + ?Sized), max_virtual_size: u64) -> ImageResult<FormatInfo> {
    let h = src
        .read_struct("vdi header", 0, 0x190)
        .map_err(|_| ImageError::NotFormat {
            format: Format::Vdi,
            reason: "header truncated".into(),
        })?;
    let image_type = le32(&h, 0x4c);
    let disk_size = le64(&h, 0x170);
    let block = u64::from(le32(&h, 0x178));
    let blocks = u64::from(le32(&h, 0x180));
    match image_type {
        1 | 2 => {}
        3 | 4 => {
            return Err(ImageError::Unsupported {
                format: Format::Vdi,
                what: "an undo/differencing image (parent image)".into(),
            })
        }
        t => return Err(field("image_type", t.into(), "1 (dynamic) or 2 (fixed)")),
    }
    if disk_size > max_virtual_size {
        return Err(ImageError::VirtualSizeTooLarge {
            format: Format::Vdi,
            size: disk_size,
            limit: max_virtual_size,
        });
    }
    if block < 512 || !block.is_power_of_two() || block > (256 << 20) {
        return Err(field("block_size", block, "power of two, 512..=256 MiB"));
    }
    if blocks.saturating_mul(block) < disk_size {
        return Err(field("blocks_in_image", blocks, "must cover the disk size"));
    }
    Ok(FormatInfo::new(
        disk_size,
        Some(block),
        if image_type == 1 { "dynamic" } else { "fixed" },
    ))
}
