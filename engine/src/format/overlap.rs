//! Host-range bookkeeping for an image walk: every structure and data range the walk finds in
//! the image file is recorded, and at the end no two may overlap (qemu's "corrupt image" rule:
//! metadata pointing into metadata, two L2 entries sharing a host cluster, ...).

use super::error::{ImageError, ImageResult};

/// Cap on recorded ranges (contiguous ranges coalesce, so a normal image records few).
pub const MAX_RANGES: usize = 4 << 20;

#[derive(Debug, Clone, Copy)]
struct Range {
    start: u64,
    end: u64,
    what: &'static str,
    /// Compressed data of several clusters may share a host sector; two compressed ranges
    /// may touch the same sector but must not overlap byte-wise.
    shared: bool,
}

/// Records host ranges and checks them for overlap.
#[derive(Debug, Default)]
pub struct HostRanges {
    ranges: Vec<Range>,
}

impl HostRanges {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `[start, start + len)` holding `what`. Coalesces with the previous range when
    /// contiguous and of the same kind.
    pub fn add(&mut self, what: &'static str, start: u64, len: u64) -> ImageResult<()> {
        self.push(what, start, len, false)
    }

    /// Records compressed data.
    pub fn add_shared(&mut self, what: &'static str, start: u64, len: u64) -> ImageResult<()> {
        self.push(what, start, len, true)
    }

    fn push(&mut self, what: &'static str, start: u64, len: u64, shared: bool) -> ImageResult<()> {
        if len == 0 {
            return Ok(());
        }
        let end = start
            .checked_add(len)
            .ok_or(ImageError::Overflow { what })?;
        if let Some(last) = self.ranges.last_mut() {
            if last.end == start && last.what == what && last.shared == shared {
                last.end = end;
                return Ok(());
            }
        }
        if self.ranges.len() >= MAX_RANGES {
            return Err(ImageError::TooFragmented { limit: MAX_RANGES });
        }
        self.ranges.push(Range {
            start,
            end,
            what,
            shared,
        });
        Ok(())
    }

    /// Errors on the first pair of overlapping ranges (two shared ranges may overlap).
    pub fn check(mut self) -> ImageResult<()> {
        self.ranges.sort_unstable_by_key(|r| (r.start, r.end));
        // Sorted by start: a range overlaps an earlier one iff it starts below the furthest end
        // reached so far (of exclusive ranges; of any range when it is exclusive itself).
        let mut far_any: Option<Range> = None;
        let mut far_excl: Option<Range> = None;
        for r in self.ranges {
            let hit = match (far_excl, far_any) {
                (Some(f), _) if r.start < f.end => Some(f),
                (_, Some(f)) if !r.shared && r.start < f.end => Some(f),
                _ => None,
            };
            if let Some(f) = hit {
                return Err(ImageError::Overlap {
                    a: f.what,
                    a_offset: f.start,
                    b: r.what,
                    b_offset: r.start,
                });
            }
            if far_any.is_none_or(|f| r.end > f.end) {
                far_any = Some(r);
            }
            if !r.shared && far_excl.is_none_or(|f| r.end > f.end) {
                far_excl = Some(r);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_ok_overlap_refused() {
        let mut h = HostRanges::new();
        h.add("a", 0, 10).unwrap();
        h.add("b", 20, 10).unwrap();
        h.add("a", 10, 5).unwrap();
        h.check().unwrap();
        let mut h = HostRanges::new();
        h.add("a", 0, 100).unwrap();
        h.add("b", 50, 10).unwrap();
        let e = h.check().unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
        let mut h = HostRanges::new();
        h.add("big", 0, 1000).unwrap();
        h.add("x", 10, 5).unwrap();
        h.add("y", 500, 5).unwrap();
        assert!(h.check().is_err());
        let mut h = HostRanges::new();
        h.add_shared("c", 0, 1024).unwrap();
        h.add_shared("c2", 512, 1024).unwrap();
        h.add("d", 2048, 10).unwrap();
        h.check().unwrap();
        let mut h = HostRanges::new();
        h.add_shared("c", 0, 1024).unwrap();
        h.add("d", 1000, 10).unwrap();
        assert!(h.check().is_err());
    }
}
