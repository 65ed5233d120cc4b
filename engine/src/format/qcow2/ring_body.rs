//! The uncompressed body of a qcow2 written from a volume, on the engine's I/O backend
//! (io_uring where available): the volume's data is read in 1 MiB pieces with O_DIRECT,
//! [`BUFFERS`] pieces in flight, and every piece, taken in guest order as soon as it and the
//! pieces before it are in, has its all-zero clusters dropped and its runs of non-zero clusters
//! written (O_DIRECT) at the next free host clusters. Host clusters therefore follow guest
//! order, as a sequential reader of the image wants, while the device sees a deep queue of
//! reads and writes instead of one thread's buffered `pread`/`pwrite`.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use super::placement::{place_plain, Placed, CLUSTER};
use crate::options::{cancelled, ProgressFn};
use crate::uring::{open_backend, BufferPool, Done, IoOp, Req};
use crate::{Error, Result};

/// Clusters per read.
const PIECE: usize = 16;
/// Pieces in flight (buffers of `PIECE` clusters: 32 MiB).
const BUFFERS: usize = 32;
/// Requests in flight at most (reads plus the writes of their runs).
const QUEUE_DEPTH: u32 = 64;
/// An I/O that does not complete within this fails the write.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

const SRC: usize = 0;
const OUT: usize = 1;

/// What the body pass did.
#[derive(Debug, Default)]
pub(super) struct BodyStats {
    /// Byte offset after the last data cluster written.
    pub cursor: u64,
    pub bytes_read: u64,
    pub data_clusters: u64,
    pub zero_clusters_skipped: u64,
}

/// The volume and the output as the ring sees them.
pub(super) struct BodyFiles<'a> {
    /// The volume, O_DIRECT where it allows it.
    pub src: File,
    pub src_path: &'a Path,
    pub size: u64,
    /// The temporary output, O_DIRECT where it allows it.
    pub out: File,
    pub out_path: &'a Path,
}

/// A read: first guest cluster and how many clusters.
type Piece = (u64, usize);

/// One request of ours, remembered until it completes (short transfers continue from it).
#[derive(Clone, Copy)]
struct Pending {
    op: IoOp,
    /// Piece index (reads) or 0 (writes).
    piece: usize,
    buf: usize,
    buf_off: usize,
    len: usize,
    offset: u64,
    retries: u32,
}

