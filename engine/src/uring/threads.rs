//! A backend of worker threads running positioned reads and writes, for runs whose files all
//! live in memory (tmpfs, ramfs) and go through the page cache.
//!
//! There io_uring cannot complete a request inline: every buffered read and write of a tmpfs
//! file is handed to an io-wq worker (seen with `perf`: `io_wq_submit_work` under both), and
//! writes to one file queue behind one worker. A few plain threads do the same work without
//! the hand-off.
//!
//! **A buffer's requests run on one worker** (buffer `b` on worker `b % workers`): its read and
//! then its write run on the same thread, so the bytes just read are still in that core's
//! cache when they are written, and one worker's read overlaps another's write (writes to a
//! tmpfs file take its inode lock, so they take turns). 2 GiB tmpfs file to tmpfs file on this
//! 2-core VM, two workers, depth 4 of 1 MiB, nine rounds in turn, medians (two sets): reads on
//! one thread and writes on another 1.375 s and 2.902 s (its worst round 4.3 s), a buffer's
//! requests on one worker 0.823 s and 0.845 s (worst 1.56 s), `cp` 1.175 s and 1.140 s; 1 GiB
//! of data in 4 GiB: 0.449 s, 0.394 s and 0.418 s. Two plain threads each reading and writing
//! their own 1 MiB chunks (no engine at all) took 0.892 s and 1.083 s in the same rounds.
//!
//! The contract is the ring's (see [`super`]): a pushed request owns its buffer until
//! [`IoBackend::wait`] returns its completion; dropping the backend waits for the requests
//! already handed to the workers (each a single `pread`/`pwrite` on a memory file).

use super::{kernel_result, BufferPool, Done, IoBackend, IoOp, Req};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests of at most this many bytes run at once on the caller's thread: handing one to a
/// worker and waking the caller for its completion costs two context switches (measured with
/// the `pipeline` criterion bench: 4 KiB requests cost ~18 µs of CPU each through workers).
const INLINE_MAX: usize = 64 << 10;

/// One request and where its bytes are.
struct Work {
    req: Req,
    /// Byte `req.buf_off` of pool buffer `req.buf`.
    addr: *mut u8,
}

// SAFETY: `addr` points into the backend's buffer pool, which outlives every worker (the
// backend joins them before its pool is dropped), and the buffer is marked in flight from
// `push` until its completion comes back from `wait`, so nothing else touches it meanwhile.
unsafe impl Send for Work {}

/// Runs requests on worker threads with `pread`/`pwrite`, each buffer's on one worker.
pub struct ThreadBackend {
    /// Each worker's queue; emptied on drop, which ends the workers once their queues are
    /// drained.
    work: Vec<Sender<Work>>,
    done: Receiver<(Done, usize)>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    /// Completions of the small requests run at once on the caller's thread.
    inline: VecDeque<Done>,
    files: Arc<Vec<File>>,
    /// Dropped after the workers are joined (see `Drop`).
    pool: BufferPool,
}

impl ThreadBackend {
    /// A backend over `files` using `pool`, with `threads` workers (at least two); the
    /// requests naming buffer `b` run on worker `b % threads`, in the order pushed.
    pub fn new(files: Vec<File>, pool: BufferPool, threads: usize) -> io::Result<Self> {
        let files = Arc::new(files);
        let (done_tx, done) = mpsc::channel();
        let mut work = Vec::new();
        let mut workers = Vec::new();
        for i in 0..threads.max(2) {
            let (tx, rx) = mpsc::channel::<Work>();
            let (files, done) = (files.clone(), done_tx.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("ember-io-{i}"))
                    .spawn(move || worker(&files, &rx, &done))?,
            );
            work.push(tx);
        }
        Ok(ThreadBackend {
            work,
            done,
            workers,
            in_flight: 0,
            inline: VecDeque::new(),
            files,
            pool,
        })
    }

    fn returned(&mut self, (done, buf): (Done, usize), out: &mut Vec<Done>) {
        self.pool.mark_idle(buf);
        self.in_flight -= 1;
        out.push(done);
    }
}

