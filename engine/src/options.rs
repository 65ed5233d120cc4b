//! What a job is asked to do and what it reports: [`CopyOptions`] (shared by copies, image
//! writes, compares and the option block of wipes), [`Checkpoint`], and the [`Summary`] every
//! copy returns. The lowest layer of the job API: it depends on nothing but the error type and
//! the I/O backend's trait (for the fault-injection seam).

use crate::error::{Error, Result};
use crate::tuning::{Shape, Tune};
use crate::uring;
use crate::zeroing::ZeroMode;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Smallest and largest block sizes accepted.
pub const MIN_BLOCK_SIZE: usize = 4096;
/// Largest block size accepted (64 MiB).
pub const MAX_BLOCK_SIZE: usize = 64 << 20;
/// Largest queue depth accepted.
pub const MAX_QUEUE_DEPTH: u32 = 1024;

/// A progress callback: (bytes done, bytes total).
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Wraps the I/O backend a job runs on: the seam for in-process fault injection in tests
/// (see `uring::faulty`). Production code leaves it unset.
pub type IoHook = Arc<dyn Fn(Box<dyn uring::IoBackend>) -> Box<dyn uring::IoBackend> + Send + Sync>;

/// Options of a copy.
#[derive(Clone)]
pub struct CopyOptions {
    /// Bytes per I/O (power of two, 4 KiB to 64 MiB).
    pub block_size: usize,
    /// I/Os in flight.
    pub queue_depth: u32,
    /// Use O_DIRECT where the file or device allows it.
    pub direct: bool,
    /// Allocate a destination file's data ranges before writing them (and the engine may
    /// also choose to where `tune.allocate`; see [`crate::tuning`]).
    pub allocate_first: bool,
    /// Which of `direct` and `queue_depth` the engine may choose from what the source and
    /// destination are ([`crate::tuning`]); the rest are used as given.
    pub tune: Tune,
    /// The destination already reads as zeros: holes need no work.
    pub dest_zeroed: bool,
    /// Keep the source's allocation exactly: no zero detection.
    pub preserve_allocation: bool,
    /// Treat all-zero blocks read from the source as holes.
    pub detect_zeroes: bool,
    /// May overwrite an existing non-empty regular file.
    pub force: bool,
    /// fdatasync the destination before reporting success.
    pub sync: bool,
    /// Bytes per second, at most.
    pub bps_limit: Option<u64>,
    /// Set to stop the copy.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Called as bytes complete.
    pub progress: Option<ProgressFn>,
    /// An I/O that does not complete within this fails the copy.
    pub io_timeout: Duration,
    /// Test seam: wraps the I/O backend (fault injection).
    #[doc(hidden)]
    pub io_hook: Option<IoHook>,
    /// Make the copy resumable with this checkpoint (path-to-path jobs only).
    pub checkpoint: Option<Checkpoint>,
    /// After the final flush, read the destination back and check every written block
    /// against the CRC32C of the source bytes, and every other byte of the range is zero.
    pub verify: bool,
    /// Threads decoding compressed image units beside the ring (0: one per CPU; 1: on the
    /// pipeline thread).
    pub decode_threads: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            block_size: 1 << 20,
            queue_depth: 32,
            direct: true,
            allocate_first: false,
            tune: Tune::default(),
            dest_zeroed: false,
            preserve_allocation: false,
            detect_zeroes: true,
            force: false,
            sync: true,
            bps_limit: None,
            cancel: None,
            progress: None,
            io_timeout: Duration::from_secs(120),
            io_hook: None,
            checkpoint: None,
            verify: false,
            decode_threads: 0,
        }
    }
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("block_size", &self.block_size)
            .field("queue_depth", &self.queue_depth)
            .field("decode_threads", &self.decode_threads)
            .field("direct", &self.direct)
            .field("tune", &self.tune)
            .field("dest_zeroed", &self.dest_zeroed)
            .field("preserve_allocation", &self.preserve_allocation)
            .field("detect_zeroes", &self.detect_zeroes)
            .field("force", &self.force)
            .field("sync", &self.sync)
            .field("bps_limit", &self.bps_limit)
            .finish_non_exhaustive()
    }
}

impl CopyOptions {
    /// Checks sizes and limits.
    pub fn validate(&self) -> Result<()> {
        if !self.block_size.is_power_of_two()
            || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size)
        {
            return Err(Error::invalid(format!(
                "invalid block size {}: must be a power of two from 4 KiB to 64 MiB",
                self.block_size
            )));
        }
        if self.queue_depth == 0 || self.queue_depth > MAX_QUEUE_DEPTH {
            return Err(Error::invalid(format!(
                "invalid queue depth {}: must be 1 to {MAX_QUEUE_DEPTH}",
                self.queue_depth
            )));
        }
        if self.bps_limit == Some(0) {
            return Err(Error::invalid(
                "invalid bps limit 0: leave it unset for no limit",
            ));
        }
        Ok(())
    }

    /// Whether all-zero blocks read from the source become holes.
    pub(crate) fn zero_detection(&self) -> bool {
        self.detect_zeroes && !self.preserve_allocation
    }
}

/// What a copy did. Serialised as the CLI's `--json` summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Bytes of the volume (source window).
    pub logical_size: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Data bytes written to the destination.
    pub bytes_written: u64,
    /// Bytes made to read as zeros by zeroout/punch/zero-range/zero writes.
    pub bytes_zeroed: u64,
    /// Bytes left as holes (no I/O needed).
    pub bytes_skipped: u64,
    /// Data extents found in the source.
    pub extents: u64,
    /// Wall time, including discovery and the final flush.
    pub seconds: f64,
    /// Logical megabytes (10^6) per second.
    pub mb_per_s: f64,
    /// The I/O backend used ("io_uring" or "sync").
    pub backend: &'static str,
    /// Whether O_DIRECT was used on the (source, destination).
    pub direct: (bool, bool),
    /// The I/O shape the run chose and why ([`crate::tuning`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<Shape>,
    /// How holes were made to read as zeros (after fallbacks).
    pub zero_modes: Vec<ZeroMode>,
    /// With `verify`: bytes of the destination read back and proven (checksums and zeros).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_bytes: Option<u64>,
}

/// Where and how often a resumable copy records its progress (see [`crate::checkpoint`]).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The checkpoint file.
    pub path: PathBuf,
    /// Interval between checkpoints.
    pub interval: Duration,
}

/// True when cancellation was requested.
pub fn cancelled(flag: &Option<Arc<AtomicBool>>) -> bool {
    flag.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
}