/// Writes the non-zero clusters of `wanted` (guest cluster ranges, ascending and disjoint)
/// after the header cluster, appending where they went to `stored`.
pub(super) fn write_plain(
    files: BodyFiles<'_>,
    wanted: &[std::ops::Range<u64>],
    cancel: &Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    progress: Option<&ProgressFn>,
    stored: &mut Vec<Placed>,
) -> Result<BodyStats> {
    let cs = CLUSTER as usize;
    let BodyFiles {
        src,
        src_path,
        size,
        out,
        out_path,
    } = files;
    // Pieces: (first guest cluster, clusters), at most PIECE, contiguous in the volume; made
    // as they are read, so memory does not follow the volume's size.
    let mut pieces = wanted.iter().flat_map(|r| {
        (r.start..r.end)
            .step_by(PIECE)
            .map(move |g| (g, (r.end - g).min(PIECE as u64) as usize))
    });
    let count: u64 = wanted
        .iter()
        .map(|r| (r.end - r.start).div_ceil(PIECE as u64))
        .sum();
    let mut st = BodyStats {
        cursor: CLUSTER,
        ..BodyStats::default()
    };
    if count == 0 {
        return Ok(st);
    }
    let nbufs = BUFFERS.min(count as usize);
    let pool = BufferPool::huge(nbufs, PIECE * cs)
        .map_err(|e| Error::io("map buffers", src_path, 0, e))?;
    let expected = wanted.iter().map(|r| r.end - r.start).sum::<u64>() * CLUSTER;
    let mut io = open_backend(vec![src, out], QUEUE_DEPTH, pool, expected).map_err(Error::Ring)?;

    let mut free: Vec<usize> = (0..nbufs).rev().collect();
    // Per buffer: writes still in flight from it.
    let mut writes_left = vec![0u32; nbufs];
    // Reads not yet placed, in guest order: the piece and, once in, (buffer, bytes read).
    let mut arrived: VecDeque<(Piece, Option<(usize, usize)>)> = VecDeque::new();
    // Pieces handed out so far, and how many of them were placed.
    let mut next_read = 0usize;
    let mut first_unplaced = 0usize;
    let mut pieces_left = true;
    let mut queued: VecDeque<Pending> = VecDeque::new();
    let mut slots: Vec<Option<Pending>> = Vec::new();
    let mut free_slots: Vec<usize> = Vec::new();
    let mut done: Vec<Done> = Vec::new();
    let mut last_progress = Instant::now();

    loop {
        if cancelled(cancel) {
            return Err(Error::Cancelled {
                done: st.bytes_read,
                total: size,
            });
        }
        // Reads into free buffers, in guest order.
        while pieces_left {
            let Some(buf) = free.pop() else { break };
            let Some((g, n)) = pieces.next() else {
                free.push(buf);
                pieces_left = false;
                break;
            };
            queued.push_back(Pending {
                op: IoOp::Read,
                piece: next_read,
                buf,
                buf_off: 0,
                len: n * cs,
                offset: g * CLUSTER,
                retries: 0,
            });
            arrived.push_back(((g, n), None));
            next_read += 1;
        }
        // Place the pieces that are in, in order.
        while let Some(((g, n), Some((buf, got)))) = arrived.front().copied() {
            arrived.pop_front();
            first_unplaced += 1;
            let data = io.pool_mut().get_mut(buf);
            // Past the end of the volume reads as zeros.
            data[got..n * cs].fill(0);
            st.bytes_read += got as u64;
            let mut c = 0;
            while c < n {
                if crate::zero::is_zero(&data[c * cs..(c + 1) * cs]) {
                    st.zero_clusters_skipped += 1;
                    c += 1;
                    continue;
                }
                let mut e = c + 1;
                while e < n && !crate::zero::is_zero(&data[e * cs..(e + 1) * cs]) {
                    e += 1;
                }
                place_plain(stored, g + c as u64, st.cursor, (e - c) as u64);
                queued.push_back(Pending {
                    op: IoOp::Write,
                    piece: 0,
                    buf,
                    buf_off: c * cs,
                    len: (e - c) * cs,
                    offset: st.cursor,
                    retries: 0,
                });
                writes_left[buf] += 1;
                st.data_clusters += (e - c) as u64;
                st.cursor += ((e - c) * cs) as u64;
                c = e;
            }
            if writes_left[buf] == 0 {
                free.push(buf);
            }
            if let Some(p) = progress {
                p(((g + n as u64) * CLUSTER).min(size), size);
            }
        }
        while io.in_flight() < QUEUE_DEPTH as usize {
            let Some(p) = queued.pop_front() else { break };
            let slot = free_slots.pop().unwrap_or_else(|| {
                slots.push(None);
                slots.len() - 1
            });
            slots[slot] = Some(p);
            let (file, path) = match p.op {
                IoOp::Read => (SRC, src_path),
                IoOp::Write => (OUT, out_path),
            };
            io.push(Req {
                user_data: slot as u64,
                op: p.op,
                file,
                buf: p.buf,
                buf_off: p.buf_off,
                len: p.len,
                offset: p.offset,
            })
            .map_err(|e| Error::io("submit", path, p.offset, e))?;
        }
        if io.in_flight() == 0 {
            if !pieces_left && arrived.is_empty() && queued.is_empty() {
                return Ok(st);
            }
            continue;
        }
        done.clear();
        io.wait(1, Duration::from_secs(1), &mut done)
            .map_err(|e| Error::io("wait for", out_path, st.cursor, e))?;
        if done.is_empty() {
            if last_progress.elapsed() >= IO_TIMEOUT {
                let p = slots.iter().flatten().next().copied();
                let (op, path, offset) = match p {
                    Some(p) if p.op == IoOp::Read => ("read", src_path, p.offset),
                    Some(p) => ("write", out_path, p.offset),
                    None => ("I/O", out_path, st.cursor),
                };
                return Err(Error::TimedOut {
                    op,
                    path: path.to_path_buf(),
                    offset,
                    secs: IO_TIMEOUT.as_secs(),
                });
            }
            continue;
        }
        last_progress = Instant::now();
        for d in &done {
            let slot = d.user_data as usize;
            let Some(mut p) = slots[slot].take() else {
                continue;
            };
            free_slots.push(slot);
            let (opname, path) = match p.op {
                IoOp::Read => ("read", src_path),
                IoOp::Write => ("write", out_path),
            };
            if d.result < 0 {
                let errno = -d.result;
                if crate::pipeline::retryable(errno, p.retries) {
                    p.retries += 1;
                    queued.push_front(p);
                    continue;
                }
                return Err(Error::io(
                    opname,
                    path,
                    p.offset,
                    std::io::Error::from_raw_os_error(errno),
                ));
            }
            let n = d.result as usize;
            let at_eof = p.op == IoOp::Read && p.offset + n as u64 >= size;
            if n < p.len && !at_eof {
                if n == 0 {
                    let why = match p.op {
                        IoOp::Read => "no data before the volume's end (the volume shrank?)",
                        _ => "the write made no progress",
                    };
                    return Err(Error::io(
                        opname,
                        path,
                        p.offset,
                        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, why),
                    ));
                }
                // Short transfer: the rest, from where it stopped.
                p.buf_off += n;
                p.len -= n;
                p.offset += n as u64;
                queued.push_front(p);
                continue;
            }
            match p.op {
                IoOp::Read => {
                    let got = p.buf_off + n.min(p.len);
                    let k = p.piece - first_unplaced;
                    arrived[k].1 = Some((p.buf, got));
                }
                IoOp::Write => {
                    writes_left[p.buf] -= 1;
                    if writes_left[p.buf] == 0 {
                        free.push(p.buf);
                    }
                }
            }
        }
    }
}
