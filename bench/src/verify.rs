//! Validation of a tool's output: byte comparison that reads holes as zeros, zero checks for
//! wipes, and `qemu-img compare` for qcow2 outputs.

use std::ffi::OsString;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::error::{io_err, Result};
use crate::{runner, sys, util};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Validation {
    Identical,
    Differs { detail: String },
    NotChecked { reason: String },
}

impl Validation {
    /// The verdict over several runs, adding run `run`'s: the first difference (named by its
    /// run) wins, then a run that could not be checked; identical only when every run was.
    pub fn merge(prev: Option<Validation>, run: usize, next: Validation) -> Validation {
        match (prev, next) {
            (Some(d @ Validation::Differs { .. }), _) => d,
            (_, Validation::Differs { detail }) => Validation::Differs {
                detail: format!("run {run}: {detail}"),
            },
            (Some(n @ Validation::NotChecked { .. }), _) => n,
            (_, Validation::NotChecked { reason }) => Validation::NotChecked {
                reason: format!("run {run}: {reason}"),
            },
            (_, Validation::Identical) => Validation::Identical,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Validation::Identical => "ok",
            Validation::Differs { .. } => "DIFFERS",
            Validation::NotChecked { .. } => "-",
        }
    }
}

const CHUNK: u64 = 8 << 20;

/// Data asked for ahead of the reads ([`sys::will_need`]).
const PREFETCH: u64 = 64 << 20;

/// `ranges` cut into pieces of at most [`CHUNK`] bytes: what is read at a time.
fn pieces(ranges: &[Range<u64>]) -> impl Iterator<Item = Range<u64>> + Clone + '_ {
    ranges.iter().flat_map(|r| {
        (r.start..r.end)
            .step_by(CHUNK as usize)
            .map(move |off| off..(off + CHUNK).min(r.end))
    })
}

/// Read-ahead over the pieces about to be read: a fragmented file's ranges are small and far
/// apart, which the kernel's sequential read-ahead does not follow, so a million 4 KiB extents
/// would be a million synchronous reads on a cold cache. Asking for the next [`PREFETCH`] bytes
/// of pieces keeps many reads in flight.
struct Prefetch<'f, I> {
    /// The pieces not asked for yet.
    ahead: I,
    /// Bytes asked for and not read yet.
    pending: u64,
    files: &'f [&'f File],
}

impl<'f, I: Iterator<Item = Range<u64>>> Prefetch<'f, I> {
    fn new(ahead: I, files: &'f [&'f File]) -> Self {
        Prefetch {
            ahead,
            pending: 0,
            files,
        }
    }

    /// Called before `piece` (the next piece of the same sequence) is read.
    fn before(&mut self, piece: &Range<u64>) {
        let len = piece.end - piece.start;
        while self.pending < PREFETCH + len {
            let Some(r) = self.ahead.next() else { break };
            for f in self.files {
                sys::will_need(f, &r);
            }
            self.pending += r.end - r.start;
        }
        self.pending = self.pending.saturating_sub(len);
    }
}

