//! The io_uring backend: one ring, fixed files, fixed (registered) buffers and an in-flight table.
//!
//! Every SQE's `user_data` is a token indexing `table`; the table entry remembers the caller's
//! `user_data` and the buffer the kernel owns until the completion is reaped. Nothing else ever
//! goes into an SQE's `user_data`.

use super::{BufferPool, Done, IoBackend, IoOp, Req};
use io_uring::{opcode, squeue, types, IoUring};
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long `Drop` waits for cancelled requests before leaking their buffers.
const DRAIN_ON_DROP: Duration = Duration::from_secs(5);

struct InFlight {
    user_data: u64,
    buf: usize,
}

/// An io_uring with registered files and buffers.
pub struct UringBackend {
    ring: IoUring,
    // Kept open for as long as the ring refers to them by index.
    _files: Vec<File>,
    // ManuallyDrop: if the kernel still owns buffers when we are dropped, the memory is leaked
    // instead of unmapped (see Drop).
    pool: ManuallyDrop<BufferPool>,
    table: Vec<Option<InFlight>>,
    free_tokens: Vec<usize>,
    in_flight: usize,
    /// Buffers `0..fixed_buffers` are registered: use READ_FIXED/WRITE_FIXED on them (none when
    /// the pool is not registered; all but the zero buffer when it is).
    fixed_buffers: usize,
}

impl UringBackend {
    /// Sets up a ring sized for `queue_depth` requests in flight and registers `files` and,
    /// when `register_buffers`, every buffer of `pool` but its zero buffer (fixed buffers:
    /// pinned once, worth it for jobs that move many times the pool's size; small jobs skip
    /// the ~10 ms pinning and let each I/O pin its pages). On failure, hands `files` and `pool`
    /// back for a fallback.
    #[allow(clippy::result_large_err)]
    pub fn new(
        files: Vec<File>,
        queue_depth: u32,
        mut pool: BufferPool,
        register_buffers: bool,
    ) -> Result<Self, (io::Error, Vec<File>, BufferPool)> {
        let entries = queue_depth.max(8).next_power_of_two();
        let ring = match IoUring::builder()
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_cqsize(entries * 2)
            .build(entries)
        {
            Ok(r) => r,
            // Older kernels reject the optional flags: try a plain ring before giving up.
            Err(_) => match IoUring::builder().setup_cqsize(entries * 2).build(entries) {
                Ok(r) => r,
                Err(e) => return Err((e, files, pool)),
            },
        };
        let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
        if let Err(e) = ring.submitter().register_files(&fds) {
            return Err((e, files, pool));
        }
        if register_buffers {
            let iovecs = pool.iovecs();
            // SAFETY: the iovecs describe the pool's mapping, which this struct owns and keeps
            // mapped until the ring is gone (or leaks it, see Drop), so the registered memory
            // stays valid for the ring's whole life.
            if let Err(e) = unsafe { ring.submitter().register_buffers(&iovecs) } {
                return Err((e, files, pool));
            }
        }
        Ok(UringBackend {
            fixed_buffers: if register_buffers {
                pool.registrable()
            } else {
                0
            },
            ring,
            _files: files,
            pool: ManuallyDrop::new(pool),
            table: Vec::new(),
            free_tokens: Vec::new(),
            in_flight: 0,
        })
    }

    fn reap(&mut self, out: &mut Vec<Done>) {
        for cqe in self.ring.completion() {
            let token = cqe.user_data() as usize;
            let Some(entry) = self.table.get_mut(token).and_then(Option::take) else {
                // A completion for an AsyncCancel request (Drop): not a pipeline request.
                continue;
            };
            self.pool.mark_idle(entry.buf);
            self.free_tokens.push(token);
            self.in_flight -= 1;
            out.push(Done {
                user_data: entry.user_data,
                result: cqe.result(),
            });
        }
    }

    fn push_entry(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points at is a pool buffer marked busy
            // until its completion is reaped (see `push`/`reap`); the pool outlives the ring or
            // is leaked (Drop). Entries carry only a table token as user_data.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            // Submission queue full: hand what is queued to the kernel and retry.
            self.ring.submit()?;
        }
    }
}

