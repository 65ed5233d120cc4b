//! Opening and probing what the engine reads from and writes to: a regular file or a block
//! device, with a buffered descriptor always and an O_DIRECT one where the file allows it.

use crate::error::{Error, Result};
use crate::sys;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Alignment used for O_DIRECT on regular files (covers every common filesystem block size).
pub const FILE_DIRECT_ALIGN: u64 = 4096;

/// What an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A regular file.
    File,
    /// A block device.
    Block,
}

/// An opened file or block device.
#[derive(Debug)]
pub struct Endpoint {
    /// The path it was opened by.
    pub path: PathBuf,
    /// File or block device.
    pub kind: Kind,
    /// Buffered descriptor (always present).
    pub file: File,
    /// O_DIRECT descriptor, when the file or device accepts it and it was asked for.
    pub direct: Option<File>,
    /// Size in bytes (file length or device capacity).
    pub size: u64,
    /// Alignment O_DIRECT I/O needs here (offsets, lengths and buffer addresses).
    pub align: u64,
    /// (st_dev, st_ino) of a file, (0, st_rdev) of a device: identifies "the same file".
    pub identity: (u64, u64),
}

/// How to open.
#[derive(Debug, Clone, Copy)]
pub struct OpenMode {
    /// Open for writing too.
    pub write: bool,
    /// Create a regular file when missing.
    pub create: bool,
    /// Also try an O_DIRECT descriptor.
    pub direct: bool,
    /// Refuse a block device that is mounted or held exclusively (O_EXCL).
    pub exclusive: bool,
}

/// How long an exclusive open of a block device is retried while it is busy.
const EXCL_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

