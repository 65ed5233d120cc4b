//! Crash-safe, resumable copies.
//!
//! A checkpoint file records which block-sized chunks of the destination are complete. It is
//! written before the first byte of the copy (so the destination is marked incomplete from
//! the start), rewritten periodically — always after flushing the destination, so every chunk
//! it claims is durable — and atomically (temp file, fsync, rename, fsync of the folder). It is
//! removed only after the final flush: a destination whose checkpoint still exists is
//! incomplete. After a crash, `kill -9`, an error or Ctrl-C, the same copy with the same
//! checkpoint continues where it stopped and produces a byte-identical result.
//!
//! File format: `EMBERCKP`, a u32 LE header length, a JSON header (source, destination, source
//! size and mtime, block size, how holes are zeroed), then the chunk bitmap's own validated
//! serialization.

use crate::alloc;
use crate::bitmap::ChunkBitmap;
use crate::dest::Opened;
use crate::endpoint::{Endpoint, Kind, OpenMode, Window};
use crate::error::{Error, Result};
use crate::extent::ExtentMap;
use crate::options::{Checkpoint, CopyOptions, Summary};
use crate::plan::Plan;
use crate::run::{run_plan_on, Target};
use crate::zeroing::ZeroMode;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

const MAGIC: &[u8; 8] = b"EMBERCKP";
const MAX_HEADER: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Header {
    version: u32,
    src: PathBuf,
    src_offset: u64,
    dst: PathBuf,
    dst_offset: u64,
    /// Bytes copied (the window's length).
    src_size: u64,
    src_mtime: (i64, i64),
    block_size: u64,
    mode: ZeroMode,
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!("checkpoint {} is unusable: {why}", path.display()))
}

fn load(path: &Path) -> Result<(Header, ChunkBitmap)> {
    let data = std::fs::read(path).map_err(|e| Error::open("read checkpoint", path, e))?;
    if data.len() < 12 || &data[..8] != MAGIC {
        return Err(corrupt(path, "not an Ember checkpoint"));
    }
    let hlen = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes")) as usize;
    if hlen > MAX_HEADER || 12 + hlen > data.len() {
        return Err(corrupt(path, "truncated header"));
    }
    let header: Header =
        serde_json::from_slice(&data[12..12 + hlen]).map_err(|e| corrupt(path, e))?;
    let bitmap = ChunkBitmap::from_bytes(&data[12 + hlen..]).map_err(|e| corrupt(path, e))?;
    if bitmap.len_bytes() != header.src_size || bitmap.chunk_size() != header.block_size {
        return Err(corrupt(path, "bitmap does not match its header"));
    }
    Ok((header, bitmap))
}

fn save(path: &Path, header: &Header, bitmap: &ChunkBitmap) -> Result<()> {
    let json = serde_json::to_vec(header).expect("serialisable header");
    let mut buf = Vec::with_capacity(12 + json.len() + bitmap.chunks() as usize / 8 + 64);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
    buf.extend_from_slice(&json);
    buf.extend_from_slice(&bitmap.to_bytes());
    let tmp = path.with_extension("ckp-tmp");
    let io = |e| Error::open("write checkpoint", path, e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(&buf).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path);
    Ok(())
}

fn sync_dir(path: &Path) {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = crate::sys::fdatasync(d.as_fd());
    }
}

/// Chunks entirely inside `done` (the last chunk may be short).
fn done_chunks(done: &ExtentMap, len: u64, bs: u64) -> ChunkBitmap {
    let mut bm = ChunkBitmap::new(len, bs).expect("validated block size");
    for r in done.iter() {
        let first = r.start.div_ceil(bs);
        let last = if r.end >= len {
            len.div_ceil(bs)
        } else {
            r.end / bs
        };
        for c in first..last {
            bm.set(c);
        }
    }
    bm
}

/// Shifts every range of `m` by `delta` (absolute <-> window-relative offsets).
fn shifted(m: &ExtentMap, delta: i128) -> ExtentMap {
    let at = |x: u64| (x as i128 + delta) as u64;
    ExtentMap::from_ranges(m.iter().map(|r| at(r.start)..at(r.end)))
}

