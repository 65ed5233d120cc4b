//! The page cache a buffered run on a disk leaves behind, kept bounded. [`Bounded`] wraps the
//! run's I/O backend and watches its buffered requests complete, on either side or both:
//!
//! - **Writes** to a disk through the page cache (`--no-direct`, or a file system without
//!   O_DIRECT): without a bound a large copy fills memory with dirty pages until the kernel
//!   throttles it, evicting everyone else's cache on the way, and the final flush then waits
//!   for all of them at once. Every [`WINDOW`] bytes written, writeback of them is started
//!   (`sync_file_range(WRITE)`, which does not wait); once two windows are in flight the
//!   older one is waited for (`sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`, so a write
//!   error surfaces here: the run fails as a failed flush, [`crate::Error::Flush`], exactly as
//!   it would at the final fdatasync) and its now clean pages are dropped
//!   (`POSIX_FADV_DONTNEED`). So at most about three windows of the run's data are in the
//!   page cache at any time, the device is kept writing from the start, and the final
//!   fdatasync (still the durability point) has little left to do.
//! - **Reads** from a disk through the page cache: the data is in the run's buffers once a
//!   read completes, so every [`READ_WINDOW`] bytes read the source's pages of those reads are
//!   dropped (`POSIX_FADV_DONTNEED`; the rest when the run ends), as `dd iflag=nocache` does.
//!   A copy then does not push everyone else's cache out with a volume read once, and the
//!   kernel hands the same few pages back to the next reads instead of finding new ones:
//!   measured on this machine's VM (whose free memory goes back to the host, so memory touched
//!   first costs a host fault: 0.4-3 GB/s), reading full4g buffered in 1 MiB reads took
//!   2.8-3.6 s (1.8-2.9 s of system time) keeping its pages, 1.3-1.4 s (0.25 s) dropping them.
//!
//! Memory-backed files are not wrapped: their pages are the data.

use crate::extent::ExtentMap;
use crate::sys;
use crate::uring::{BufferPool, Done, IoBackend, IoOp, Req};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Duration;

/// Where a failed writeback is left for the runner (the pipeline only sees a failed wait).
pub(crate) type Failure = Rc<RefCell<Option<io::Error>>>;

/// Bytes written between two writeback starts.
pub const WINDOW: u64 = 32 << 20;

/// Bytes read between two drops of the source's cached pages.
pub const READ_WINDOW: u64 = 8 << 20;

/// One buffered file of the run: its slot in the backend's file table, a descriptor of it,
/// the requests of the watched kind in flight to it (user_data -> offset) and what they
/// moved since the last window.
struct Watched {
    slot: usize,
    file: File,
    in_flight: HashMap<u64, u64>,
    fresh: ExtentMap,
}

impl Watched {
    fn new(slot: usize, file: File) -> Self {
        Watched {
            slot,
            file,
            in_flight: HashMap::new(),
            fresh: ExtentMap::new(),
        }
    }

    /// Notes `req` when it is of kind `op` on this file.
    fn push(&mut self, req: &Req, op: IoOp) {
        if req.file == self.slot && req.op == op {
            self.in_flight.insert(req.user_data, req.offset);
        }
    }

    /// Adds a completion of a watched request to `fresh`; true when it was one.
    fn done(&mut self, d: &Done) -> bool {
        match self.in_flight.remove(&d.user_data) {
            Some(offset) if d.result > 0 => {
                self.fresh.insert(offset..offset + d.result as u64);
                true
            }
            _ => false,
        }
    }

    /// Drops the cached pages of what `fresh` holds (advice: failures are ignored).
    fn drop_fresh(&mut self) {
        for r in std::mem::take(&mut self.fresh).iter() {
            let _ = sys::drop_cached(self.file.as_fd(), r.start, r.end - r.start);
        }
    }
}

/// An [`IoBackend`] that bounds the page cache of a buffered destination's writes and of a
/// buffered source's reads.
pub(crate) struct Bounded {
    inner: Box<dyn IoBackend>,
    /// The destination, written through the page cache, and its windows whose writeback
    /// started, oldest first.
    dst: Option<Watched>,
    started: VecDeque<ExtentMap>,
    /// The source, read through the page cache.
    src: Option<Watched>,
    failure: Failure,
}

impl Bounded {
    /// Wraps `inner`, watching nothing yet.
    pub(crate) fn new(inner: Box<dyn IoBackend>, failure: Failure) -> Self {
        Bounded {
            inner,
            dst: None,
            started: VecDeque::new(),
            src: None,
            failure,
        }
    }

    /// Bounds the dirty pages of the destination's buffered descriptor at `slot` of the file
    /// table (`file` is a duplicate of it).
    pub(crate) fn writes_to(mut self, slot: usize, file: File) -> Self {
        self.dst = Some(Watched::new(slot, file));
        self
    }

    /// Drops behind the reads of the source's buffered descriptor at `slot` of the file
    /// table (`file` is a duplicate of it).
    pub(crate) fn reads_from(mut self, slot: usize, file: File) -> Self {
        self.src = Some(Watched::new(slot, file));
        self
    }

    /// A destination window is full: start its writeback, then finish and drop the older.
    fn next_window(&mut self) -> io::Result<()> {
        let Some(dst) = self.dst.as_mut() else {
            return Ok(());
        };
        if dst.fresh.total_len() < WINDOW {
            return Ok(());
        }
        let window = std::mem::take(&mut dst.fresh);
        for r in window.iter() {
            sys::start_writeback(dst.file.as_fd(), r.start, r.end - r.start)?;
        }
        self.started.push_back(window);
        if self.started.len() > 1 {
            let old = self.started.pop_front().expect("two windows");
            for r in old.iter() {
                sys::finish_writeback(dst.file.as_fd(), r.start, r.end - r.start)?;
                let _ = sys::drop_cached(dst.file.as_fd(), r.start, r.end - r.start);
            }
        }
        Ok(())
    }
}

impl IoBackend for Bounded {
    fn pool(&self) -> &BufferPool {
        self.inner.pool()
    }

    fn pool_mut(&mut self) -> &mut BufferPool {
        self.inner.pool_mut()
    }

    fn push(&mut self, req: Req) -> io::Result<()> {
        self.inner.push(req)?;
        // Noted once pushed: a refused request leaves nothing behind to match a later one.
        if let Some(dst) = self.dst.as_mut() {
            dst.push(&req, IoOp::Write);
        }
        if let Some(src) = self.src.as_mut() {
            src.push(&req, IoOp::Read);
        }
        Ok(())
    }

    fn wait(&mut self, min: usize, timeout: Duration, out: &mut Vec<Done>) -> io::Result<()> {
        let from = out.len();
        self.inner.wait(min, timeout, out)?;
        for d in &out[from..] {
            if let Some(src) = self.src.as_mut() {
                if src.done(d) && src.fresh.total_len() >= READ_WINDOW {
                    src.drop_fresh();
                }
            }
            if self.dst.as_mut().is_some_and(|dst| dst.done(d)) {
                if let Err(e) = self.next_window() {
                    let again = io::Error::from(e.kind());
                    *self.failure.borrow_mut() = Some(e);
                    return Err(again);
                }
            }
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

impl Drop for Bounded {
    /// The last, partial read window is dropped too (the destination's last windows are the
    /// final fdatasync's).
    fn drop(&mut self) {
        if let Some(src) = self.src.as_mut() {
            src.drop_fresh();
        }
    }
}
