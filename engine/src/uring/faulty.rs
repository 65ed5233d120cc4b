//! A fault-injecting [`IoBackend`] wrapper for tests, modelled on SPDK's error bdev.
//!
//! [`FaultyBackend`] wraps any backend and applies [`Rule`]s to the requests pushed through it.
//! A rule matches by direction, by file offset range (the request overlaps it) and by position
//! among the requests it matches (`nth`), fires at most `times` times, and then does its
//! [`Action`]:
//! - `Fail(errno)`: the request never reaches the inner backend; it completes with `-errno`;
//! - `Short(k)`: the inner backend really transfers only the first `k` bytes and that is what
//!   is reported (`k == 0` completes with 0 bytes without touching the device). On an O_DIRECT
//!   file `k` must be a multiple of the logical block size, as a real device's would be (the
//!   kernel rejects the shortened request with EINVAL otherwise);
//! - `Hang`: the request is kept out of the inner backend and never completes (it still counts
//!   as in flight, so the caller's I/O timeout must fire). Its buffer was never marked busy, so
//!   dropping the backend with hung requests is safe;
//! - `Corrupt`: after a read completes, one byte of the buffer is flipped (the first byte of
//!   the rule's range inside the transfer, else the transfer's first byte).
//!
//! Rules and counters live in a shared [`Faults`], so a test keeps a handle, installs
//! [`Faults::hook`] as the `io_hook` of copy/wipe options, and reads [`Faults::stats`] after.
//! Rule state is shared by every backend the hook wraps (copy, then a verification scan).

use super::{BufferPool, Done, IoBackend, IoOp, Req};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which requests a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpMatch {
    /// Reads only.
    Read,
    /// Writes only.
    Write,
    /// Reads and writes.
    Any,
}

/// What a firing rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Complete with `-errno` without doing the I/O.
    Fail(i32),
    /// Transfer only this many bytes (really: the inner request is shortened).
    Short(usize),
    /// Never complete.
    Hang,
    /// Flip a byte of the buffer after the read completes (reads only).
    Corrupt,
    /// Send the write this many bytes away from where it was aimed (writes only): the
    /// misdirected write a device or driver bug produces, which a plain copy cannot see.
    Misdirect(i64),
}

/// One injection rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Direction matched.
    pub op: OpMatch,
    /// File offset range the request must overlap (`None`: any offset).
    pub range: Option<Range<u64>>,
    /// Fire from the `nth` matching request on (1-based; `None` = from the first).
    pub nth: Option<u64>,
    /// Fire at most this many times (`None`: every time).
    pub times: Option<u64>,
    /// What to do.
    pub action: Action,
}

impl Rule {
    /// A rule matching every request of `op`, doing `action` every time.
    pub fn new(op: OpMatch, action: Action) -> Self {
        Rule {
            op,
            range: None,
            nth: None,
            times: None,
            action,
        }
    }

    /// Only requests overlapping `range` (file offsets).
    pub fn in_range(mut self, range: Range<u64>) -> Self {
        self.range = Some(range);
        self
    }

    /// Only requests overlapping byte `offset`.
    pub fn at(self, offset: u64) -> Self {
        self.in_range(offset..offset + 1)
    }

    /// Start firing at the `n`th matching request (1-based).
    pub fn nth(mut self, n: u64) -> Self {
        self.nth = Some(n);
        self
    }

    /// Fire at most `n` times.
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, req: &Req) -> bool {
        let op_ok = match self.op {
            OpMatch::Any => true,
            OpMatch::Read => req.op == IoOp::Read,
            OpMatch::Write => req.op == IoOp::Write,
        };
        let range_ok = self.range.as_ref().is_none_or(|r| {
            let end = req.offset + req.len as u64;
            req.offset < r.end && r.start < end
        });
        let action_ok = match self.action {
            Action::Corrupt => req.op == IoOp::Read,
            Action::Misdirect(_) => req.op == IoOp::Write,
            // A request no longer than k would not be short: it does not count.
            Action::Short(k) => k < req.len,
            _ => true,
        };
        op_ok && range_ok && action_ok
    }
}

#[derive(Debug)]
struct RuleState {
    rule: Rule,
    seen: u64,
    fired: u64,
}

/// Counters of what was injected (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests pushed through any faulty backend.
    pub requests: u64,
    /// Requests failed with an errno.
    pub failed: u64,
    /// Requests shortened.
    pub shortened: u64,
    /// Requests hung (never completed).
    pub hung: u64,
    /// Reads whose buffer had a byte flipped.
    pub corrupted: u64,
}

/// Shared rules and counters; cheap to clone through `Arc`.
#[derive(Debug)]
pub struct Faults {
    rules: Mutex<Vec<RuleState>>,
    requests: AtomicU64,
    failed: AtomicU64,
    shortened: AtomicU64,
    hung: AtomicU64,
    corrupted: AtomicU64,
}

impl Faults {
    /// A rule set; rules are tried in order and the first that fires wins.
    pub fn new(rules: Vec<Rule>) -> Arc<Self> {
        Arc::new(Faults {
            rules: Mutex::new(
                rules
                    .into_iter()
                    .map(|rule| RuleState {
                        rule,
                        seen: 0,
                        fired: 0,
                    })
                    .collect(),
            ),
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            shortened: AtomicU64::new(0),
            hung: AtomicU64::new(0),
            corrupted: AtomicU64::new(0),
        })
    }