impl IoBackend for UringBackend {
    fn pool(&self) -> &BufferPool {
        &self.pool
    }

    fn pool_mut(&mut self) -> &mut BufferPool {
        &mut self.pool
    }

    fn push(&mut self, req: Req) -> io::Result<()> {
        let len = u32::try_from(req.len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        assert!(req.buf_off + req.len <= self.pool.buf_size());
        assert!(
            req.op == IoOp::Write || Some(req.buf) != self.pool.zero_buffer(),
            "a read into the zero buffer"
        );
        let token = match self.free_tokens.pop() {
            Some(t) => t,
            None => {
                self.table.push(None);
                self.table.len() - 1
            }
        };
        let addr = self.pool.addr(req.buf, req.buf_off);
        let file = types::Fixed(req.file as u32);
        let entry = match (req.op, req.buf < self.fixed_buffers) {
            (IoOp::Read, true) => opcode::ReadFixed::new(file, addr, len, req.buf as u16)
                .offset(req.offset)
                .build(),
            (IoOp::Write, true) => opcode::WriteFixed::new(file, addr, len, req.buf as u16)
                .offset(req.offset)
                .build(),
            (IoOp::Read, false) => opcode::Read::new(file, addr, len)
                .offset(req.offset)
                .build(),
            (IoOp::Write, false) => opcode::Write::new(file, addr, len)
                .offset(req.offset)
                .build(),
        }
        .user_data(token as u64);
        if let Err(e) = self.push_entry(&entry) {
            self.free_tokens.push(token);
            return Err(e);
        }
        self.pool.mark_busy(req.buf);
        self.table[token] = Some(InFlight {
            user_data: req.user_data,
            buf: req.buf,
        });
        self.in_flight += 1;
        Ok(())
    }

    fn wait(&mut self, min: usize, timeout: Duration, out: &mut Vec<Done>) -> io::Result<()> {
        let min = min.min(self.in_flight);
        let res = if min == 0 {
            self.ring.submit().map(drop)
        } else {
            let ts = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(min, &args).map(drop)
        };
        match res {
            Ok(()) => {}
            // ETIME: the timeout passed; EINTR: a signal (Ctrl-C) — the caller looks at what
            // completed and at its cancel flag. EBUSY: completions must be reaped first.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        self.reap(out);
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn name(&self) -> &'static str {
        "io_uring"
    }
}

impl UringBackend {
    /// Drops the ring's references to the registered files now. Closing the ring releases them
    /// later, from a kernel worker: until then an O_EXCL-opened device stays "in use" and a
    /// filesystem holding a file cannot be unmounted, after the job has already returned.
    fn release_files(&mut self) {
        if let Err(e) = self.ring.submitter().unregister_files() {
            tracing::debug!(error = %e, "unregistering io_uring files failed");
        }
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            self.release_files();
            // SAFETY: nothing is in flight, so the kernel holds no pointer into the pool; it is
            // dropped exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.pool) };
            return;
        }
        // Cancel everything still in flight and wait (bounded) for the completions.
        let tokens: Vec<usize> = (0..self.table.len())
            .filter(|t| self.table[*t].is_some())
            .collect();
        let cancel_token = u64::MAX;
        for t in tokens {
            let entry = opcode::AsyncCancel::new(t as u64)
                .build()
                .user_data(cancel_token);
            if self.push_entry(&entry).is_err() {
                break;
            }
        }
        let deadline = Instant::now() + DRAIN_ON_DROP;
        let mut sink = Vec::new();
        while self.in_flight > 0 && Instant::now() < deadline {
            if self.wait(1, Duration::from_millis(100), &mut sink).is_err() {
                break;
            }
        }
        if self.in_flight == 0 {
            self.release_files();
            // SAFETY: every request completed, so the kernel holds no pointer into the pool.
            unsafe { ManuallyDrop::drop(&mut self.pool) };
        } else {
            tracing::error!(
                in_flight = self.in_flight,
                "io_uring requests did not complete after cancel; leaking their buffers"
            );
        }
    }
}
