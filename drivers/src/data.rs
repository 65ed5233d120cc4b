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
use std::time::Duration;

use serde::{Deserialize, Serialize};

use ember_engine::copy::{Destination, Job, Source};
use ember_engine::endpoint::Window;
use ember_engine::options::{Checkpoint, CopyOptions};
use ember_engine::wipe::{wipe, WipeMethod, WipeOptions};

use crate::error::{DriverError, Result};
use crate::fsutil::{sync_dir, write_json_atomic};

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

/// Where a volume's bytes live on its backend, as [`VolumeDriver::data_layout`](crate::VolumeDriver::data_layout)
/// reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLayout {
    /// The volume's bytes in order: one span for a file volume, one per PV segment for an LV.
    pub spans: Layout,
    /// A volume just created on this backend reads as zeros (a sparse file, a thin LV); false
    /// where it may hold a previous tenant's bytes (a thick LV): copies there write zeros
    /// wherever the source has holes.
    pub fresh_reads_zeros: bool,
}

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
    copy_layout_resumable(src, dst, len, mode, None)
}

/// Interval between a resumable copy's checkpoints.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Which pieces of a resumable layout copy are finished (`<folder>/progress.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    /// Number of pieces of the copy (a progress file for another split is refused).
    pieces: usize,
    /// Indexes of the finished pieces.
    done: Vec<usize>,
}

