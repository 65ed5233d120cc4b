//! Where image bytes come from: a file (pread) or a byte slice (tests, fuzzing).

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use super::error::{ImageError, ImageResult};

/// Positioned, bounds-checked reads of an image.
pub trait ImageSource {
    /// Length of the image file in bytes.
    fn len(&self) -> u64;
    /// Bytes allocated on disk, when known.
    fn allocated(&self) -> Option<u64> {
        None
    }
    /// Reads exactly `buf.len()` bytes at `offset`; reading past the end is an error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> ImageResult<()>;

    /// Hints that the byte ranges `(offset, len)` will be read soon, so the reads can start
    /// now, all at once (a source without such a notion ignores it).
    fn prefetch(&self, _ranges: &[(u64, u64)]) {}

    /// True for an empty image.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads what exists of `buf.len()` bytes at `offset` and returns how many were read
    /// (fewer near the end of the file, zero past it).
    fn read_up_to(&self, offset: u64, buf: &mut [u8]) -> ImageResult<usize> {
        let len = self.len();
        if offset >= len {
            return Ok(0);
        }
        let n = (len - offset).min(buf.len() as u64) as usize;
        self.read_exact_at(offset, &mut buf[..n])?;
        Ok(n)
    }

    /// Reads `len` bytes at `offset` that make up `what`, checking the range first.
    fn read_struct(&self, what: &'static str, offset: u64, len: usize) -> ImageResult<Vec<u8>> {
        check_range(self.len(), what, offset, len as u64)?;
        let mut v = vec![0u8; len];
        self.read_exact_at(offset, &mut v)?;
        Ok(v)
    }
}

/// Errors unless `[offset, offset + len)` lies inside a file of `file_len` bytes.
pub fn check_range(file_len: u64, what: &'static str, offset: u64, len: u64) -> ImageResult<()> {
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(ImageError::PastEof {
            what,
            offset,
            len,
            file_len,
        }),
    }
}

impl ImageSource for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> ImageResult<()> {
        check_range(self.len() as u64, "read", offset, buf.len() as u64)?;
        let o = offset as usize;
        buf.copy_from_slice(&self[o..o + buf.len()]);
        Ok(())
    }
}

/// An image file read with pread.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
    allocated: Option<u64>,
}

impl FileSource {
    /// Wraps an open file (regular file or block device) of `len` bytes.
    pub fn new(file: File, len: u64) -> Self {
        let allocated = file
            .metadata()
            .ok()
            .filter(|m| m.file_type().is_file())
            .map(|m| m.blocks() * 512);
        FileSource {
            file,
            len,
            allocated,
        }
    }

    /// The open file (to go on reading the very file that was inspected).
    pub fn into_file(self) -> File {
        self.file
    }

    /// Opens `path` read-only and probes its size (block devices by seeking to the end).
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        let mut file = File::open(path)?;
        let len = file.seek(SeekFrom::End(0))?;
        Ok(Self::new(file, len))
    }
}

impl ImageSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn allocated(&self) -> Option<u64> {
        self.allocated
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> ImageResult<()> {
        check_range(self.len, "read", offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| ImageError::Read {
                offset,
                len: buf.len() as u64,
                source,
            })
    }
    fn prefetch(&self, ranges: &[(u64, u64)]) {
        // Readahead is queued by the kernel without waiting for it: scattered units are fetched
        // at the device's queue depth instead of one synchronous read at a time. Touching
        // ranges are merged; ranges with a gap between them are not (the gap may be large data
        // read later with O_DIRECT).
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for &(off, len) in ranges {
            match merged.last_mut() {
                Some(m) if off >= m.0 && off <= m.0 + m.1 + 4096 => {
                    m.1 = m.1.max(off + len - m.0);
                }
                _ => merged.push((off, len)),
            }
        }
        for (off, len) in merged {
            let _ = posix_fadvise(
                self.file.as_raw_fd(),
                off as i64,
                len as i64,
                PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }
}

/// Big-endian / little-endian field readers over a bounded header buffer. The buffer is always
/// at least as long as the fixed header, so the caller checks its length once.
pub(crate) fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(a)
}
pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
pub(crate) fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}
