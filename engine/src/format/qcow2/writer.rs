//! Volume -> qcow2 v3 writer (64 KiB clusters, 16-bit refcounts).
//!
//! One pass over the source's data ranges (SEEK_DATA/SEEK_HOLE via [`crate::alloc::data_map`]):
//! all-zero clusters are skipped (they read as zeros: no backing file), the others are
//! appended after the header cluster in guest order. Uncompressed, that pass runs on the
//! engine's I/O backend with direct I/O (module `ring_body`); with `compress`, batches are
//! read by a reader thread and compressed on worker threads. The metadata (L2 tables, L1
//! table, refcount blocks and table) is laid out after the data once every allocation is
//! known, so refcounts are exact and `qemu-img check` finds no leak. The image is written as a
//! [`Staged`] file (unnamed until complete), flushed and only then put at `OUT`.
//!
//! Compressed clusters are raw deflate restricted to a 4 KiB window (qemu inflates with
//! `windowBits = -12`): each 4 KiB of a cluster is compressed after a full flush, which resets
//! the dictionary so no match reaches further back.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use flate2::{Compress, Compression, FlushCompress};
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;

use super::placement::{each_cluster, place_plain, Placed, Stored, CLUSTER, CLUSTER_BITS};
use crate::alloc::data_map;
use crate::options::{cancelled, ProgressFn};
use crate::staged::Staged;
use crate::{Error, Result};

const REFCOUNT_BITS: u64 = 16;
const HEADER_LENGTH: usize = 112;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
/// Clusters read and compressed per batch.
const BATCH: usize = 128;
/// Parallel reads of the volume (compressed output).
const READERS: usize = 8;

/// Options of [`write_qcow2`].
#[derive(Clone, Default)]
pub struct WriteOptions {
    /// Deflate-compress clusters (stored uncompressed when that does not save space).
    pub compress: bool,
    /// Compression threads (0 = available parallelism).
    pub threads: usize,
    /// Replace an existing output file.
    pub force: bool,
    pub cancel: Option<Arc<AtomicBool>>,
    pub progress: Option<ProgressFn>,
}

/// What a write did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WriteSummary {
    pub virtual_size: u64,
    pub file_size: u64,
    pub data_clusters: u64,
    pub compressed_clusters: u64,
    pub zero_clusters_skipped: u64,
    pub bytes_read: u64,
    pub seconds: f64,
}

/// Writes the volume (file or block device, always read as raw) `src` as a qcow2 image `out`.
pub fn write_qcow2(src: &Path, out: &Path, opts: &WriteOptions) -> Result<WriteSummary> {
    let started = Instant::now();
    let mut f = File::open(src).map_err(|e| Error::open("open", src, e))?;
    let size = f
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::io("seek", src, 0, e))?;
    crate::staged::check_output(out, opts.force)?;
    // Refused before anything is created: qemu reads an L1 table of at most 32 MiB.
    let l1_entries = size.div_ceil(CLUSTER * (CLUSTER / 8));
    if l1_entries > MAX_L1_ENTRIES {
        return Err(Error::invalid(format!(
            "{} is {size} bytes: a qcow2 image with {} KiB clusters holds at most {} bytes",
            src.display(),
            CLUSTER / 1024,
            MAX_L1_ENTRIES * CLUSTER * (CLUSTER / 8)
        )));
    }
    // Written unnamed (or under a hidden name) and put at `out` only when whole and flushed.
    let staged = Staged::create(out)?;
    let o = staged.file();
    let summary = write_body(&f, src, size, o, out, opts, started)?;
    staged.publish(opts.force)?;
    Ok(summary)
}

/// The image's virtual size for a volume of `size` bytes: rounded up to 512 bytes, as
/// `qemu-img convert` makes it. qemu reads a qcow2 size in whole sectors, rounding down, so an
/// exact odd size would hide the volume's last bytes from it; the padding reads as zeros.
fn virtual_size(size: u64) -> u64 {
    size.div_ceil(512) * 512
}