/// [`copy_layout`], resumable when `resume` names a per-operation state folder: piece `i` keeps
/// the engine's checkpoint `<folder>/piece-<i>.ckp` (rewritten every [`CHECKPOINT_INTERVAL`]),
/// finished pieces are listed in `<folder>/progress.json` (written atomically). Called again
/// with the same folder after a crash or `kill -9`, it skips the finished pieces and the
/// engine continues the current one from its checkpoint; the result is byte-identical to an
/// uninterrupted copy. The folder is removed when the copy succeeds.
pub fn copy_layout_resumable(
    src: &[Span],
    dst: &[Span],
    len: u64,
    mode: CopyMode,
    resume: Option<&Path>,
) -> Result<()> {
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
    let pieces = pieces(src, dst, len);
    let Some(folder) = resume else {
        for (s, d) in pieces {
            Job::new(Source::Path(s), Destination::Path(d), &opts).run()?;
        }
        return Ok(());
    };
    std::fs::create_dir_all(folder).map_err(|e| DriverError::io("create folder", folder, e))?;
    let progress_path = folder.join(PROGRESS);
    let resuming = progress_path.exists();
    let mut progress = if resuming {
        let b = std::fs::read(&progress_path)
            .map_err(|e| DriverError::io("read", &progress_path, e))?;
        let p: Progress = serde_json::from_slice(&b).map_err(|e| DriverError::Metadata {
            path: progress_path.clone(),
            source: e,
        })?;
        if p.pieces != pieces.len() || p.done.iter().any(|&i| i >= pieces.len()) {
            return Err(DriverError::invalid(format!(
                "{} was written for another copy ({} pieces, this copy has {})",
                progress_path.display(),
                p.pieces,
                pieces.len()
            )));
        }
        p
    } else {
        let p = Progress {
            pieces: pieces.len(),
            done: Vec::new(),
        };
        write_json_atomic(folder, PROGRESS, &p)?;
        p
    };
    // Pieces run in order, so only the first unfinished one can have been completed (its
    // checkpoint removed) without being recorded: its destination may hold data, not zeros.
    let mut first_unfinished = true;
    for (i, (s, d)) in pieces.into_iter().enumerate() {
        if progress.done.contains(&i) {
            continue;
        }
        let ckp = folder.join(format!("piece-{i}.ckp"));
        let mut o = opts.clone();
        if resuming && first_unfinished && !ckp.exists() {
            o.dest_zeroed = false;
        }
        first_unfinished = false;
        o.checkpoint = Some(Checkpoint {
            path: ckp,
            interval: CHECKPOINT_INTERVAL,
        });
        Job::new(Source::Path(s), Destination::Path(d), &o).run()?;
        progress.done.push(i);
        write_json_atomic(folder, PROGRESS, &progress)?;
    }
    std::fs::remove_dir_all(folder).map_err(|e| DriverError::io("remove", folder, e))?;
    if let Some(parent) = folder.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

const PROGRESS: &str = "progress.json";

/// The layout past its first `skip` bytes.
fn skip_layout(l: &[Span], mut skip: u64) -> Layout {
    let mut out = Vec::new();
    for s in l {
        if skip >= s.len {
            skip -= s.len;
            continue;
        }
        out.push(Span {
            path: s.path.clone(),
            offset: s.offset + skip,
            len: s.len - skip,
        });
        skip = 0;
    }
    out
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

/// Zeroes a layout past its first `from` bytes with [`wipe_layout`]: the tail that a shorter
/// copy or image left unwritten then reads as zeros, never as what its blocks held before.
pub fn wipe_tail(dst: &[Span], from: u64, bps_limit: u64) -> Result<()> {
    let len = layout_len(dst);
    if from >= len {
        return Ok(());
    }
    wipe_layout(&skip_layout(dst, from), len - from, bps_limit)
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

    fn file_with(path: &Path, bytes: &[u8], len: u64) {
        use std::os::unix::fs::FileExt;
        let f = File::create(path).unwrap();
        f.set_len(len).unwrap();
        f.write_all_at(bytes, 0).unwrap();
    }

    fn two_piece_copy(dir: &Path) -> (Vec<Span>, Vec<Span>, PathBuf) {
        let (a, b, d) = (dir.join("a"), dir.join("b"), dir.join("d"));
        file_with(&a, &[0xAA; 100_000], 1 << 20);
        file_with(&b, &[0xBB; 70_000], 1 << 20);
        file_with(&d, &[], 2 << 20);
        let sp = |p: &Path, offset, len| Span {
            path: p.to_path_buf(),
            offset,
            len,
        };
        (
            vec![sp(&a, 0, 1 << 20), sp(&b, 0, 1 << 20)],
            vec![sp(&d, 0, 2 << 20)],
            d,
        )
    }

    #[test]
    fn resumable_copy_skips_recorded_pieces_and_removes_its_folder() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst, d) = two_piece_copy(t.path());
        let folder = t.path().join("resume").join("vol");
        std::fs::create_dir_all(&folder).unwrap();
        // As left by a run killed after piece 0 was recorded finished.
        let p = Progress {
            pieces: 2,
            done: vec![0],
        };
        write_json_atomic(&folder, PROGRESS, &p).unwrap();
        copy_layout_resumable(&src, &dst, 2 << 20, CopyMode::default(), Some(&folder)).unwrap();
        let got = std::fs::read(&d).unwrap();
        assert!(
            got[..1 << 20].iter().all(|&x| x == 0),
            "piece 0 copied again"
        );
        assert!(got[1 << 20..(1 << 20) + 70_000].iter().all(|&x| x == 0xBB));
        assert!(got[(1 << 20) + 70_000..].iter().all(|&x| x == 0));
        assert!(!folder.exists());
        // A fresh resumable run copies everything, like the plain copy.
        copy_layout_resumable(&src, &dst, 2 << 20, CopyMode::default(), Some(&folder)).unwrap();
        let got = std::fs::read(&d).unwrap();
        assert!(got[..100_000].iter().all(|&x| x == 0xAA));
        assert!(got[100_000..1 << 20].iter().all(|&x| x == 0));
        assert!(!folder.exists());
    }

    #[test]
    fn progress_of_another_split_is_refused_before_any_write() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst, d) = two_piece_copy(t.path());
        let folder = t.path().join("r");
        std::fs::create_dir_all(&folder).unwrap();
        let p = Progress {
            pieces: 3,
            done: vec![],
        };
        write_json_atomic(&folder, PROGRESS, &p).unwrap();
        let e = copy_layout_resumable(&src, &dst, 2 << 20, CopyMode::default(), Some(&folder))
            .unwrap_err();
        assert!(e.to_string().contains("another copy"), "{e}");
        assert!(std::fs::read(&d).unwrap().iter().all(|&x| x == 0));
        assert!(folder.join(PROGRESS).exists(), "state kept for inspection");
    }
}