/// A copy of a window with a checkpoint: starts a new resumable copy, or continues the one the
/// checkpoint file describes (a [`crate::copy::Job`] from a path to a path runs this when
/// [`CopyOptions::checkpoint`] is set). `opts` are validated by the caller.
pub(crate) fn copy_resumable(
    src_w: &Window,
    dst_w: &Window,
    opts: &CopyOptions,
    cp: &Checkpoint,
    started: Instant,
) -> Result<Summary> {
    let (src, dst) = (src_w.path.as_path(), dst_w.path.as_path());
    let s = Endpoint::open_source(src, opts.direct)?;
    let len = src_w.len_on(&s)?;
    let bs = opts.block_size as u64;
    let meta = s.file.metadata().map_err(|e| Error::open("stat", src, e))?;
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut header = Header {
        version: 2,
        src: abs(src),
        src_offset: src_w.offset,
        dst: abs(dst),
        dst_offset: dst_w.offset,
        src_size: len,
        // A file's mtime tells whether it changed since the checkpoint. A block device's does
        // not: writing any window of it (another LV on the same PV) updates it, so devices are
        // identified by path, window and size alone.
        src_mtime: if s.kind == Kind::Block {
            (0, 0)
        } else {
            (meta.mtime(), meta.mtime_nsec())
        },
        block_size: bs,
        mode: ZeroMode::Leave,
    };
    let resuming = cp.path.exists();
    let (ep, done, mode, created) = if resuming {
        let (h, bitmap) = load(&cp.path)?;
        let mut expect = header.clone();
        expect.mode = h.mode;
        if h != expect {
            return Err(Error::invalid(format!(
                "checkpoint {} was written for another copy (source, destination, source size or mtime, or block size differ)",
                cp.path.display()
            )));
        }
        header.mode = h.mode;
        let ep = Endpoint::open(
            dst,
            OpenMode {
                write: true,
                create: false,
                direct: opts.direct,
                exclusive: dst_w.offset == 0 && dst_w.len.is_none(),
            },
        )?;
        let whole_file = ep.kind == Kind::File && dst_w.offset == 0 && dst_w.len.is_none();
        let size_ok = if whole_file {
            ep.size == len
        } else {
            ep.size >= dst_w.offset.saturating_add(len)
        };
        if !size_ok || ep.identity == s.identity {
            return Err(Error::invalid(format!(
                "destination {} does not match checkpoint {}",
                dst.display(),
                cp.path.display()
            )));
        }
        (ep, bitmap.to_extents(), h.mode, false)
    } else {
        let mut dest = Opened::open_window(dst_w, len, opts)?;
        let overlap = src_w.offset < dst_w.offset + len && dst_w.offset < src_w.offset + len;
        if dest.ep.identity == s.identity && overlap {
            return Err(Error::invalid(format!(
                "source {} and destination {} are the same file",
                src.display(),
                dst.display()
            )));
        }
        dest.prepare(len)?;
        header.mode = dest.mode;
        // Marked incomplete before the first write.
        save(
            &cp.path,
            &header,
            &ChunkBitmap::new(len, bs).expect("validated block size"),
        )?;
        (dest.ep, ExtentMap::new(), dest.mode, dest.created)
    };
    let data = alloc::data_ranges(&s, src_w.offset..src_w.offset + len)?;
    let done_abs = shifted(&done, dst_w.offset as i128);
    let extents = data.extent_count() as u64;
    let plan = Plan::from_data(data, src_w.offset, dst_w.offset, len).skip_done(&done_abs);
    let target = Target {
        ep: &ep,
        mode,
        created,
        all_holes: false,
        zero_fallback: true,
    };
    let persist = |completed: &ExtentMap| -> Result<()> {
        // Durable first, then claimed.
        ep.sync()?;
        let rel = shifted(completed, -(dst_w.offset as i128));
        save(&cp.path, &header, &done_chunks(&rel.union(&done), len, bs))
    };
    let (res, completed) = run_plan_on(
        Some(&s),
        &target,
        &plan,
        opts,
        opts.zero_detection(),
        started,
        Some((&persist, cp.interval)),
    );
    match res {
        Ok((mut summary, _)) => {
            // The final flush succeeded inside the run: now, and only now, complete.
            std::fs::remove_file(&cp.path)
                .map_err(|e| Error::open("remove finished checkpoint", &cp.path, e))?;
            sync_dir(&cp.path);
            summary.extents = extents;
            Ok(summary)
        }
        Err(e) => {
            if let Some(c) = completed {
                if let Err(e2) = persist(&c) {
                    tracing::error!(error = %e2, "final checkpoint failed; resuming redoes more work");
                }
            }
            Err(e)
        }
    }
}