/// The most L1 entries qemu accepts (a 32 MiB table).
const MAX_L1_ENTRIES: u64 = 32 * 1024 * 1024 / 8;

#[allow(clippy::too_many_arguments)]
fn write_body(
    f: &File,
    src: &Path,
    size: u64,
    o: &File,
    tmp: &Path,
    opts: &WriteOptions,
    started: Instant,
) -> Result<WriteSummary> {
    let clusters = size.div_ceil(CLUSTER);
    let data = data_map(src)?;
    // Guest clusters touched by data: ascending, disjoint ranges.
    let mut wanted: Vec<Range<u64>> = Vec::new();
    for r in data.iter() {
        let (a, b) = (r.start / CLUSTER, r.end.min(size).div_ceil(CLUSTER));
        match wanted.last_mut() {
            Some(l) if l.end >= a => l.end = l.end.max(b),
            _ if a < b => wanted.push(a..b),
            _ => {}
        }
    }
    let wanted_clusters: u64 = wanted.iter().map(|r| r.end - r.start).sum();
    let mut stored: Vec<Placed> = Vec::new();
    let mut s = WriteSummary {
        virtual_size: virtual_size(size),
        file_size: 0,
        data_clusters: 0,
        compressed_clusters: 0,
        zero_clusters_skipped: 0,
        bytes_read: 0,
        seconds: 0.0,
    };
    // Byte offset after the data written (the header cluster comes first).
    let cursor = if !opts.compress {
        // Size the file for every data cluster first: direct writes that extend a file are
        // serialized by the filesystem (ext4 waits for each), writes inside it are not. The
        // metadata pass cuts the file to its real length.
        let bound = CLUSTER + wanted_clusters * CLUSTER;
        o.set_len(bound)
            .map_err(|e| Error::io("size", tmp, bound, e))?;
        let files = super::ring_body::BodyFiles {
            src: reopen_direct(src, f, false)?,
            src_path: src,
            size,
            out: reopen_direct(tmp, o, true)?,
            out_path: tmp,
        };
        let b = super::ring_body::write_plain(
            files,
            &wanted,
            &opts.cancel,
            opts.progress.as_ref(),
            &mut stored,
        )?;
        s.bytes_read = b.bytes_read;
        s.data_clusters = b.data_clusters;
        s.zero_clusters_skipped = b.zero_clusters_skipped;
        b.cursor
    } else {
        let io = BodyIo {
            f,
            src,
            size,
            o,
            tmp,
        };
        compressed_body(&io, opts, &wanted, &mut stored, &mut s)?
    };

    let data_end = cursor.div_ceil(CLUSTER) * CLUSTER;
    let file_size = write_metadata(o, tmp, size, clusters, &stored, data_end)?;
    s.file_size = file_size;
    s.seconds = started.elapsed().as_secs_f64();
    Ok(s)
}

/// The volume and the temporary output of a write.
struct BodyIo<'a> {
    f: &'a File,
    src: &'a Path,
    size: u64,
    o: &'a File,
    tmp: &'a Path,
}

