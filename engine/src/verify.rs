//! Read-back scans through the I/O backend: comparing two files or devices ([`compare`]),
//! proving a range reads as zeros, checking written blocks against their checksums. Chunks
//! are issued in ascending order at full queue depth; the scan reports the lowest offset its
//! check flags.

use crate::alloc;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::extent::ExtentMap;
use crate::options::CopyOptions;
use crate::uring::{self, BufferPool, IoOp, Req};
use crate::zero::is_zero;
use std::io;
use std::path::Path;
use std::time::Instant;

/// The outcome of a scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanResult {
    /// The lowest flagged offset, if any.
    pub offset: Option<u64>,
    /// Bytes read from each endpoint.
    pub bytes_compared: u64,
}

/// The result of [`compare`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Comparison {
    /// Same size and same bytes (holes read as zeros).
    pub identical: bool,
    /// The first offset where they differ (the shorter one's size if only sizes differ).
    pub first_difference: Option<u64>,
    /// Size of A.
    pub size_a: u64,
    /// Size of B.
    pub size_b: u64,
    /// Bytes read from each side (ranges where both are holes are not read).
    pub bytes_compared: u64,
}

/// Compares two files or devices, holes reading as zeros. Ranges that are holes in both are
/// equal without being read; the rest is read through the same I/O backend as copies.
pub fn compare(a: &Path, b: &Path) -> Result<Comparison> {
    compare_with(a, b, &CopyOptions::default())
}

/// [`compare`] with explicit block size, queue depth and O_DIRECT choice.
pub fn compare_with(a: &Path, b: &Path, opts: &CopyOptions) -> Result<Comparison> {
    opts.validate()?;
    let ea = Endpoint::open_source(a, opts.direct)?;
    let eb = Endpoint::open_source(b, opts.direct)?;
    let common = ea.size.min(eb.size);
    let data = alloc::data_ranges(&ea, 0..common)?.union(&alloc::data_ranges(&eb, 0..common)?);
    let diff = first_difference(&ea, &eb, &data, opts)?;
    let first_difference = diff.offset.or((ea.size != eb.size).then_some(common));
    Ok(Comparison {
        identical: first_difference.is_none(),
        first_difference,
        size_a: ea.size,
        size_b: eb.size,
        bytes_compared: diff.bytes_compared,
    })
}

/// The first offset inside `ranges` where `a` and `b` differ.
pub fn first_difference(
    a: &Endpoint,
    b: &Endpoint,
    ranges: &ExtentMap,
    opts: &CopyOptions,
) -> Result<ScanResult> {
    scan(&[a, b], ranges, opts, |off, bufs| {
        let (x, y) = (bufs[0], bufs[1]);
        if x == y {
            return None;
        }
        let i = x.iter().zip(y).position(|(p, q)| p != q).unwrap_or(0);
        Some(off + i as u64)
    })
}

/// The first offset inside `ranges` of `ep` holding a non-zero byte.
pub fn first_nonzero(ep: &Endpoint, ranges: &ExtentMap, opts: &CopyOptions) -> Result<ScanResult> {
    scan(&[ep], ranges, opts, |off, bufs| {
        if is_zero(bufs[0]) {
            return None;
        }
        bufs[0].iter().position(|b| *b != 0).map(|i| off + i as u64)
    })
}

struct Chunk {
    offset: u64,
    len: usize,
    done: Vec<usize>,
    pending: usize,
    retries: u32,
}

/// Reads every range of `ranges` from each endpoint and calls `check(offset, bufs)` per chunk
/// (ranges split at multiples of the block size); returns the lowest offset a check flags.
pub fn scan(
    eps: &[&Endpoint],
    ranges: &ExtentMap,
    opts: &CopyOptions,
    check: impl FnMut(u64, &[&[u8]]) -> Option<u64>,
) -> Result<ScanResult> {
    let bs = opts.block_size as u64;
    let chunks = ranges.iter().flat_map(move |r| {
        let mut pos = r.start;
        std::iter::from_fn(move || {
            (pos < r.end).then(|| {
                let n = (r.end - pos).min(bs - pos % bs);
                let c = (pos, n as usize);
                pos += n;
                c
            })
        })
    });
    scan_chunks(eps, chunks, opts, check)
}