    /// An `io_hook` for copy/wipe options that wraps each backend in a [`FaultyBackend`].
    pub fn hook(self: &Arc<Self>) -> crate::options::IoHook {
        let faults = Arc::clone(self);
        Arc::new(move |inner| Box::new(FaultyBackend::new(inner, Arc::clone(&faults))))
    }

    /// What was injected so far.
    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            shortened: self.shortened.load(Ordering::Relaxed),
            hung: self.hung.load(Ordering::Relaxed),
            corrupted: self.corrupted.load(Ordering::Relaxed),
        }
    }

    /// The action for `req`, if a rule fires (and the counters of that rule advance).
    fn decide(&self, req: &Req) -> Option<(Action, Option<Range<u64>>)> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for st in rules.iter_mut() {
            if !st.rule.matches(req) {
                continue;
            }
            st.seen += 1;
            if st.seen < st.rule.nth.unwrap_or(1) || st.rule.times.is_some_and(|t| st.fired >= t) {
                continue;
            }
            st.fired += 1;
            return Some((st.rule.action, st.rule.range.clone()));
        }
        None
    }
}

/// A pushed request as the wrapper remembers it.
struct Pending {
    req: Req,
    /// File offset of the byte to flip after the read (Corrupt).
    corrupt_at: Option<u64>,
}

/// Wraps a backend and injects the faults of a [`Faults`].
pub struct FaultyBackend {
    inner: Box<dyn IoBackend>,
    faults: Arc<Faults>,
    /// Requests handed to the inner backend, by our token (their `user_data` there).
    pending: HashMap<u64, Pending>,
    next_token: u64,
    /// Injected completions not yet returned.
    ready: VecDeque<Done>,
    /// Requests that will never complete.
    hung: Vec<Req>,
}

impl FaultyBackend {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn IoBackend>, faults: Arc<Faults>) -> Self {
        FaultyBackend {
            inner,
            faults,
            pending: HashMap::new(),
            next_token: 0,
            ready: VecDeque::new(),
            hung: Vec::new(),
        }
    }

    fn push_inner(&mut self, mut req: Req, corrupt_at: Option<u64>) -> io::Result<()> {
        let token = self.next_token;
        self.next_token += 1;
        let orig = req;
        req.user_data = token;
        self.inner.push(req)?;
        self.pending.insert(
            token,
            Pending {
                req: orig,
                corrupt_at,
            },
        );
        Ok(())
    }

    fn finish(&mut self, d: Done, out: &mut Vec<Done>) {
        let Some(p) = self.pending.remove(&d.user_data) else {
            return;
        };
        if let Some(at) = p.corrupt_at {
            if d.result > 0 {
                let got = d.result as u64;
                let rel = at
                    .checked_sub(p.req.offset)
                    .filter(|r| *r < got)
                    .unwrap_or(0);
                let i = p.req.buf_off + rel as usize;
                // The completion was reaped, so the inner pool considers the buffer idle.
                let buf = self.inner.pool_mut().get_mut(p.req.buf);
                buf[i] ^= 0xA5;
                self.faults.corrupted.fetch_add(1, Ordering::Relaxed);
            }
        }
        out.push(Done {
            user_data: p.req.user_data,
            result: d.result,
        });
    }
}

impl IoBackend for FaultyBackend {
    fn pool(&self) -> &BufferPool {
        self.inner.pool()
    }

    fn pool_mut(&mut self) -> &mut BufferPool {
        self.inner.pool_mut()
    }

    fn push(&mut self, req: Req) -> io::Result<()> {
        match self.faults.decide(&req) {
            None => self.push_inner(req, None),
            Some((Action::Fail(errno), _)) => {
                self.faults.failed.fetch_add(1, Ordering::Relaxed);
                self.ready.push_back(Done {
                    user_data: req.user_data,
                    result: -errno,
                });
                Ok(())
            }
            Some((Action::Short(0), _)) => {
                self.faults.shortened.fetch_add(1, Ordering::Relaxed);
                self.ready.push_back(Done {
                    user_data: req.user_data,
                    result: 0,
                });
                Ok(())
            }
            Some((Action::Short(k), _)) => {
                self.faults.shortened.fetch_add(1, Ordering::Relaxed);
                let mut short = req;
                short.len = k;
                // Remember the full request for user_data; the result reports what was done.
                self.push_inner(short, None)
            }
            Some((Action::Hang, _)) => {
                self.faults.hung.fetch_add(1, Ordering::Relaxed);
                self.hung.push(req);
                Ok(())
            }
            Some((Action::Corrupt, range)) => {
                let at = range.map_or(req.offset, |r| r.start.max(req.offset));
                self.push_inner(req, Some(at))
            }
            Some((Action::Misdirect(delta), _)) => {
                let mut moved = req;
                moved.offset = req.offset.saturating_add_signed(delta);
                self.push_inner(moved, None)
            }
        }
    }

    fn wait(&mut self, min: usize, timeout: Duration, out: &mut Vec<Done>) -> io::Result<()> {
        let ready = self.ready.len();
        let mut got = Vec::new();
        if self.inner.in_flight() > 0 {
            let inner_min = min.saturating_sub(ready);
            self.inner.wait(inner_min, timeout, &mut got)?;
        } else if ready < min && !self.hung.is_empty() {
            // Only hung requests left: a real device that never answers makes the caller wait
            // for the whole timeout.
            std::thread::sleep(timeout);
        }
        out.extend(self.ready.drain(..));
        for d in got {
            self.finish(d, out);
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.ready.len() + self.hung.len()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}
