//! The SEEK_DATA/SEEK_HOLE walk ([`crate::alloc::walk`]) fed odd answers.
//!
//! A [`ScriptSeeker`] answers each call from a script of [`Answer`]s, relative to the offset
//! asked (the same, ahead, behind, past the window's end, anywhere, ENXIO, an errno), and logs
//! every call. [`check_script`] runs the walk and checks the result against the log alone:
//!
//! - the walk makes at most one call per answer (+1 once the script is exhausted and answers
//!   ENXIO): it never loops;
//! - it fails exactly when an answer was an error (other than EINVAL/EOPNOTSUPP on the very first
//!   SEEK_DATA, which means "all data"), data went backwards or a hole did not follow its data,
//!   and that answer was the last one asked: an error is never turned into "all holes";
//! - on success the map satisfies its invariants, lies inside the window and equals the union
//!   of the reported data runs clipped to the window; each SEEK_DATA resumes at the previous
//!   hole and the walk only stops when the answers say there is no more data in the window.

use std::io;
use std::ops::Range;
use std::path::Path;

use crate::alloc::{walk, Seeker};
use crate::extent::ExtentMap;

/// One scripted answer, relative to the offset the walk asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `Ok(None)`: ENXIO, nothing at or after the offset.
    Enxio,
    /// `Err(errno)`.
    Errno(i32),
    /// The offset asked.
    Same,
    /// The offset plus `n` (saturating).
    Ahead(u64),
    /// The offset minus `n` (saturating): going backwards.
    Behind(u64),
    /// The window's end plus `n` (saturating): beyond EOF.
    PastEnd(u64),
    /// An absolute offset.
    Abs(u64),
}

/// Which question a logged call asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Data,
    Hole,
}

/// One logged call: question, offset asked, answer given (`Err` carries the errno).
pub type LogEntry = (Call, u64, Result<Option<u64>, i32>);

/// A seeker answering from a script, then ENXIO forever; logs every call.
pub struct ScriptSeeker {
    script: Vec<Answer>,
    next: usize,
    window: Range<u64>,
    pub log: Vec<LogEntry>,
}

impl ScriptSeeker {
    pub fn new(window: Range<u64>, script: Vec<Answer>) -> Self {
        ScriptSeeker {
            script,
            next: 0,
            window,
            log: Vec::new(),
        }
    }

    fn answer(&mut self, call: Call, offset: u64) -> io::Result<Option<u64>> {
        let a = self.script.get(self.next).copied().unwrap_or(Answer::Enxio);
        self.next += 1;
        let r = match a {
            Answer::Enxio => Ok(None),
            Answer::Errno(e) => Err(e),
            Answer::Same => Ok(Some(offset)),
            Answer::Ahead(n) => Ok(Some(offset.saturating_add(n))),
            Answer::Behind(n) => Ok(Some(offset.saturating_sub(n))),
            Answer::PastEnd(n) => Ok(Some(self.window.end.saturating_add(n))),
            Answer::Abs(v) => Ok(Some(v)),
        };
        self.log.push((call, offset, r));
        r.map_err(io::Error::from_raw_os_error)
    }
}

impl Seeker for ScriptSeeker {
    fn seek_data(&mut self, offset: u64) -> io::Result<Option<u64>> {
        self.answer(Call::Data, offset)
    }

    fn seek_hole(&mut self, offset: u64) -> io::Result<Option<u64>> {
        self.answer(Call::Hole, offset)
    }
}

fn is_unsupported(e: i32) -> bool {
    e == libc::EINVAL || e == libc::EOPNOTSUPP
}

/// Whether a logged answer must make the walk fail (`index` is its place in the log).
fn is_bad(index: usize, entry: &LogEntry) -> bool {
    match *entry {
        (Call::Data, _, Err(e)) => !(index == 0 && is_unsupported(e)),
        (Call::Hole, _, Err(_)) => true,
        (Call::Data, asked, Ok(Some(d))) => d < asked,
        (Call::Hole, asked, Ok(Some(h))) => h <= asked,
        (_, _, Ok(None)) => false,
    }
}

