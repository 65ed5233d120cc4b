//! How a range of a destination is made to read as zeros: the methods, the order in which one
//! falls back to the next when the target refuses it, and the one call each method is.
//! The pipeline (`pipeline/holes.rs`) applies them; copies choose the first from what the
//! destination is (`dest.rs`), wipes from the asked method (`wipe.rs`).

use crate::sys;
use std::io;
use std::os::fd::BorrowedFd;

/// How the destination is made to read zeros where the plan says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZeroMode {
    /// The destination already reads zeros there (new sparse file, `--dest-zeroed`).
    Leave,
    /// FALLOC_FL_PUNCH_HOLE | KEEP_SIZE (files).
    Punch,
    /// FALLOC_FL_ZERO_RANGE (files; stays allocated).
    ZeroRange,
    /// BLKZEROOUT (block devices).
    Zeroout,
    /// Write zeros through the ring from a shared zero buffer.
    Write,
}

impl ZeroMode {
    /// The next method to try when the target refuses this one. On a block device, punching
    /// is write-zeroes with unmapping allowed (thin devices and loop files give the space
    /// back), then BLKZEROOUT (the kernel writes zeros itself if it must); on files, punching
    /// then ZERO_RANGE; plain writes last.
    pub(crate) fn fallback(self, block: bool) -> ZeroMode {
        match self {
            ZeroMode::Punch if block => ZeroMode::Zeroout,
            ZeroMode::Punch => ZeroMode::ZeroRange,
            _ => ZeroMode::Write,
        }
    }

    /// Makes `len` bytes at `offset` of `fd` read as zeros with one call, for the methods
    /// that are one call (`Punch`, `ZeroRange`, `Zeroout`); the others are not calls.
    pub(crate) fn zero(self, fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
        match self {
            ZeroMode::Punch => sys::punch_hole(fd, offset, len),
            ZeroMode::ZeroRange => sys::zero_range(fd, offset, len),
            ZeroMode::Zeroout => sys::blk_zeroout(fd, offset, len),
            ZeroMode::Leave | ZeroMode::Write => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
}