fn union(mut a: Vec<Range<u64>>, b: Vec<Range<u64>>) -> Vec<Range<u64>> {
    a.extend(b);
    a.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(a.len());
    for r in a {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Compare the first `len` bytes of `a` and `b` (files or block devices); outside both files'
/// data ranges both read as zeros, so only the union of their data ranges is read. Sizes are
/// checked too when `exact_size` (a device may be larger than the copied source).
pub fn compare(a: &Path, b: &Path, len: u64, exact_size: bool) -> Result<Validation> {
    let (la, lb) = (util::len_of(a)?, util::len_of(b)?);
    if la < len || lb < len || (exact_size && la != lb) {
        return Ok(Validation::Differs {
            detail: format!(
                "sizes differ: {} has {la} bytes, {} has {lb}",
                a.display(),
                b.display()
            ),
        });
    }
    let fa = File::open(a).map_err(io_err("open", a))?;
    let fb = File::open(b).map_err(io_err("open", b))?;
    let ra = sys::data_ranges(&fa, len).map_err(io_err("list data ranges of", a))?;
    let rb = sys::data_ranges(&fb, len).map_err(io_err("list data ranges of", b))?;
    scan(&[(&fa, a), (&fb, b)], &union(ra, rb), |off, bufs| {
        let (x, y) = (bufs[0], bufs[1]);
        (x != y).then(|| {
            let i = x.iter().zip(y).position(|(p, q)| p != q).unwrap_or(0);
            Validation::Differs {
                detail: format!("first difference at byte {}", off + i as u64),
            }
        })
    })
}

/// `[0, len)` of `path` reads as zeros.
pub fn all_zero(path: &Path, len: u64) -> Result<Validation> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let ranges = sys::data_ranges(&f, len).map_err(io_err("list data ranges of", path))?;
    scan(&[(&f, path)], &ranges, |off, bufs| {
        let i = bufs[0].iter().position(|&x| x != 0)?;
        Some(Validation::Differs {
            detail: format!("non-zero byte at {}", off + i as u64),
        })
    })
}

/// Read `ranges` of every file in `files` piece by piece (with read-ahead), handing each
/// piece's offset and bytes (one slice per file) to `check`; the first verdict it returns is
/// the result, Identical when it returns none.
fn scan(
    files: &[(&File, &Path)],
    ranges: &[Range<u64>],
    mut check: impl FnMut(u64, &[&[u8]]) -> Option<Validation>,
) -> Result<Validation> {
    let mut bufs: Vec<Vec<u8>> = files.iter().map(|_| vec![0u8; CHUNK as usize]).collect();
    let handles: Vec<&File> = files.iter().map(|(f, _)| *f).collect();
    let mut prefetch = Prefetch::new(pieces(ranges), &handles);
    for p in pieces(ranges) {
        prefetch.before(&p);
        let n = (p.end - p.start) as usize;
        for ((f, path), buf) in files.iter().zip(&mut bufs) {
            f.read_exact_at(&mut buf[..n], p.start)
                .map_err(io_err("read", path))?;
        }
        let slices: Vec<&[u8]> = bufs.iter().map(|b| &b[..n]).collect();
        if let Some(v) = check(p.start, &slices) {
            return Ok(v);
        }
    }
    Ok(Validation::Identical)
}

/// `qemu-img compare -f raw -F qcow2 RAW QCOW2` (exit 0 identical, 1 different).
pub fn compare_qcow2(raw: &Path, qcow2: &Path, timeout: Duration) -> Validation {
    let argv: Vec<OsString> = vec![
        "qemu-img".into(),
        "compare".into(),
        "-q".into(),
        "-f".into(),
        "raw".into(),
        "-F".into(),
        "qcow2".into(),
        raw.as_os_str().to_owned(),
        qcow2.as_os_str().to_owned(),
    ];
    let o = runner::run_steps(std::slice::from_ref(&argv), timeout);
    match o.status {
        runner::RunStatus::Ok => Validation::Identical,
        runner::RunStatus::Failed { detail, .. } if detail.starts_with("exit 1") => {
            Validation::Differs {
                detail: "qemu-img compare: content differs".into(),
            }
        }
        other => Validation::NotChecked {
            reason: format!("{}: {other:?}", runner::render(&argv)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_run_counts_and_the_first_difference_wins() {
        let differs = |d: &str| Validation::Differs { detail: d.into() };
        let unchecked = Validation::NotChecked { reason: "r".into() };
        let mut v = Validation::merge(None, 1, Validation::Identical);
        assert_eq!(v, Validation::Identical);
        v = Validation::merge(Some(v), 2, unchecked);
        assert!(matches!(&v, Validation::NotChecked { reason } if reason == "run 2: r"));
        v = Validation::merge(Some(v), 3, differs("at 7"));
        assert_eq!(v, differs("run 3: at 7"));
        v = Validation::merge(Some(v), 4, Validation::Identical);
        v = Validation::merge(Some(v), 5, differs("at 9"));
        assert_eq!(
            v,
            differs("run 3: at 7"),
            "a later identical run hides nothing"
        );
    }

    #[test]
    fn pieces_cover_the_ranges_in_chunks() {
        let ranges = [0..10, CHUNK..3 * CHUNK + 5];
        let p: Vec<Range<u64>> = pieces(&ranges).collect();
        assert_eq!(
            p,
            [
                0..10,
                CHUNK..2 * CHUNK,
                2 * CHUNK..3 * CHUNK,
                3 * CHUNK..3 * CHUNK + 5
            ]
        );
    }

    #[test]
    fn holes_compare_equal_to_zeros_and_differences_are_found() {
        let _big = crate::BIG_MEMORY.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let fa = File::create(&a).unwrap();
        fa.set_len(64 << 20).unwrap();
        fa.write_all_at(b"hello", 10 << 20).unwrap();
        let mut fb = File::create(&b).unwrap();
        let mut full = vec![0u8; 64 << 20];
        full[10 << 20..(10 << 20) + 5].copy_from_slice(b"hello");
        fb.write_all(&full).unwrap();
        assert_eq!(
            compare(&a, &b, 64 << 20, true).unwrap(),
            Validation::Identical
        );
        fb.write_all_at(b"x", 40 << 20).unwrap();
        match compare(&a, &b, 64 << 20, true).unwrap() {
            Validation::Differs { detail } => assert!(detail.contains(&(40u64 << 20).to_string())),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            all_zero(&b, 64 << 20).unwrap(),
            Validation::Differs { .. }
        ));
        let z = dir.path().join("z");
        File::create(&z).unwrap().set_len(1 << 30).unwrap();
        assert_eq!(all_zero(&z, 1 << 30).unwrap(), Validation::Identical);
        b.metadata().unwrap();
        assert!(matches!(
            compare(&a, &z, 64 << 20, true).unwrap(),
            Validation::Differs { .. }
        ));
    }
}