/// A worker: runs requests until its queue is closed.
fn worker(files: &[File], work: &Receiver<Work>, done: &Sender<(Done, usize)>) {
    while let Ok(Work { req, addr }) = work.recv() {
        // SAFETY: the request's buffer is in flight, so it belongs to this request alone
        // until its completion is returned, and the pool outlives this thread (see `Work`);
        // `push` checked that `addr..addr + len` lies in it.
        let result = unsafe { run(files, &req, addr) };
        let d = Done {
            user_data: req.user_data,
            result,
        };
        if done.send((d, req.buf)).is_err() {
            return;
        }
    }
}

/// Runs `req` with its bytes at `addr`; the result as the kernel gives it (`-errno`).
///
/// # Safety
/// `addr..addr + req.len` must be valid memory that nothing else reads or writes meanwhile
/// (for a write, that nothing writes).
unsafe fn run(files: &[File], req: &Req, addr: *mut u8) -> i32 {
    let file = &files[req.file];
    let res = match req.op {
        // SAFETY: the caller's contract.
        IoOp::Read => file.read_at(
            unsafe { std::slice::from_raw_parts_mut(addr, req.len) },
            req.offset,
        ),
        // SAFETY: the caller's contract; a write only reads the buffer.
        IoOp::Write => file.write_at(
            unsafe { std::slice::from_raw_parts(addr.cast_const(), req.len) },
            req.offset,
        ),
    };
    kernel_result(res)
}

impl IoBackend for ThreadBackend {
    fn pool(&self) -> &BufferPool {
        &self.pool
    }

    fn pool_mut(&mut self) -> &mut BufferPool {
        &mut self.pool
    }

    fn push(&mut self, req: Req) -> io::Result<()> {
        let end = req.buf_off.checked_add(req.len);
        let into_zero_buffer = req.op == IoOp::Read && Some(req.buf) == self.pool.zero_buffer();
        if end.is_none_or(|e| e > self.pool.buf_size())
            || req.buf >= self.pool.count()
            || into_zero_buffer
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let addr = self.pool.addr(req.buf, req.buf_off);
        if req.len <= INLINE_MAX {
            // SAFETY: `addr..addr + len` lies in the request's buffer (checked above), and the
            // pipeline holds no reference into a buffer it pushes; it is used only here.
            let result = unsafe { run(&self.files, &req, addr) };
            self.inline.push_back(Done {
                user_data: req.user_data,
                result,
            });
            return Ok(());
        }
        // Only `Drop` empties the queues.
        let work = &self.work[req.buf % self.work.len()];
        self.pool.mark_busy(req.buf);
        if work.send(Work { req, addr }).is_err() {
            self.pool.mark_idle(req.buf);
            return Err(closed());
        }
        self.in_flight += 1;
        Ok(())
    }

    fn wait(&mut self, min: usize, timeout: Duration, out: &mut Vec<Done>) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut got = self.inline.len();
        out.extend(self.inline.drain(..));
        while let Ok(d) = self.done.try_recv() {
            self.returned(d, out);
            got += 1;
        }
        while got < min.min(self.in_flight + got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok(d) => {
                    self.returned(d, out);
                    got += 1;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return Err(closed()),
            }
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.in_flight + self.inline.len()
    }

    fn name(&self) -> &'static str {
        "threads"
    }
}