/// Reads the given `(offset, len)` chunks (ascending, each at most the block size) from each
/// endpoint and calls `check(offset, bufs)` per chunk; returns the lowest offset flagged.
pub fn scan_chunks(
    eps: &[&Endpoint],
    mut chunks: impl Iterator<Item = (u64, usize)>,
    opts: &CopyOptions,
    mut check: impl FnMut(u64, &[&[u8]]) -> Option<u64>,
) -> Result<ScanResult> {
    opts.validate()?;
    let n = eps.len();
    let qd = opts.queue_depth as usize;
    let bs = opts.block_size;
    let mut files = Vec::new();
    let mut fidx = Vec::new();
    for ep in eps {
        files.push(
            ep.file
                .try_clone()
                .map_err(|e| Error::open("duplicate descriptor of", &ep.path, e))?,
        );
        let buffered = files.len() - 1;
        let direct = match &ep.direct {
            Some(d) => {
                files.push(
                    d.try_clone()
                        .map_err(|e| Error::open("duplicate descriptor of", &ep.path, e))?,
                );
                Some(files.len() - 1)
            }
            None => None,
        };
        fidx.push((buffered, direct));
    }
    let pool = BufferPool::huge(qd * n, bs)
        .map_err(|e| Error::open("allocate I/O buffers for", &eps[0].path, e))?;
    let mut be = uring::open_backend(files, opts.queue_depth * n as u32, pool, u64::MAX)
        .map_err(Error::Ring)?;
    if let Some(hook) = &opts.io_hook {
        be = hook(be);
    }

    let mut slots: Vec<Option<Chunk>> = (0..qd).map(|_| None).collect();
    let mut free: Vec<usize> = (0..qd).rev().collect();
    let mut found: Option<u64> = None;
    let mut compared = 0u64;
    let mut error: Option<Error> = None;
    let mut exhausted = false;
    let mut completions = Vec::new();
    let submit =
        |be: &mut dyn uring::IoBackend, slot: usize, k: usize, c: &Chunk| -> io::Result<()> {
            let ep = eps[k];
            let off = c.offset + c.done[k] as u64;
            let len = c.len - c.done[k];
            let aligned = off.is_multiple_of(ep.align)
                && (len as u64).is_multiple_of(ep.align)
                && (c.done[k] as u64).is_multiple_of(ep.align);
            let file = match fidx[k].1 {
                Some(d) if aligned => d,
                _ => fidx[k].0,
            };
            be.push(Req {
                user_data: (slot * n + k) as u64,
                op: IoOp::Read,
                file,
                buf: slot * n + k,
                buf_off: c.done[k],
                len,
                offset: off,
            })
        };
    let mut last_progress = Instant::now();
    loop {
        while error.is_none() && !exhausted {
            let Some(&slot) = free.last() else { break };
            let Some((offset, len)) = chunks.next() else {
                exhausted = true;
                break;
            };
            if found.is_some_and(|f| offset > f) {
                exhausted = true;
                break;
            }
            free.pop();
            let c = Chunk {
                offset,
                len,
                done: vec![0; n],
                pending: n,
                retries: 0,
            };
            for (k, ep) in eps.iter().enumerate() {
                if let Err(e) = submit(be.as_mut(), slot, k, &c) {
                    error = Some(Error::io("read", &ep.path, offset, e));
                }
            }
            slots[slot] = Some(c);
        }
        if be.in_flight() == 0 {
            break;
        }
        completions.clear();
        be.wait(1, opts.io_timeout, &mut completions)
            .map_err(|e| Error::io("wait for completions", &eps[0].path, 0, e))?;
        if completions.is_empty() {
            if last_progress.elapsed() < opts.io_timeout {
                continue;
            }
            // Nothing completed for a whole timeout: stop waiting (also when already failing,
            // else a hung request would keep us here forever); dropping the backend cancels it.
            if error.is_none() {
                error = Some(Error::TimedOut {
                    op: "read",
                    path: eps[0].path.clone(),
                    offset: slots.iter().flatten().map(|c| c.offset).min().unwrap_or(0),
                    secs: opts.io_timeout.as_secs(),
                });
            }
            break;
        }
        last_progress = Instant::now();
        for d in completions.drain(..) {
            let slot = d.user_data as usize / n;
            let k = d.user_data as usize % n;
            let c = slots[slot].as_mut().expect("active chunk");
            let at = c.offset + c.done[k] as u64;
            if error.is_none() {
                if d.result < 0 {
                    let errno = -d.result;
                    if matches!(errno, libc::EAGAIN | libc::EINTR) && c.retries < 16 {
                        c.retries += 1;
                        if let Err(e) = submit(be.as_mut(), slot, k, c) {
                            error = Some(Error::io("read", &eps[k].path, at, e));
                        }
                        continue;
                    }
                    error = Some(Error::io(
                        "read",
                        &eps[k].path,
                        at,
                        io::Error::from_raw_os_error(errno),
                    ));
                } else if d.result == 0 {
                    error = Some(Error::io(
                        "read",
                        &eps[k].path,
                        at,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "end of file before the expected end",
                        ),
                    ));
                } else {
                    c.done[k] += d.result as usize;
                    if c.done[k] < c.len {
                        if let Err(e) = submit(be.as_mut(), slot, k, c) {
                            error = Some(Error::io("read", &eps[k].path, at, e));
                        }
                        continue;
                    }
                }
            }
            c.pending -= 1;
            if c.pending == 0 {
                let c = slots[slot].take().expect("active chunk");
                if error.is_none() {
                    let pool = be.pool();
                    let bufs: Vec<&[u8]> =
                        (0..n).map(|k| &pool.get(slot * n + k)[..c.len]).collect();
                    if let Some(off) = check(c.offset, &bufs) {
                        found = Some(found.map_or(off, |f| f.min(off)));
                    }
                    compared += c.len as u64;
                }
                free.push(slot);
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(ScanResult {
            offset: found,
            bytes_compared: compared,
        }),
    }
}
