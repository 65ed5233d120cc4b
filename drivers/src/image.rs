//! Images <-> volumes through the engine's format readers (`ember_engine::format`): every image
//! is inspected (format detection, declared format must match, qcow2/vmdk tables walked, banned
//! formats and backing/data files refused) before a byte reaches a volume.
//!
//! A volume that is one span (a file volume, an LV in one PV range) gets raw, qcow2 and vmdk
//! images written straight into it in one pass ([`image_to_window`]); vhd, vhdx and vdi
//! (converted by qemu-img), and LVs split over several PV ranges, are first converted into a
//! sparse raw file in the backend's staging folder, then copied into the volume's layout. Volumes go out as raw (a sparse copy) or qcow2 (the engine's
//! writer), from the volume's file or, for layouts of several spans, a staged raw copy.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ember_engine::endpoint::Window;
use ember_engine::format::convert::{
    image_to_volume, image_to_window, volume_to_image, FromVolumeOptions, ToVolumeOptions,
};
use ember_engine::format::{analyze, Analysis, FileSource, Format, InspectOptions, Reader};
use ember_engine::options::CopyOptions;

use crate::data::{self, CopyMode, Span};
use crate::error::{DriverError, Result};
use crate::fsutil::create_new_sparse;
use crate::names::GIB;
use crate::types::{ImageFile, Volume};

/// The engine format a Glance `disk_format` names (`container_format` must be `bare`).
pub fn declared_format(image: &ImageFile) -> Result<Format> {
    if image.meta.container_format != "bare" {
        return Err(DriverError::ImageUnacceptable {
            path: image.path.clone(),
            reason: format!(
                "container_format {:?} is not supported (only bare)",
                image.meta.container_format
            ),
        });
    }
    Format::from_str(&image.meta.disk_format).map_err(|e| DriverError::ImageUnacceptable {
        path: image.path.clone(),
        reason: e,
    })
}

/// Inspects `image` as its declared format (strict: every safety rule).
pub fn inspect(image: &ImageFile) -> Result<Analysis> {
    let declared = declared_format(image)?;
    let src = FileSource::open(&image.path).map_err(|e| DriverError::io("open", &image.path, e))?;
    analyze(
        &src,
        &InspectOptions {
            declared: Some(declared),
            ..InspectOptions::default()
        },
    )
    .map_err(|e| DriverError::Engine(e.into_engine(&image.path)))
}

/// Inspects an image for `clone_image`: `Some(virtual size)` when it is raw (as inspected) and
/// fits `vol`, `None` when it is not raw.
pub fn inspect_raw_fitting(image: &ImageFile, vol: &Volume) -> Result<Option<u64>> {
    let a = inspect(image)?;
    if !matches!(a.reader, Reader::Raw) {
        return Ok(None);
    }
    if a.virtual_size.div_ceil(GIB) > vol.size {
        return Err(too_big(image, a.virtual_size, vol));
    }
    Ok(Some(a.virtual_size))
}

/// Cinder's refusal of an image larger than the volume.
fn too_big(image: &ImageFile, virtual_size: u64, vol: &Volume) -> DriverError {
    DriverError::ImageUnacceptable {
        path: image.path.clone(),
        reason: format!(
            "Image virtual size is {}GB and doesn't fit in a volume of size {}GB.",
            virtual_size.div_ceil(GIB),
            vol.size
        ),
    }
}

