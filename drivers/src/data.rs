//! Every byte the drivers move goes through the engine here: copies and wipes over *layouts*,
//! a volume's bytes as an ordered list of spans of files or devices (one span for a file volume,
//! one per segment for an LV mapped onto its PVs when device-mapper is absent).
//!
//! Sparseness is decided by the destination only: a destination known to read as zeros (a fresh
//! sparse file, a thin LV) keeps holes; any other (a thick LV, a PV range that held another LV)
//! gets holes written as zeros, whatever the source backend is.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use ember_engine::copy::{copy_window, CopyOptions, Window};
use ember_engine::wipe::{wipe, WipeMethod, WipeOptions};

use crate::error::{DriverError, Result};

/// `len` bytes of `path` starting at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The file or device.
    pub path: PathBuf,
    /// Byte offset in it.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// A volume's bytes, in order.
pub type Layout = Vec<Span>;

/// Total bytes of a layout.
pub fn layout_len(l: &[Span]) -> u64 {
    l.iter().map(|s| s.len).sum()
}

/// How a copy treats its destination.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyMode {
    /// The destination already reads as zeros (fresh sparse file, thin LV): holes stay holes.
    pub dest_zeroed: bool,
    /// Bytes per second, 0 = unlimited.
    pub bps_limit: u64,
}

/// Copies the first `len` bytes of `src` onto the first `len` bytes of `dst`, piece by piece
/// where their span boundaries differ.
pub fn copy_layout(src: &[Span], dst: &[Span], len: u64, mode: CopyMode) -> Result<()> {
    if len > layout_len(src) || len > layout_len(dst) {
        return Err(DriverError::invalid(format!(
            "copy of {len} bytes does not fit (source {} bytes, destination {} bytes)",
            layout_len(src),
            layout_len(dst)
        )));
    }
    let opts = CopyOptions {
        dest_zeroed: mode.dest_zeroed,
        force: true,
        bps_limit: (mode.bps_limit > 0).then_some(mode.bps_limit),
        ..CopyOptions::default()
    };
    for (s, d) in pieces(src, dst, len) {
        copy_window(&s, &d, &opts)?;
    }
    Ok(())
}

/// Splits `[0, len)` at every span boundary of both layouts into matching windows.
fn pieces(src: &[Span], dst: &[Span], len: u64) -> Vec<(Window, Window)> {
    let mut out = Vec::new();
    let (mut si, mut di) = (0usize, 0usize);
    let (mut so, mut dof) = (0u64, 0u64); // offsets inside the current spans
    let mut done = 0u64;
    while done < len {
        let (s, d) = (&src[si], &dst[di]);
        let n = (s.len - so).min(d.len - dof).min(len - done);
        out.push((
            Window {
                path: s.path.clone(),
                offset: s.offset + so,
                len: Some(n),
            },
            Window {
                path: d.path.clone(),
                offset: d.offset + dof,
                len: Some(n),
            },
        ));
        done += n;
        so += n;
        dof += n;
        if so == s.len {
            si += 1;
            so = 0;
        }
        if dof == d.len {
            di += 1;
            dof = 0;
        }
    }
    out
}

/// Zeroes the first `len` bytes of a layout through the engine's wipe (`ember wipe`): never
/// sparse-skipped on devices, so the bytes read back as zeros whoever owns these blocks next
/// (BLKZEROOUT with fallbacks on devices, hole punching on files).
pub fn wipe_layout(dst: &[Span], len: u64, bps_limit: u64) -> Result<()> {
    let mut left = len.min(layout_len(dst));
    for s in dst {
        if left == 0 {
            break;
        }
        let n = s.len.min(left);
        let opts = WipeOptions {
            offset: s.offset,
            length: Some(n),
            method: WipeMethod::Auto,
            bps_limit: (bps_limit > 0).then_some(bps_limit),
            ..WipeOptions::default()
        };
        wipe(&s.path, &opts)?;
        left -= n;
    }
    Ok(())
}

/// Makes `dst` (which must not exist) a reflink copy of `src` (FICLONE). `Ok(false)` when the
/// filesystem cannot share blocks (the caller then copies); `dst` is then removed again.
pub fn reflink(src: &Path, dst: &Path) -> Result<bool> {
    let s = File::open(src).map_err(|e| DriverError::io("open for reflink", src, e))?;
    let d = File::options()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| DriverError::io("create for reflink", dst, e))?;
    match ember_engine::sys::ficlone(d.as_fd(), s.as_fd()) {
        Ok(()) => {
            d.sync_all()
                .map_err(|e| DriverError::io("fsync reflink", dst, e))?;
            Ok(true)
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP)
                    | Some(libc::EXDEV)
                    | Some(libc::EINVAL)
                    | Some(libc::ENOTTY)
            ) =>
        {
            drop(d);
            std::fs::remove_file(dst).map_err(|e| DriverError::io("remove", dst, e))?;
            Ok(false)
        }
        Err(e) => {
            drop(d);
            let _ = std::fs::remove_file(dst);
            Err(DriverError::io("reflink (FICLONE)", dst, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(p: &str, offset: u64, len: u64) -> Span {
        Span {
            path: p.into(),
            offset,
            len,
        }
    }

    #[test]
    fn pieces_split_at_both_layouts_boundaries() {
        let src = vec![span("a", 0, 10), span("b", 100, 10)];
        let dst = vec![span("c", 50, 4), span("d", 0, 16)];
        let p = pieces(&src, &dst, 18);
        let got: Vec<_> = p
            .iter()
            .map(|(s, d)| {
                (
                    s.path.to_str().unwrap().to_owned(),
                    s.offset,
                    d.path.to_str().unwrap().to_owned(),
                    d.offset,
                    s.len.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), 0, "c".into(), 50, 4),
                ("a".into(), 4, "d".into(), 0, 6),
                ("b".into(), 100, "d".into(), 6, 8),
            ]
        );
    }
}
