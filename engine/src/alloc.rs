//! Allocation discovery: which byte ranges of a source hold data.
//!
//! Regular files are walked with SEEK_DATA/SEEK_HOLE, O(extents). A filesystem that does not
//! support them (EINVAL/EOPNOTSUPP on the first call) is treated as all data, as is a
//! filesystem that reports everything as data; zero detection during the copy then finds the
//! holes. Any other error fails the discovery: an error is never read as "all holes".
//!
//! Block devices are all data, except a loop device over a regular file: a hole of its
//! backing file reads as zeros through the device, so the backing file is walked instead
//! (shifted by the device's offset in it), after the device's own dirty cached pages in the
//! window are written through to the file. The file is opened by the path the kernel names in
//! sysfs and used only if it is the very inode LOOP_GET_STATUS64 reports; anything unexpected
//! (another inode, a deleted file, a cryptoloop, a walk that fails) makes the rest of the
//! window data again, which is always correct, only slower. This is what makes an LV on a
//! loop-backed PV (devstack's volume group) or a loop-attached image copy at the pace of its
//! data instead of its size.

use crate::endpoint::{Endpoint, Kind};
use crate::error::{Error, Result};
use crate::extent::ExtentMap;
use crate::sys;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The two `lseek` questions the walk asks. Production uses [`FdSeeker`]; tests and the fuzz
/// harness inject odd answers (data beyond the end, holes before data, going backwards, errors)
/// to check that [`walk`] never loops, never leaves the window and never turns an error into
/// "all holes".
pub trait Seeker {
    /// The start of the next data at or after `offset`; `None` when there is none (ENXIO).
    fn seek_data(&mut self, offset: u64) -> io::Result<Option<u64>>;
    /// The start of the next hole at or after `offset`; `None` when `offset` is past the end.
    fn seek_hole(&mut self, offset: u64) -> io::Result<Option<u64>>;
}

/// The real seeker: `lseek(SEEK_DATA/SEEK_HOLE)` on a file descriptor.
pub struct FdSeeker<'a>(pub BorrowedFd<'a>);

impl Seeker for FdSeeker<'_> {
    fn seek_data(&mut self, offset: u64) -> io::Result<Option<u64>> {
        sys::seek_data(self.0, offset)
    }

    fn seek_hole(&mut self, offset: u64) -> io::Result<Option<u64>> {
        sys::seek_hole(self.0, offset)
    }
}

/// [`data_ranges`], each range handed to `found` as it is discovered.
pub fn data_ranges_each(
    ep: &Endpoint,
    window: Range<u64>,
    mut found: impl FnMut(Range<u64>),
) -> Result<()> {
    if window.is_empty() {
        return Ok(());
    }
    if ep.kind == Kind::Block {
        match LoopBacking::of(ep, &window) {
            Some(b) => b.walk(window, found),
            None => found(window),
        }
        return Ok(());
    }
    walk_each(&mut FdSeeker(ep.file.as_fd()), &ep.path, window, found)
}

/// The regular file behind a loop device, and where the device starts in it.
struct LoopBacking {
    file: File,
    path: PathBuf,
    offset: u64,
}

impl LoopBacking {
    /// The backing file of `ep` when it is a loop device whose holes can be trusted, with the
    /// device's dirty cached pages in `window` written through to it; `None` otherwise.
    fn of(ep: &Endpoint, window: &Range<u64>) -> Option<LoopBacking> {
        let rdev = ep.identity.1;
        if libc::major(rdev) != LOOP_MAJOR {
            return None;
        }
        let st = sys::loop_status(ep.file.as_fd()).ok()?;
        if st.transformed {
            return None;
        }
        let sysfs = crate::tuning::sys_block_dir(rdev).join("loop/backing_file");
        let path = PathBuf::from(std::fs::read_to_string(sysfs).ok()?.trim_end_matches('\n'));
        // O_NONBLOCK: whatever now sits at that path, opening it must not wait (a FIFO).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || (meta.dev(), meta.ino()) != (st.backing_dev, st.backing_ino) {
            tracing::debug!(device = %ep.path.display(), file = %path.display(),
                "loop device's backing file is not at its path any more; reading it all");
            return None;
        }
        // Pages written through the device's own page cache reach the file only at
        // writeback: push the window's out and wait, or the file would show holes there.
        if let Err(e) =
            sys::finish_writeback(ep.file.as_fd(), window.start, window.end - window.start)
        {
            tracing::warn!(device = %ep.path.display(), error = %e,
                "could not write the loop device's cached pages through; reading it all");
            return None;
        }
        tracing::debug!(device = %ep.path.display(), file = %path.display(), offset = st.offset,
            "allocation of a loop device learned from its backing file");
        Some(LoopBacking {
            file,
            path,
            offset: st.offset,
        })
    }

    /// Hands the data ranges of `window` (device offsets) to `found`; if the walk fails part
    /// way, the rest of the window is data.
    fn walk(&self, window: Range<u64>, mut found: impl FnMut(Range<u64>)) {
        let base = self.offset;
        let (Some(start), Some(end)) =
            (window.start.checked_add(base), window.end.checked_add(base))
        else {
            found(window);
            return;
        };
        let mut reported = window.start;
        let walked = walk_each(
            &mut FdSeeker(self.file.as_fd()),
            &self.path,
            start..end,
            |r| {
                let r = r.start - base..r.end - base;
                reported = r.end;
                found(r);
            },
        );
        if let Err(e) = walked {
            tracing::warn!(file = %self.path.display(), error = %e,
                "walking a loop device's backing file failed; the rest is read as data");
            if reported < window.end {
                found(reported..window.end);
            }
        }
    }
}