impl Drop for ThreadBackend {
    fn drop(&mut self) {
        // Closing the queue ends each worker after the requests already queued: then no
        // thread holds a pointer into the pool, which is dropped after this.
        self.work.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn closed() -> io::Error {
    io::Error::other("I/O worker threads stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through the workers; `INLINE_MAX / 2` runs on the caller's thread.
    const BIG: usize = INLINE_MAX * 2;

    fn backend(files: Vec<File>, threads: usize) -> ThreadBackend {
        ThreadBackend::new(files, BufferPool::new(4, BIG).unwrap(), threads).unwrap()
    }

    fn req(user_data: u64, op: IoOp, file: usize, buf: usize, offset: u64, len: usize) -> Req {
        Req {
            user_data,
            op,
            file,
            buf,
            buf_off: 0,
            len,
            offset,
        }
    }

    fn wait_all(be: &mut ThreadBackend, n: usize) -> Vec<(u64, i32)> {
        let mut out = Vec::new();
        while out.len() < n {
            be.wait(n - out.len(), Duration::from_secs(5), &mut out)
                .unwrap();
        }
        let mut r: Vec<_> = out.iter().map(|d| (d.user_data, d.result)).collect();
        r.sort();
        r
    }

    #[test]
    fn runs_reads_and_writes_on_workers_and_inline_and_returns_each_completion_once() {
        for len in [BIG, INLINE_MAX / 2] {
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("src");
            let data: Vec<u8> = (0..2 * len as u32).map(|i| (i % 251) as u8).collect();
            std::fs::write(&src, &data).unwrap();
            let dst = dir.path().join("dst");
            let files = vec![
                File::open(&src).unwrap(),
                File::create(&dst).unwrap(),
                File::open(&src).unwrap(),
            ];
            let mut be = backend(files, 2);
            let n = len as i32;
            be.push(req(1, IoOp::Read, 0, 0, 0, len)).unwrap();
            be.push(req(2, IoOp::Read, 0, 1, len as u64, len)).unwrap();
            // A write to a descriptor opened read-only: the errno comes back, negated.
            be.push(req(3, IoOp::Write, 2, 2, 0, len)).unwrap();
            assert_eq!(be.in_flight(), 3);
            let results = wait_all(&mut be, 3);
            assert_eq!(results, [(1, n), (2, n), (3, -libc::EBADF)]);
            assert_eq!(be.in_flight(), 0);
            assert_eq!(&be.pool().get(1)[..len], &data[len..]);
            be.push(req(4, IoOp::Write, 1, 1, len as u64, len)).unwrap();
            be.push(req(5, IoOp::Write, 1, 0, 0, len)).unwrap();
            assert_eq!(wait_all(&mut be, 2), [(4, n), (5, n)]);
            drop(be);
            assert_eq!(std::fs::read(&dst).unwrap(), data);
        }
    }

    #[test]
    #[should_panic(expected = "in flight")]
    fn a_buffer_in_flight_cannot_be_touched() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, vec![7u8; BIG]).unwrap();
        let mut be = backend(vec![File::open(&f).unwrap()], 2);
        be.push(req(1, IoOp::Read, 0, 0, 0, BIG)).unwrap();
        let _ = be.pool_mut().get_mut(0);
    }

    #[test]
    fn dropping_with_requests_in_flight_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, vec![1u8; 4 * BIG]).unwrap();
        let mut be = backend(vec![File::open(&f).unwrap()], 3);
        for i in 0..4 {
            be.push(req(i, IoOp::Read, 0, i as usize, i * BIG as u64, BIG))
                .unwrap();
        }
        drop(be);
    }

    #[test]
    fn bad_buffer_ranges_are_refused_before_any_io() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, [0u8; 4096]).unwrap();
        let mut be = backend(vec![File::open(&f).unwrap()], 2);
        let mut r = req(1, IoOp::Read, 0, 0, 0, BIG);
        r.buf_off = 1;
        assert!(be.push(r).is_err());
        assert!(be.push(req(2, IoOp::Read, 0, 9, 0, 4096)).is_err());
        assert_eq!(be.in_flight(), 0);
        // Nothing reads into a zero buffer.
        let pool = BufferPool::with_zero_buffer(1, BIG).unwrap();
        let mut be = ThreadBackend::new(vec![File::open(&f).unwrap()], pool, 2).unwrap();
        assert!(be.push(req(3, IoOp::Read, 0, 1, 0, 4096)).is_err());
        assert_eq!(be.in_flight(), 0);
    }
}
