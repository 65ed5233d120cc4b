//! I/O backends: the contract between the pipeline and the kernel.
//!
//! The pipeline talks to an [`IoBackend`]: it pushes positioned reads and writes that name a
//! registered file (by index) and a pool buffer (by index), then waits for completions.
//!
//! Contracts:
//! - **Ownership.** A buffer named by a pushed request belongs to the kernel until its completion
//!   has been returned by [`IoBackend::wait`]; the pool panics on any access to it before then.
//!   Several writes may share one buffer (the zero buffer); nothing ever reads into it.
//! - **user_data.** The pipeline's `user_data` is opaque to the backend and returned verbatim in
//!   [`Done`]. Internally the ring keys its in-flight table by its own token; the SQE carries the
//!   token, never a pointer.
//! - **Results.** `Done::result` is the kernel's: bytes transferred (possibly short) or `-errno`.
//!   Backends never retry; the pipeline decides what is retryable.
//! - **Cancellation.** Dropping a backend with requests in flight cancels them and waits for
//!   their completions (bounded); if the kernel still holds buffers after that, the buffer
//!   memory is leaked rather than freed under the kernel's feet.
//!
//! [`UringBackend`] is the real one (fixed buffers, fixed files); [`ThreadBackend`] runs the
//! requests on a few threads where every file is in memory and buffered (io_uring would hand
//! each to a worker anyway); [`SyncBackend`] runs them one by one with `pread`/`pwrite` where
//! io_uring is unavailable (e.g. blocked by seccomp).

mod buffer;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod faulty;
mod ring;
mod sync;
mod threads;

pub use buffer::BufferPool;
pub use ring::UringBackend;
pub use sync::SyncBackend;
pub use threads::ThreadBackend;

use std::fs::File;
use std::io;
use std::time::Duration;

/// Direction of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Read from the file into the buffer.
    Read,
    /// Write from the buffer to the file.
    Write,
}

/// One positioned I/O request.
#[derive(Debug, Clone, Copy)]
pub struct Req {
    /// Returned verbatim with the completion.
    pub user_data: u64,
    /// Read or write.
    pub op: IoOp,
    /// Index of the file in the backend's file table.
    pub file: usize,
    /// Index of the pool buffer.
    pub buf: usize,
    /// Offset inside the buffer.
    pub buf_off: usize,
    /// Bytes to transfer.
    pub len: usize,
    /// Offset in the file.
    pub offset: u64,
}

/// A completion.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    /// The request's `user_data`.
    pub user_data: u64,
    /// Bytes transferred, or `-errno`.
    pub result: i32,
}

/// A `pread`/`pwrite` outcome as a completion's result: bytes transferred, or `-errno`.
fn kernel_result(res: io::Result<usize>) -> i32 {
    match res {
        Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
        Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// Something that runs [`Req`]s against a file table with a buffer pool.
pub trait IoBackend {
    /// The buffer pool.
    fn pool(&self) -> &BufferPool;
    /// The buffer pool, mutably (only idle buffers can be touched).
    fn pool_mut(&mut self) -> &mut BufferPool;
    /// Queues a request. The caller keeps at most the backend's queue depth in flight.
    fn push(&mut self, req: Req) -> io::Result<()>;
    /// Submits queued requests and waits until at least `min` completions are available or
    /// `timeout` passes; appends what completed to `out` (possibly fewer than `min` on timeout).
    fn wait(&mut self, min: usize, timeout: Duration, out: &mut Vec<Done>) -> io::Result<()>;
    /// Requests pushed whose completions were not yet returned.
    fn in_flight(&self) -> usize;
    /// A short name for logs and summaries ("io_uring", "sync").
    fn name(&self) -> &'static str;
}

/// Builds the best backend available: io_uring, else the synchronous fallback.
///
/// `expected_bytes` is how much the job will move: the pool is registered with the ring (fixed
/// buffers) only when that is several times the pool's size, where pinning once pays off.
pub fn open_backend(
    files: Vec<File>,
    queue_depth: u32,
    pool: BufferPool,
    expected_bytes: u64,
) -> io::Result<Box<dyn IoBackend>> {
    let pool_bytes = (pool.registrable() * pool.buf_size()) as u64;
    let register = expected_bytes >= pool_bytes.saturating_mul(8);
    if std::env::var_os("EMBER_NO_URING").is_none() {
        match UringBackend::new(files, queue_depth, pool, register) {
            Ok(ring) => return Ok(Box::new(ring)),
            Err((e, files, pool)) => {
                tracing::warn!(error = %e, "io_uring unavailable; using pread/pwrite");
                return Ok(Box::new(SyncBackend::new(files, pool)));
            }
        }
    }
    Ok(Box::new(SyncBackend::new(files, pool)))
}