/// The compressed body: batches of [`BATCH`] clusters read by a reader thread (buffered,
/// [`READERS`] reads at once) while the previous batch is compressed on `opts.threads`
/// threads and appended. Returns the byte offset after the data.
fn compressed_body(
    io: &BodyIo<'_>,
    opts: &WriteOptions,
    wanted: &[Range<u64>],
    stored: &mut Vec<Placed>,
    s: &mut WriteSummary,
) -> Result<u64> {
    let BodyIo {
        f,
        src,
        size,
        o,
        tmp,
    } = *io;
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let mut cursor = CLUSTER;
    let total: u64 = wanted.iter().map(|r| r.end - r.start).sum();
    let mut clusters = wanted.iter().flat_map(|r| r.clone());
    advise(f, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL, 0, 0);
    let mut outbuf: Vec<u8> = Vec::with_capacity(BATCH * CLUSTER as usize);
    std::thread::scope(|sc| -> Result<()> {
        // A reader thread keeps up to two batches ahead, so reading the volume overlaps
        // zero detection, compression and writing.
        type Batch = (Vec<u64>, Vec<u8>, u64);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch>>(2);
        let cancel = opts.cancel.clone();
        sc.spawn(move || loop {
            if cancelled(&cancel) {
                break;
            }
            let batch: Vec<u64> = clusters.by_ref().take(BATCH).collect();
            if batch.is_empty() {
                break;
            }
            let r = read_batch(f, src, size, &batch).map(|(buf, n)| (batch, buf, n));
            let failed = r.is_err();
            if tx.send(r).is_err() || failed {
                break;
            }
        });
        let mut seen = 0u64;
        loop {
            let stop = |done| Error::Cancelled { done, total: size };
            if cancelled(&opts.cancel) {
                return Err(stop(s.bytes_read));
            }
            let Ok(next) = rx.recv() else {
                // The reader hung up: every batch sent, or it stopped for a cancel.
                if cancelled(&opts.cancel) {
                    return Err(stop(s.bytes_read));
                }
                if seen < total {
                    return Err(Error::invalid("volume reader stopped"));
                }
                break;
            };
            let (batch, buf, read) = next?;
            seen += batch.len() as u64;
            s.bytes_read += read;
            let batch_start = cursor;
            let cl = |k: usize| &buf[k * CLUSTER as usize..(k + 1) * CLUSTER as usize];
            let nonzero: Vec<usize> = (0..batch.len())
                .filter(|&k| !crate::zero::is_zero(cl(k)))
                .collect();
            s.zero_clusters_skipped += (batch.len() - nonzero.len()) as u64;
            outbuf.clear();
            let packed = compress_all(&nonzero, &buf, threads)
                .map_err(|e| Error::io("compress", src, batch[0] * CLUSTER, e))?;
            for (&k, z) in nonzero.iter().zip(packed) {
                match z {
                    Some(z) => {
                        stored.push(Placed {
                            guest: batch[k],
                            n: 1,
                            at: Stored::Compressed(cursor + outbuf.len() as u64, z.len() as u64),
                        });
                        outbuf.extend_from_slice(&z);
                        s.compressed_clusters += 1;
                    }
                    None => {
                        // Plain clusters must be cluster aligned.
                        let pad = (CLUSTER - (cursor + outbuf.len() as u64) % CLUSTER) % CLUSTER;
                        outbuf.resize(outbuf.len() + pad as usize, 0);
                        place_plain(stored, batch[k], cursor + outbuf.len() as u64, 1);
                        outbuf.extend_from_slice(cl(k));
                    }
                }
            }
            s.data_clusters += nonzero.len() as u64;
            if !outbuf.is_empty() {
                o.write_all_at(&outbuf, cursor)
                    .map_err(|e| Error::io("write", tmp, cursor, e))?;
                cursor += outbuf.len() as u64;
            }
            // Start writeback of this batch now, without waiting for it: the disk writes while
            // the next batches are read, instead of everything at the final flush (which still
            // reports any error).
            if cursor > batch_start {
                let _ = crate::sys::start_writeback(o.as_fd(), batch_start, cursor - batch_start);
            }
            if let Some(p) = &opts.progress {
                p(
                    batch.last().map_or(0, |&c| (c + 1) * CLUSTER).min(size),
                    size,
                );
            }
        }
        Ok(())
    })?;
    Ok(cursor)
}

/// The file behind `file` (named `path` in messages) opened again with O_DIRECT through
/// `/proc/self/fd` (the same inode, never the path again), for writing when `write`; a
/// duplicate of `file` where the filesystem has no O_DIRECT.
fn reopen_direct(path: &Path, file: &File, write: bool) -> Result<File> {
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let mut o = OpenOptions::new();
    o.read(true).write(write).custom_flags(libc::O_DIRECT);
    match o.open(by_fd) {
        Ok(d) => Ok(d),
        Err(_) => file
            .try_clone()
            .map_err(|e| Error::open("duplicate", path, e)),
    }
}