/// Deletes a staged file on drop.
struct Staged(Option<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn staged_path(staging: &Path, what: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(staging)
        .map_err(|e| DriverError::io("create staging folder", staging, e))?;
    Ok(staging.join(format!(
        ".stage-{what}-{}-{:08x}.raw",
        std::process::id(),
        rand::random::<u32>()
    )))
}

/// Writes `image` into the volume whose bytes are `dst` (`vol` gives the size check). The
/// image's virtual size must fit the volume (Cinder's message). The volume then reads as the
/// image followed by zeros: holes of the image are written as zeros, and so is the volume's
/// tail past the image unless `dest_zeroed` (the volume is known to read as zeros: a fresh
/// sparse file, a thin LV), so no older bytes (a thick LV on another volume's extents) show
/// through. Nothing is written to the volume unless inspection passed.
pub fn image_into_layout(
    image: &ImageFile,
    vol: &Volume,
    dst: &[Span],
    staging: &Path,
    mode: CopyMode,
) -> Result<()> {
    let a = inspect(image)?;
    if a.virtual_size.div_ceil(GIB) > vol.size || a.virtual_size > data::layout_len(dst) {
        return Err(too_big(image, a.virtual_size, vol));
    }
    write_image(image, &a, dst, staging, mode.bps_limit)?;
    if !mode.dest_zeroed {
        data::wipe_tail(dst, a.virtual_size, mode.bps_limit)?;
    }
    Ok(())
}

/// [`image_into_layout`]'s image bytes, `[0, virtual size)` of `dst`.
fn write_image(
    image: &ImageFile,
    a: &Analysis,
    dst: &[Span],
    staging: &Path,
    bps_limit: u64,
) -> Result<()> {
    let inspect = InspectOptions {
        declared: Some(a.format),
        ..InspectOptions::default()
    };
    // A volume that is one span of a file or device (a file volume, an LV in one PV range)
    // gets the image written straight into it: one pass, no staged copy. qemu-img's formats,
    // and LVs split over several ranges, go through a staged raw file.
    if let [span] = dst {
        if !matches!(a.reader, Reader::Qemu(_)) {
            image_to_window(
                &image.path,
                &Window {
                    path: span.path.clone(),
                    offset: span.offset,
                    len: Some(a.virtual_size),
                },
                &ToVolumeOptions {
                    inspect,
                    copy: CopyOptions {
                        bps_limit: (bps_limit > 0).then_some(bps_limit),
                        ..CopyOptions::default()
                    },
                    ..ToVolumeOptions::default()
                },
            )?;
            return Ok(());
        }
    }
    let mut staged = Staged(None);
    let from = match a.reader {
        Reader::Raw => image.path.clone(),
        _ => {
            let tmp = staged_path(staging, "in")?;
            staged.0 = Some(tmp.clone());
            image_to_volume(
                &image.path,
                &tmp,
                &ToVolumeOptions {
                    inspect,
                    ..ToVolumeOptions::default()
                },
            )?;
            tmp
        }
    };
    let src = vec![Span {
        path: from,
        offset: 0,
        len: a.virtual_size,
    }];
    // The volume holds older data: holes of the image are written as zeros.
    data::copy_layout(
        &src,
        dst,
        a.virtual_size,
        CopyMode {
            dest_zeroed: false,
            bps_limit,
        },
    )
}

/// Writes the volume whose bytes are `src` as `image` (raw or qcow2; the file must not exist).
pub fn layout_into_image(
    src: &[Span],
    image: &ImageFile,
    staging: &Path,
    bps_limit: u64,
) -> Result<()> {
    let format = declared_format(image)?;
    if !matches!(format, Format::Raw | Format::Qcow2) {
        return Err(DriverError::NotSupported {
            op: "copy_volume_to_image",
            reason: format!("volumes are written as raw or qcow2, not {format}"),
        });
    }
    if image.path.exists() {
        return Err(DriverError::AlreadyExists {
            what: "image",
            name: image.path.display().to_string(),
        });
    }
    let len = data::layout_len(src);
    let whole_file = src.len() == 1
        && src[0].offset == 0
        && std::fs::metadata(&src[0].path).is_ok_and(|m| m.is_file() && m.len() == len);
    if format == Format::Raw {
        create_new_sparse(&image.path, len)?;
        let dst = vec![Span {
            path: image.path.clone(),
            offset: 0,
            len,
        }];
        let res = data::copy_layout(
            src,
            &dst,
            len,
            CopyMode {
                dest_zeroed: true,
                bps_limit,
            },
        );
        if res.is_err() {
            let _ = std::fs::remove_file(&image.path);
        }
        return res;
    }
    let mut staged = Staged(None);
    let from = if whole_file {
        src[0].path.clone()
    } else {
        let tmp = staged_path(staging, "out")?;
        staged.0 = Some(tmp.clone());
        create_new_sparse(&tmp, len)?;
        data::copy_layout(
            src,
            &[Span {
                path: tmp.clone(),
                offset: 0,
                len,
            }],
            len,
            CopyMode {
                dest_zeroed: true,
                bps_limit,
            },
        )?;
        tmp
    };
    volume_to_image(
        &from,
        &image.path,
        &FromVolumeOptions {
            format: Some(Format::Qcow2),
            ..FromVolumeOptions::default()
        },
    )?;
    Ok(())
}