/// The block major of loop devices (linux/major.h).
const LOOP_MAJOR: u32 = 7;

/// The data ranges of `ep` inside `window` (absolute offsets in the file).
pub fn data_ranges(ep: &Endpoint, window: Range<u64>) -> Result<ExtentMap> {
    let mut map = ExtentMap::new();
    data_ranges_each(ep, window, |r| map.insert(r))?;
    Ok(map)
}

/// The SEEK_DATA/SEEK_HOLE walk over `window`, asking `seeker`; `path` only names errors.
///
/// Every step must move forward: data at or after the position asked, a hole strictly after
/// the data. An answer that goes backwards or reports an empty data run is an error (the
/// walk would otherwise loop or return a wrong map), so the walk ends after at most one step
/// per data run. Answers beyond the window are clipped to it. EINVAL/EOPNOTSUPP on the first
/// SEEK_DATA means the filesystem cannot answer: the window is all data. Any other error fails.
pub fn walk(seeker: &mut impl Seeker, path: &Path, window: Range<u64>) -> Result<ExtentMap> {
    let mut map = ExtentMap::new();
    walk_each(seeker, path, window, |r| map.insert(r))?;
    Ok(map)
}

/// [`walk`], handing each data range (ascending, disjoint, inside the window) to `found`
/// instead of collecting a map: what a plan is built from without holding the map too.
pub fn walk_each(
    seeker: &mut impl Seeker,
    path: &Path,
    window: Range<u64>,
    mut found: impl FnMut(Range<u64>),
) -> Result<()> {
    let mut pos = window.start;
    let mut first = true;
    while pos < window.end {
        let data = match seeker.seek_data(pos) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e)
                if first && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) =>
            {
                tracing::debug!(path = %path.display(), "SEEK_DATA unsupported; treating as all data");
                found(window);
                return Ok(());
            }
            Err(e) => return Err(Error::io("SEEK_DATA", path, pos, e)),
        };
        first = false;
        if data < pos {
            return Err(Error::io(
                "SEEK_DATA",
                path,
                pos,
                io::Error::other(format!(
                    "filesystem reported data at {data}, before the position asked"
                )),
            ));
        }
        if data >= window.end {
            break;
        }
        let hole = match seeker.seek_hole(data) {
            Ok(Some(h)) => h,
            // The file shrank under us between the two calls: data runs to the window's end
            // as far as we know; the read will find the real end and fail loudly.
            Ok(None) => window.end,
            Err(e) => return Err(Error::io("SEEK_HOLE", path, data, e)),
        };
        if hole <= data {
            return Err(Error::io(
                "SEEK_HOLE",
                path,
                data,
                io::Error::other("filesystem reported a hole before the data it follows"),
            ));
        }
        found(data.max(window.start)..hole.min(window.end));
        pos = hole;
    }
    Ok(())
}

/// The data ranges of the whole file or device at `path` (buffered open).
pub fn data_map(path: &Path) -> Result<ExtentMap> {
    let ep = Endpoint::open_source(path, false)?;
    data_ranges(&ep, 0..ep.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::OpenMode;
    use std::os::unix::fs::FileExt;

    #[test]
    fn finds_data_extents_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_at(&[1u8; 8192], 1 << 20).unwrap();
        f.write_at(&[2u8; 4096], 10 << 20).unwrap();
        f.sync_all().unwrap();
        let ep = Endpoint::open(
            &p,
            OpenMode {
                write: false,
                create: false,
                direct: false,
                exclusive: false,
            },
        )
        .unwrap();
        let m = data_ranges(&ep, 0..ep.size).unwrap();
        // Filesystems may round extents up to their block size; both ranges must be covered
        // and nothing far from them reported.
        assert!(m.contains_range((1 << 20)..(1 << 20) + 8192), "{m:?}");
        assert!(m.contains_range((10 << 20)..(10 << 20) + 4096), "{m:?}");
        assert!(m.total_len() < 1 << 20, "{m:?}");
        let clipped = data_ranges(&ep, (10 << 20)..(11 << 20)).unwrap();
        assert!(clipped
            .iter()
            .all(|r| r.start >= 10 << 20 && r.end <= 11 << 20));
    }
}