/// Reads the clusters of `batch`; the tail past the end of the volume reads as zeros.
/// Contiguous runs are cut into 1 MiB pieces read by [`READERS`] threads at once: a volume
/// (virtual disk, RAID, SSD) serves parallel requests much faster than one at a time.
fn read_batch(f: &File, src: &Path, size: u64, batch: &[u64]) -> Result<(Vec<u8>, u64)> {
    const PIECE: usize = 16; // clusters per read (1 MiB)
    let cs = CLUSTER as usize;
    let mut buf = vec![0u8; batch.len() * cs];
    // (index in batch, clusters) of each piece: contiguous in the volume.
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < batch.len() {
        let mut j = i + 1;
        while j < batch.len() && j - i < PIECE && batch[j] == batch[j - 1] + 1 {
            j += 1;
        }
        pieces.push((i, j - i));
        i = j;
    }
    let mut slices: Vec<(&(usize, usize), &mut [u8])> = Vec::with_capacity(pieces.len());
    let mut rest: &mut [u8] = &mut buf;
    for p in &pieces {
        let (head, tail) = rest.split_at_mut(p.1 * cs);
        slices.push((p, head));
        rest = tail;
    }
    let read = std::sync::atomic::AtomicU64::new(0);
    let work = std::sync::Mutex::new(slices);
    let first_err: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|sc| {
        for _ in 0..READERS.min(pieces.len()) {
            sc.spawn(|| loop {
                let item = work.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((&(k, _), dst)) = item else { break };
                let off = batch[k] * CLUSTER;
                let want = (dst.len() as u64).min(size - off) as usize;
                match f.read_exact_at(&mut dst[..want], off) {
                    Ok(()) => {
                        read.fetch_add(want as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        first_err
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(Error::io("read", src, off, e));
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok((buf, read.into_inner()))
}

/// Best-effort page-cache advice (readahead); failures change nothing.
fn advise(f: &File, advice: PosixFadviseAdvice, offset: u64, len: u64) {
    let _ = posix_fadvise(f.as_raw_fd(), offset as i64, len as i64, advice);
}

/// Compresses the clusters `idx` of `buf`; `None` where compression saves nothing. A worker
/// that panics (a bug) is an error naming the panic: the image is not written half compressed.
fn compress_all(idx: &[usize], buf: &[u8], threads: usize) -> io::Result<Vec<Option<Vec<u8>>>> {
    let cs = CLUSTER as usize;
    let threads = threads.clamp(1, 64).min(idx.len().max(1));
    let per = idx.len().div_ceil(threads).max(1);
    std::thread::scope(|sc| {
        let handles: Vec<_> = idx
            .chunks(per)
            .map(|part| {
                sc.spawn(move || {
                    part.iter()
                        .map(|&k| compress_cluster(&buf[k * cs..(k + 1) * cs]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        join_workers(handles)
    })
    .map(|parts| parts.into_iter().flatten().collect())
}

/// Joins every worker of a scope in order (a scope re-raises a panic nobody joined) and returns
/// their results, or an error naming the first worker's panic.
fn join_workers<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, T>>) -> io::Result<Vec<T>> {
    let mut out = Vec::with_capacity(handles.len());
    let mut panicked = None;
    for h in handles {
        match h.join() {
            Ok(v) => out.push(v),
            Err(p) => {
                panicked.get_or_insert(panic_message(p.as_ref()));
            }
        }
    }
    match panicked {
        None => Ok(out),
        Some(msg) => Err(io::Error::other(format!(
            "compression worker panicked: {msg}"
        ))),
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Raw deflate with matches limited to 4 KiB back (full flush every 4 KiB).
fn compress_cluster(data: &[u8]) -> Option<Vec<u8>> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = vec![0u8; data.len() + 1024];
    let pieces = data.chunks(4096);
    let n = pieces.len();
    for (i, piece) in pieces.enumerate() {
        let flush = if i + 1 == n {
            FlushCompress::Finish
        } else {
            FlushCompress::Full
        };
        let before = c.total_in();
        let pos = c.total_out() as usize;
        c.compress(piece, &mut out[pos..], flush).ok()?;
        if (c.total_in() - before) as usize != piece.len() {
            return None;
        }
    }
    let len = c.total_out() as usize;
    // Worth it only when it saves at least a sector.
    if len + 512 > data.len() {
        return None;
    }
    out.truncate(len);
    Some(out)
}

/// Lays out and writes L2 tables, L1 table, refcount blocks/table and the header after the
/// data. Returns the file size.
fn write_metadata(
    o: &File,
    tmp: &Path,
    size: u64,
    clusters: u64,
    stored: &[Placed],
    data_end: u64,
) -> Result<u64> {
    let l2_entries = CLUSTER / 8;
    let l1_size = clusters.div_ceil(l2_entries).max(1);
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
    // L2 tables needed, in L1 order.
    let mut l2_index: Vec<u64> = Vec::new();
    for p in stored {
        for t in p.guest / l2_entries..=(p.guest + p.n - 1) / l2_entries {
            if l2_index.last() != Some(&t) {
                l2_index.push(t);
            }
        }
    }
    let l2_base = data_end;
    let l1_off = l2_base + l2_index.len() as u64 * CLUSTER;
    let meta_end = l1_off + l1_clusters * CLUSTER;
    // Refcount blocks + table: a fixed point (they count themselves).
    let per_block = CLUSTER * 8 / REFCOUNT_BITS;
    let base_clusters = meta_end / CLUSTER;
    let (mut rb, mut rt) = (1u64, 1u64);
    loop {
        let total = base_clusters + rb + rt;
        let nrb = total.div_ceil(per_block);
        let nrt = (nrb * 8).div_ceil(CLUSTER);
        if nrb == rb && nrt == rt {
            break;
        }
        rb = nrb;
        rt = nrt;
    }
    let rb_off = meta_end;
    let rt_off = rb_off + rb * CLUSTER;
    let file_end = rt_off + rt * CLUSTER;
    let total_clusters = file_end / CLUSTER;

    // Refcounts.
    let mut refs = vec![0u16; total_clusters as usize];
    refs[0] = 1; // header
    for p in stored {
        match p.at {
            Stored::Plain(h) => {
                for c in h / CLUSTER..h / CLUSTER + p.n {
                    refs[c as usize] += 1;
                }
            }
            Stored::Compressed(h, len) => {
                for c in h / CLUSTER..=(h + len - 1) / CLUSTER {
                    refs[c as usize] += 1;
                }
            }
        }
    }
    for c in l2_base / CLUSTER..total_clusters {
        refs[c as usize] += 1;
    }

    // L2 tables, written one at a time.
    let x = 62 - (CLUSTER_BITS - 8);
    let mut l1 = vec![0u8; (l1_clusters * CLUSTER) as usize];
    let mut table = vec![0u8; CLUSTER as usize];
    let mut it = each_cluster(stored).peekable();
    for (n, &li) in l2_index.iter().enumerate() {
        table.fill(0);
        while let Some(&(g, s)) = it.peek() {
            if g / l2_entries != li {
                break;
            }
            it.next();
            let e = match s {
                Stored::Plain(h) => h | COPIED,
                Stored::Compressed(h, len) => {
                    let sectors = (h + len - 1) / 512 - h / 512;
                    COMPRESSED | (sectors << x) | h
                }
            };
            let k = ((g % l2_entries) * 8) as usize;
            table[k..k + 8].copy_from_slice(&e.to_be_bytes());
        }
        let off = l2_base + n as u64 * CLUSTER;
        o.write_all_at(&table, off)
            .map_err(|e| Error::io("write", tmp, off, e))?;
        let k = (li * 8) as usize;
        l1[k..k + 8].copy_from_slice(&(off | COPIED).to_be_bytes());
    }
    o.write_all_at(&l1, l1_off)
        .map_err(|e| Error::io("write", tmp, l1_off, e))?;

    // Refcount blocks and table.
    let mut rtable = vec![0u8; (rt * CLUSTER) as usize];
    for b in 0..rb {
        table.fill(0);
        let first = b * per_block;
        for i in 0..per_block {
            let c = first + i;
            if c >= total_clusters {
                break;
            }
            let k = (i * 2) as usize;
            table[k..k + 2].copy_from_slice(&refs[c as usize].to_be_bytes());
        }
        let off = rb_off + b * CLUSTER;
        o.write_all_at(&table, off)
            .map_err(|e| Error::io("write", tmp, off, e))?;
        let k = (b * 8) as usize;
        rtable[k..k + 8].copy_from_slice(&off.to_be_bytes());
    }
    o.write_all_at(&rtable, rt_off)
        .map_err(|e| Error::io("write", tmp, rt_off, e))?;

    // Header last.
    let mut h = vec![0u8; CLUSTER as usize];
    h[..4].copy_from_slice(&super::header::MAGIC);
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&virtual_size(size).to_be_bytes());
    h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
    h[40..48].copy_from_slice(&l1_off.to_be_bytes());
    h[48..56].copy_from_slice(&rt_off.to_be_bytes());
    h[56..60].copy_from_slice(&(rt as u32).to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit
    h[100..104].copy_from_slice(&(HEADER_LENGTH as u32).to_be_bytes());
    // compression_type 0 (deflate) at 104; end-of-extensions marker (zeros) at 112.
    o.write_all_at(&h, 0)
        .map_err(|e| Error::io("write", tmp, 0, e))?;
    o.set_len(file_end)
        .map_err(|e| Error::io("truncate", tmp, file_end, e))?;
    Ok(file_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_worker_is_an_error_naming_the_panic_not_a_crash() {
        let r = std::thread::scope(|sc| {
            let handles = vec![
                sc.spawn(|| 1),
                sc.spawn(|| -> i32 { panic!("worker {} broke", 2) }),
                sc.spawn(|| 3),
            ];
            join_workers(handles)
        });
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("compression worker panicked: worker 2 broke"),
            "{e}"
        );
        let ok = std::thread::scope(|sc| join_workers(vec![sc.spawn(|| 1), sc.spawn(|| 2)]));
        assert_eq!(ok.unwrap(), vec![1, 2]);
    }

    #[test]
    fn plain_runs_merge_only_when_guest_and_host_both_continue() {
        let c = CLUSTER;
        let mut v = Vec::new();
        place_plain(&mut v, 10, c, 2); // guest 10-11 at host 1-2
        place_plain(&mut v, 12, 3 * c, 3); // continues both: merged
        place_plain(&mut v, 16, 6 * c, 1); // guest gap (15 was zero): new run
        place_plain(&mut v, 17, 8 * c, 1); // host gap (a compressed cluster between): new run
        v.push(Placed {
            guest: 18,
            n: 1,
            at: Stored::Compressed(9 * c + 100, 700),
        });
        place_plain(&mut v, 19, 10 * c, 1); // after a compressed entry: new run
        assert_eq!(v.len(), 5);
        let all: Vec<(u64, u64)> = each_cluster(&v)
            .map(|(g, s)| match s {
                Stored::Plain(h) => (g, h / c),
                Stored::Compressed(h, _) => (g, h),
            })
            .collect();
        assert_eq!(
            all,
            vec![
                (10, 1),
                (11, 2),
                (12, 3),
                (13, 4),
                (14, 5),
                (16, 6),
                (17, 8),
                (18, 9 * c + 100),
                (19, 10)
            ]
        );
    }

    #[test]
    fn compressed_cluster_decodes_and_uses_a_4k_window() {
        let data: Vec<u8> = (0..65536u32).map(|i| ((i / 7) % 13) as u8).collect();
        let z = compress_cluster(&data).unwrap();
        let mut out = vec![0u8; 65536];
        crate::format::decode(crate::plan::Codec::Deflate, &z, &mut out).unwrap();
        assert_eq!(out, data);
        // random data is not worth compressing
        let mut r = vec![0u8; 65536];
        let mut x = 1u32;
        for b in r.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        assert!(compress_cluster(&r).is_none());
    }
}
