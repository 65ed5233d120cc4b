//! Where a job writes, and what that means for the bytes it does not write.
//!
//! - a new (or empty) regular file is created at the source's size and only data is written:
//!   holes stay holes;
//! - an existing non-empty regular file is only overwritten with `force`, and is then truncated
//!   and rebuilt the same way (as `cp` does);
//! - a block device (or a byte window of an existing file) must read back as zeros wherever the
//!   source has holes: BLKZEROOUT / PUNCH_HOLE / ZERO_RANGE / zero writes, whichever the target
//!   supports, unless the caller says it is already zeroed (`dest_zeroed`);
//! - a staged file ([`Staged`]) is a new unnamed file that appears at its path only when the
//!   caller publishes it after the job succeeded.
//!
//! Sparseness is decided by what the destination is, never by a setting of the source.

use crate::endpoint::{Endpoint, Kind, OpenMode, Window};
use crate::error::{Error, Result};
use crate::options::CopyOptions;
use crate::staged::Staged;
use crate::zeroing::ZeroMode;
use std::fs::File;
use std::path::Path;

/// Where a job writes.
#[derive(Debug, Clone)]
pub enum Destination<'a> {
    /// A file or device by path, whole or a byte window of it.
    Path(Window),
    /// A new file that appears at its path once complete ([`Staged::publish`], which the
    /// caller runs after the job succeeded).
    Staged(&'a Staged),
}

impl Destination<'_> {
    /// The whole file or device at `path`.
    pub fn path(path: impl Into<std::path::PathBuf>) -> Self {
        Destination::Path(Window::whole(path))
    }
}

/// An opened destination and how its holes are made to read as zeros.
pub(crate) struct Opened {
    pub(crate) ep: Endpoint,
    pub(crate) window: Window,
    pub(crate) mode: ZeroMode,
    pub(crate) created: bool,
    /// Truncate the whole file and rebuild it sparse.
    rebuild: bool,
    /// Opened by its path (a failed run that created it removes it); false for a staged file.
    by_path: bool,
}

impl Opened {
    /// Opens `to` for a job writing `len` bytes, checking it can take them.
    pub(crate) fn open(to: &Destination<'_>, len: u64, opts: &CopyOptions) -> Result<Opened> {
        let st = match to {
            Destination::Path(w) => return Self::open_window(w, len, opts),
            Destination::Staged(st) => st,
        };
        let file = dup(st.file(), st.out())?;
        let ep = Endpoint::from_new_file(file, st.out(), &st.reopen_path(), opts.direct)?;
        if ep.kind != Kind::File || ep.size != 0 {
            return Err(Error::invalid(format!(
                "staged output for {} is not a new empty file",
                st.out().display()
            )));
        }
        Ok(Opened {
            ep,
            window: Window::whole(st.out()),
            mode: ZeroMode::Leave,
            created: true,
            rebuild: true,
            by_path: false,
        })
    }

    /// Opens a window of a path (a whole path is created when missing).
    pub(crate) fn open_window(w: &Window, len: u64, opts: &CopyOptions) -> Result<Opened> {
        let existed = w.path.exists();
        let ep = Endpoint::open(
            &w.path,
            OpenMode {
                write: true,
                create: w.is_whole() && !existed,
                direct: opts.direct,
                // A whole device is claimed (refused when mounted or held); a byte window (an
                // LV's extents on a PV) shares the device with its neighbours' windows.
                exclusive: w.is_whole(),
            },
        )?;
        let need = w
            .offset
            .checked_add(len)
            .ok_or_else(|| Error::invalid("range overflows"))?;
        if let Some(wl) = w.len {
            if wl < len {
                return Err(Error::invalid(format!(
                    "destination range of {} is {wl} bytes, smaller than the source ({len} bytes)",
                    w.path.display()
                )));
            }
        }
        let (mode, rebuild) = match ep.kind {
            Kind::Block => {
                if need > ep.size {
                    return Err(Error::invalid(format!(
                        "destination {} ({} bytes) is smaller than the source ({len} bytes)",
                        w.path.display(),
                        ep.size.saturating_sub(w.offset)
                    )));
                }
                (
                    if opts.dest_zeroed {
                        ZeroMode::Leave
                    } else if opts.preserve_allocation {
                        // Thick: keep every block allocated.
                        ZeroMode::Zeroout
                    } else {
                        // Unmap-allowed write-zeroes: a thin device keeps its holes.
                        ZeroMode::Punch
                    },
                    false,
                )
            }
            Kind::File if w.is_whole() => {
                if existed && ep.size > 0 && !opts.force {
                    return Err(Error::invalid(format!(
                        "destination {} exists and is not empty (use --force to overwrite it)",
                        w.path.display()
                    )));
                }
                (ZeroMode::Leave, true)
            }
            Kind::File => {
                if need > ep.size {
                    return Err(Error::invalid(format!(
                        "destination range {}+{len} runs past the end of {} ({} bytes)",
                        w.offset,
                        w.path.display(),
                        ep.size
                    )));
                }
                let mode = if opts.dest_zeroed {
                    ZeroMode::Leave
                } else if opts.preserve_allocation {
                    ZeroMode::ZeroRange
                } else {
                    ZeroMode::Punch
                };
                (mode, false)
            }
        };
        Ok(Opened {
            ep,
            window: w.clone(),
            mode,
            created: !existed,
            rebuild,
            by_path: true,
        })
    }

    /// Makes a whole-file destination a sparse file of `len` bytes (called after the same-file
    /// check, so a source is never truncated).
    pub(crate) fn prepare(&mut self, len: u64) -> Result<()> {
        if self.rebuild {
            let path = &self.window.path;
            self.ep
                .file
                .set_len(0)
                .and_then(|_| self.ep.file.set_len(len))
                .map_err(|e| Error::io("set the size of", path, len, e))?;
        }
        Ok(())
    }

    /// The whole file is rebuilt sparse: before the run, every byte of it is a hole.
    pub(crate) fn rebuilt(&self) -> bool {
        self.rebuild
    }

    pub(crate) fn discard_if_failed<T>(&self, res: &Result<T>) {
        if res.is_err() && self.created && self.by_path {
            // A file we created holds a partial copy: remove it so nothing half-done looks
            // like a volume.
            let _ = std::fs::remove_file(&self.window.path);
        }
    }
}

pub(crate) fn dup(f: &File, path: &Path) -> Result<File> {
    f.try_clone()
        .map_err(|e| Error::open("duplicate descriptor of", path, e))
}