impl Endpoint {
    /// Opens and probes `path`.
    pub fn open(path: &Path, mode: OpenMode) -> Result<Endpoint> {
        let what = if mode.write {
            "open for writing"
        } else {
            "open"
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(mode.write);
        if mode.create {
            opts.create(true);
        }
        let meta_before = std::fs::metadata(path).ok();
        let is_block = meta_before
            .as_ref()
            .is_some_and(|m| m.file_type().is_block_device());
        if is_block && mode.exclusive {
            opts.custom_flags(libc::O_EXCL);
        }
        // An exclusive open can meet the O_EXCL claim of a job that just returned: io_uring
        // drops its registered files asynchronously after the ring is gone. That claim goes
        // within milliseconds; a mount or another program's claim stays: ask again for a
        // bounded moment before calling the device in use.
        let mut open = opts.open(path);
        let deadline = std::time::Instant::now() + EXCL_RETRY;
        while is_block
            && mode.exclusive
            && matches!(&open, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
            open = opts.open(path);
        }
        let file = open.map_err(|e| {
            if is_block && e.raw_os_error() == Some(libc::EBUSY) {
                Error::invalid(format!(
                    "{} is in use (mounted or held by another program)",
                    path.display()
                ))
            } else {
                Error::open(what, path, e)
            }
        })?;
        Self::probe(file, path, mode, path)
    }

    /// Opens `path` for reading as a job's source (a missing file is named as the source).
    pub fn open_source(path: &Path, direct: bool) -> Result<Endpoint> {
        Self::open(
            path,
            OpenMode {
                write: false,
                create: false,
                direct,
                exclusive: false,
            },
        )
        .map_err(|e| match e {
            Error::Open { path, source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::Open {
                    op: "open source",
                    path,
                    source,
                }
            }
            e => e,
        })
    }

    /// Wraps `file`, already open for reading (an image that was inspected through it), so
    /// that what is read is that very file whatever happens to `path` meanwhile. Its O_DIRECT
    /// descriptor is opened through `/proc/self/fd`: the same inode, never the path again.
    pub fn from_open_file(file: File, path: &Path, direct: bool) -> Result<Endpoint> {
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let mode = OpenMode {
            write: false,
            create: false,
            direct,
            exclusive: false,
        };
        Self::probe(file, path, mode, &by_fd)
    }

    /// Wraps `file`, a new file open for writing that `path` names in messages (a
    /// [`crate::staged::Staged`] output); its O_DIRECT descriptor is opened by `reopen`.
    pub fn from_new_file(file: File, path: &Path, reopen: &Path, direct: bool) -> Result<Endpoint> {
        let mode = OpenMode {
            write: true,
            create: false,
            direct,
            exclusive: false,
        };
        Self::probe(file, path, mode, reopen)
    }

    /// Probes the opened `file` (named `path` in messages); `reopen` is what the O_DIRECT
    /// descriptor is opened by.
    fn probe(file: File, path: &Path, mode: OpenMode, reopen: &Path) -> Result<Endpoint> {
        let what = if mode.write {
            "open for writing"
        } else {
            "open"
        };
        let meta = file.metadata().map_err(|e| Error::open("stat", path, e))?;
        let ft = meta.file_type();
        let (kind, size, align, identity) = if ft.is_file() {
            (
                Kind::File,
                meta.len(),
                FILE_DIRECT_ALIGN,
                (meta.dev(), meta.ino()),
            )
        } else if ft.is_block_device() {
            let size = sys::block_device_size(file.as_fd())
                .map_err(|e| Error::open("get the size of", path, e))?;
            if mode.write
                && sys::block_device_read_only(file.as_fd())
                    .map_err(|e| Error::open("query read-only state of", path, e))?
            {
                return Err(Error::open(
                    what,
                    path,
                    std::io::Error::from_raw_os_error(libc::EROFS),
                ));
            }
            let lbs = sys::logical_block_size(file.as_fd())
                .map_err(|e| Error::open("get the sector size of", path, e))?;
            (
                Kind::Block,
                size,
                u64::from(lbs).max(FILE_DIRECT_ALIGN),
                (0, meta.rdev()),
            )
        } else if ft.is_dir() {
            return Err(Error::invalid(format!("{} is a directory", path.display())));
        } else {
            return Err(Error::invalid(format!(
                "{} is neither a regular file nor a block device",
                path.display()
            )));
        };
        let direct = if mode.direct {
            let mut d = OpenOptions::new();
            d.read(true).write(mode.write).custom_flags(libc::O_DIRECT);
            // EINVAL: the filesystem has no O_DIRECT (tmpfs); fall back to buffered I/O.
            d.open(reopen).ok()
        } else {
            None
        };
        Ok(Endpoint {
            path: path.to_path_buf(),
            kind,
            file,
            direct,
            size,
            align,
            identity,
        })
    }

    /// True for a block device.
    pub fn is_block(&self) -> bool {
        self.kind == Kind::Block
    }

    /// Flushes written data to stable storage.
    pub fn sync(&self) -> Result<()> {
        sys::fdatasync(self.file.as_fd()).map_err(|source| Error::Flush {
            path: self.path.clone(),
            source,
        })
    }
}

/// A byte window of a file or block device (drivers: an LV segment on a PV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The file or device.
    pub path: PathBuf,
    /// Where the window starts.
    pub offset: u64,
    /// Its length; `None` for "to the end" (source) or "the source's length" (destination).
    pub len: Option<u64>,
}

impl Window {
    /// The whole file or device.
    pub fn whole(path: impl Into<PathBuf>) -> Self {
        Window {
            path: path.into(),
            offset: 0,
            len: None,
        }
    }

    /// `len` bytes at `offset`.
    pub fn range(path: impl Into<PathBuf>, offset: u64, len: u64) -> Self {
        Window {
            path: path.into(),
            offset,
            len: Some(len),
        }
    }

    /// The whole file or device (no offset, no length).
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.len.is_none()
    }

    /// The window's length on the opened `ep`: its `len`, or up to the end; fails when the
    /// window does not fit.
    pub fn len_on(&self, ep: &Endpoint) -> Result<u64> {
        if self.offset > ep.size {
            return Err(Error::invalid(format!(
                "offset {} is past the end of {} ({} bytes)",
                self.offset,
                self.path.display(),
                ep.size
            )));
        }
        let avail = ep.size - self.offset;
        match self.len {
            None => Ok(avail),
            Some(l) if l <= avail => Ok(l),
            Some(l) => Err(Error::invalid(format!(
                "range {}+{} runs past the end of {} ({} bytes)",
                self.offset,
                l,
                self.path.display(),
                ep.size
            ))),
        }
    }
}
