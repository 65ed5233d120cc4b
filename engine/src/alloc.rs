//! Allocation discovery: which byte ranges of a source hold data.
//!
//! Regular files are walked with SEEK_DATA/SEEK_HOLE, O(extents). A filesystem that does not
//! support them (EINVAL/EOPNOTSUPP on the first call) is treated as all data, as is a
//! filesystem that reports everything as data; zero detection during the copy then finds the
//! holes. Block devices are all data. Any other error fails the discovery: an error is never
//! read as "all holes".

use crate::endpoint::{Endpoint, Kind};
use crate::error::{Error, Result};
use crate::extent::ExtentMap;
use crate::sys;
use std::ops::Range;
use std::os::fd::AsFd;

/// The data ranges of `ep` inside `window` (absolute offsets in the file).
pub fn data_ranges(ep: &Endpoint, window: Range<u64>) -> Result<ExtentMap> {
    if window.is_empty() {
        return Ok(ExtentMap::new());
    }
    if ep.kind == Kind::Block {
        return Ok(ExtentMap::from_ranges([window]));
    }
    let fd = ep.file.as_fd();
    let mut map = ExtentMap::new();
    let mut pos = window.start;
    let mut first = true;
    while pos < window.end {
        let data = match sys::seek_data(fd, pos) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e)
                if first && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) =>
            {
                tracing::debug!(path = %ep.path.display(), "SEEK_DATA unsupported; treating as all data");
                return Ok(ExtentMap::from_ranges([window]));
            }
            Err(e) => return Err(Error::io("SEEK_DATA", &ep.path, pos, e)),
        };
        first = false;
        if data >= window.end {
            break;
        }
        let hole = match sys::seek_hole(fd, data) {
            Ok(Some(h)) => h,
            // The file shrank under us between the two calls: data runs to the window's end
            // as far as we know; the read will find the real end and fail loudly.
            Ok(None) => window.end,
            Err(e) => return Err(Error::io("SEEK_HOLE", &ep.path, data, e)),
        };
        if hole <= data {
            return Err(Error::io(
                "SEEK_HOLE",
                &ep.path,
                data,
                std::io::Error::other("filesystem reported a hole before the data it follows"),
            ));
        }
        map.insert(data.max(window.start)..hole.min(window.end));
        pos = hole;
    }
    Ok(map)
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