/// Runs the walk over `window` with `script` and checks it (see the module doc). Panics on
/// any violation; returns the walk's result for further checks.
pub fn check_script(window: Range<u64>, script: &[Answer]) -> crate::Result<ExtentMap> {
    let mut seeker = ScriptSeeker::new(window.clone(), script.to_vec());
    let result = walk(&mut seeker, Path::new("scripted"), window.clone());
    let log = &seeker.log;
    assert!(
        log.len() <= script.len() + 1,
        "walk made {} calls for {} answers: {log:?}",
        log.len(),
        script.len()
    );
    if window.is_empty() {
        assert!(log.is_empty(), "calls for an empty window: {log:?}");
        assert!(matches!(&result, Ok(m) if m.is_empty()), "{result:?}");
        return result;
    }
    let bad: Vec<usize> = (0..log.len()).filter(|&i| is_bad(i, &log[i])).collect();
    match &result {
        Err(e) => {
            assert_eq!(
                bad,
                vec![log.len() - 1],
                "walk failed ({e}) but the bad answer is not exactly the last one: {log:?}"
            );
        }
        Ok(map) => {
            assert!(
                bad.is_empty(),
                "bad answers {bad:?} accepted: {log:?} -> {map:?}"
            );
            map.check_invariants()
                .unwrap_or_else(|e| panic!("invalid map {map:?}: {e}"));
            if let Some((Call::Data, _, Err(e))) = log.first() {
                assert!(is_unsupported(*e));
                assert_eq!(log.len(), 1, "walk went on after 'unsupported': {log:?}");
                assert_eq!(map, &ExtentMap::from_ranges([window.clone()]));
                return result;
            }
            if let (Some(s), Some(e)) = (map.start(), map.end()) {
                assert!(
                    s >= window.start && e <= window.end,
                    "map {map:?} leaves window {window:?}"
                );
            }
            // Rebuild the expected map from the log alone.
            let mut expected = ExtentMap::new();
            let mut pos = window.start;
            let mut i = 0;
            let mut stopped = false;
            while i < log.len() {
                let (call, asked, ans) = log[i];
                assert_eq!(call, Call::Data, "expected SEEK_DATA at call {i}: {log:?}");
                assert_eq!(asked, pos, "SEEK_DATA did not resume at the hole: {log:?}");
                let d = match ans {
                    Ok(Some(d)) if d < window.end => d,
                    _ => {
                        stopped = true;
                        assert_eq!(i, log.len() - 1, "walk went on after the end: {log:?}");
                        break;
                    }
                };
                let Some(&(Call::Hole, hasked, hans)) = log.get(i + 1) else {
                    panic!("SEEK_DATA answered {d} but no SEEK_HOLE followed: {log:?}");
                };
                assert_eq!(hasked, d, "SEEK_HOLE not asked at the data: {log:?}");
                let h = hans.expect("checked not bad").unwrap_or(window.end);
                expected.insert(d.max(window.start)..h.min(window.end));
                pos = h;
                i += 2;
                if pos >= window.end {
                    stopped = true;
                    assert_eq!(i, log.len(), "walk went on past the window: {log:?}");
                }
            }
            assert!(
                stopped,
                "walk stopped without reaching the end: {log:?} -> {map:?}"
            );
            assert_eq!(map, &expected, "map differs from the answers: {log:?}");
        }
    }
    result
}

/// Reads the fuzz input; yields zeros once exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u64 {
        u64::from(u16::from_le_bytes([self.u8(), self.u8()]))
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }
}

/// Fuzz entry: the first byte picks a scale (1, 512, 4096 or 2^40 bytes), then the window
/// (start and length in scale units), then answers: a tag byte, then its argument if any.
pub fn alloc_seek(data: &[u8]) {
    let mut inp = Input(data);
    let scale: u64 = [1, 512, 4096, 1 << 40][usize::from(inp.u8() & 3)];
    let start = inp.u16().saturating_mul(scale);
    let end = start.saturating_add(inp.u16().saturating_mul(scale));
    let mut script = Vec::new();
    while !inp.0.is_empty() && script.len() < 4096 {
        let tag = inp.u8();
        let a = match tag % 10 {
            0 => Answer::Enxio,
            1 => Answer::Errno(
                [
                    libc::EINVAL,
                    libc::EOPNOTSUPP,
                    libc::EIO,
                    libc::ENXIO,
                    libc::EINTR,
                ][usize::from(tag / 10 % 5)],
            ),
            2 => Answer::Same,
            3 | 4 => Answer::Ahead(inp.u16().saturating_mul(scale)),
            5 => Answer::Ahead(inp.u16()),
            6 => Answer::Behind(inp.u16().saturating_mul(scale)),
            7 => Answer::PastEnd(inp.u16().saturating_mul(scale)),
            8 => Answer::Abs(inp.u64()),
            _ => Answer::Abs(u64::MAX - inp.u16()),
        };
        script.push(a);
    }
    let _ = check_script(start..end, &script);
}
