//! Bounded writeback for runs that write a disk through the page cache (`--no-direct`, or a
//! file system without O_DIRECT): without it a large copy fills memory with dirty pages until
//! the kernel throttles it, evicting everyone else's cache on the way, and the final flush
//! then waits for all of them at once.
//!
//! [`Bounded`] wraps the run's I/O backend and watches the destination's buffered writes
//! complete. Every [`WINDOW`] bytes written it starts writeback of them
//! (`sync_file_range(WRITE)`, which does not wait); once two windows are in flight it waits
//! for the older one to reach the device (`sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER)`, so
//! a write error surfaces here: the run fails as a failed flush, [`crate::Error::Flush`],
//! exactly as it would at the final fdatasync) and drops its now clean pages
//! (`POSIX_FADV_DONTNEED`). So at most about three windows of the run's data are in the page
//! cache at any time, the device is kept writing from the start, and the final fdatasync
//! (still the durability point) has little left to do. Memory-backed destinations are not
//! wrapped: their pages are the data.

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

/// An [`IoBackend`] that bounds the dirty pages of one buffered destination.
pub(crate) struct Bounded {
    inner: Box<dyn IoBackend>,
    /// The destination's buffered slot in the file table, and a descriptor of it.
    slot: usize,
    file: File,
    /// Writes in flight to the slot: user_data -> offset.
    writes: HashMap<u64, u64>,
    /// Written, writeback not started.
    fresh: ExtentMap,
    /// Writeback started, oldest first.
    started: VecDeque<ExtentMap>,
    failure: Failure,
}

impl Bounded {
    /// Wraps `inner`, whose file table has the destination's buffered descriptor at `slot`
    /// (`file` is a duplicate of it).
    pub(crate) fn new(
        inner: Box<dyn IoBackend>,
        slot: usize,
        file: File,
        failure: Failure,
    ) -> Self {
        Bounded {
            failure,
            inner,
            slot,
            file,
            writes: HashMap::new(),
            fresh: ExtentMap::new(),
            started: VecDeque::new(),
        }
    }

    fn written(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.fresh.insert(offset..offset + len);
        if self.fresh.total_len() < WINDOW {
            return Ok(());
        }
        let window = std::mem::take(&mut self.fresh);
        for r in window.iter() {
            sys::start_writeback(self.file.as_fd(), r.start, r.end - r.start)?;
        }
        self.started.push_back(window);
        if self.started.len() > 1 {
            let old = self.started.pop_front().expect("two windows");
            for r in old.iter() {
                sys::finish_writeback(self.file.as_fd(), r.start, r.end - r.start)?;
                let _ = sys::drop_cached(self.file.as_fd(), r.start, r.end - r.start);
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
        if req.file == self.slot && matches!(req.op, IoOp::Write) {
            self.writes.insert(req.user_data, req.offset);
        }
        self.inner.push(req)
    }

    fn wait(&mut self, min: usize, timeout: Duration, out: &mut Vec<Done>) -> io::Result<()> {
        let from = out.len();
        self.inner.wait(min, timeout, out)?;
        for d in &out[from..] {
            if let Some(offset) = self.writes.remove(&d.user_data) {
                if d.result > 0 {
                    if let Err(e) = self.written(offset, d.result as u64) {
                        let again = io::Error::from(e.kind());
                        *self.failure.borrow_mut() = Some(e);
                        return Err(again);
                    }
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
