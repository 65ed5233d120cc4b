//! Byte-range sets: the currency of the copy engine.
//!
//! An [`ExtentMap`] is a set of bytes stored as sorted, disjoint, coalesced half-open ranges
//! (`start..end`). Allocation discovery produces one, plans consume them, and resume bitmaps
//! convert to and from them. Every operation costs in *extents*, never in bytes:
//!
//! | operation                                  | cost                         |
//! |--------------------------------------------|------------------------------|
//! | `insert`, `remove`                          | O(log n + merged extents)    |
//! | `contains`, `first_at_or_after`             | O(log n)                     |
//! | `clip`                                      | O(log n + extents in range)  |
//! | `union`, `intersection`, `difference`, `complement` | O(n + m) linear merge |
//! | `total_len`, `extent_count`, `is_empty`     | O(1)                         |
//!
//! The map is a `BTreeMap<start, end>`: the engine both builds maps incrementally (inserting
//! extents found by `SEEK_DATA` or zero detection, removing the parts already copied) and reads
//! them many times, and a B-tree keeps single insertions O(log n) anywhere while iteration stays
//! cheap. Set operations build their result from an already-sorted sequence (bulk build).
//!
//! Ranges are half-open in `u64`, so the last representable byte is `u64::MAX - 1`; a range may
//! end exactly at `u64::MAX`. Empty and reversed ranges (`start >= end`) are ignored everywhere.
//! No operation can overflow: the extents are disjoint within `0..u64::MAX`, so their total
//! length is at most `u64::MAX`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::Serialize;

/// What a reported extent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtentKind {
    /// Allocated bytes that hold (possibly) nonzero data and must be copied.
    Data,
    /// Allocated bytes known to read as zeros (zero-detected block, qcow2 zero cluster).
    Zero,
    /// Unallocated bytes (a hole) that read as zeros.
    Hole,
}

/// One reported extent: `len` bytes at `offset` of the given kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Extent {
    /// First byte of the extent.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the bytes hold.
    pub kind: ExtentKind,
}

impl Extent {
    /// The extent as a half-open byte range (saturating at `u64::MAX`).
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset.saturating_add(self.len)
    }
}

/// A set of bytes as sorted, disjoint, coalesced half-open ranges.
///
/// Invariants (checked by [`ExtentMap::check_invariants`] in tests and fuzzing):
/// every stored range is non-empty, ranges are sorted by start, and each range ends strictly
/// before the next one starts (touching ranges are merged into one). `total_len` is the sum of
/// the range lengths.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ExtentMap {
    /// start -> end (exclusive).
    map: BTreeMap<u64, u64>,
    /// Sum of `end - start` over `map`.
    total: u64,
}

impl ExtentMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The map covering `[0, len)` (empty if `len == 0`).
    pub fn full(len: u64) -> Self {
        let mut m = Self::new();
        m.insert(0..len);
        m
    }

    /// Builds a map from ranges in any order, overlapping or not; empty ranges are ignored.
    ///
    /// Sorts the ranges once (O(n log n)) and merges them linearly.
    pub fn from_ranges<I: IntoIterator<Item = Range<u64>>>(it: I) -> Self {
        let mut v: Vec<Range<u64>> = it.into_iter().filter(|r| r.start < r.end).collect();
        v.sort_unstable_by_key(|r| r.start);
        let mut b = Builder::with_capacity(v.len());
        for r in v {
            b.push(r.start, r.end);
        }
        b.finish()
    }

    /// Adds the bytes of `r`, merging with overlapping and touching extents.
    pub fn insert(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        let mut start = r.start;
        let mut end = r.end;
        // Fast path for the common ascending build (allocation discovery appends in order):
        // a range past the last extent, or one that only extends it.
        match self.map.last_entry() {
            None => {
                self.map.insert(start, end);
                self.total = end - start;
                return;
            }
            Some(mut last) => {
                let (s, e) = (*last.key(), *last.get());
                if start > e {
                    self.map.insert(start, end);
                    self.total += end - start;
                    return;
                }
                if start >= s {
                    if end > e {
                        *last.get_mut() = end;
                        self.total += end - e;
                    }
                    return;
                }
            }
        }
        // An extent starting at or before `start` that reaches `start` absorbs the new range.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                if e >= end {
                    return; // already covered
                }
                start = s;
                end = end.max(e);
                self.map.remove(&s);
                self.total -= e - s;
            }
        }
        // Every extent starting inside `[start, end]` (inclusive: touching merges) is absorbed.
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            self.map.remove(&s);
            self.total -= e - s;
            end = end.max(e);
        }
        self.map.insert(start, end);
        self.total += end - start;
    }

    /// Removes the bytes of `r`, splitting an extent that straddles either end.
    pub fn remove(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        // An extent starting before `r.start` that reaches into `r`: trim it, keep any tail.
        if let Some((&s, &e)) = self.map.range(..r.start).next_back() {
            if e > r.start {
                self.map.insert(s, r.start);
                self.total -= e - r.start;
                if e > r.end {
                    self.map.insert(r.end, e);
                    self.total += e - r.end;
                    return;
                }
            }
        }
        // Extents starting inside `r`: drop them, keeping the part past `r.end`.
        while let Some((&s, &e)) = self.map.range(r.start..r.end).next() {
            self.map.remove(&s);
            self.total -= e - s;
            if e > r.end {
                self.map.insert(r.end, e);
                self.total += e - r.end;
                break;
            }
        }
    }

    /// Whether byte `offset` is in the set.
    pub fn contains(&self, offset: u64) -> bool {
        matches!(self.map.range(..=offset).next_back(), Some((_, &e)) if e > offset)
    }

    /// Whether every byte of `r` is in the set (true for an empty range).
    pub fn contains_range(&self, r: Range<u64>) -> bool {
        if r.start >= r.end {
            return true;
        }
        matches!(self.map.range(..=r.start).next_back(), Some((_, &e)) if e >= r.end)
    }

    /// Whether any byte of `r` is in the set.
    pub fn intersects(&self, r: Range<u64>) -> bool {
        self.first_at_or_after(r.start)
            .is_some_and(|f| f.start < r.end)
    }

    /// Bytes in either map. Linear merge, O(n + m).
    pub fn union(&self, o: &Self) -> Self {
        let mut b = Builder::with_capacity(self.map.len() + o.map.len());
        let mut a = self.map.iter().peekable();
        let mut c = o.map.iter().peekable();
        loop {
            let next = match (a.peek(), c.peek()) {
                (Some(&(&s1, _)), Some(&(&s2, _))) => {
                    if s1 <= s2 {
                        a.next()
                    } else {
                        c.next()
                    }
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => c.next(),
                (None, None) => break,
            };
            if let Some((&s, &e)) = next {
                b.push(s, e);
            }
        }
        b.finish()
    }

    /// Bytes in both maps. Linear merge, O(n + m).
    pub fn intersection(&self, o: &Self) -> Self {
        let mut b = Builder::with_capacity(self.map.len().min(o.map.len()));
        let mut a = self.map.iter();
        let mut c = o.map.iter();
        let (mut x, mut y) = (a.next(), c.next());
        while let (Some((&s1, &e1)), Some((&s2, &e2))) = (x, y) {
            let s = s1.max(s2);
            let e = e1.min(e2);
            if s < e {
                b.push(s, e);
            }
            if e1 <= e2 {
                x = a.next();
            } else {
                y = c.next();
            }
        }
        b.finish()
    }

    /// Bytes in `self` but not in `o`. Linear merge, O(n + m).
    pub fn difference(&self, o: &Self) -> Self {
        let mut b = Builder::with_capacity(self.map.len());
        let mut c = o.map.iter().peekable();
        for (&s, &e) in &self.map {
            let mut cur = s;
            // Skip subtrahend extents that end before this extent.
            while let Some(&(_, &e2)) = c.peek() {
                if e2 <= cur {
                    c.next();
                } else {
                    break;
                }
            }
            while let Some(&(&s2, &e2)) = c.peek() {
                if s2 >= e {
                    break;
                }
                if s2 > cur {
                    b.push(cur, s2);
                }
                if e2 >= e {
                    cur = e;
                    break; // this subtrahend may still cover the next extent: keep it
                }
                cur = e2;
                c.next();
            }
            if cur < e {
                b.push(cur, e);
            }
        }
        b.finish()
    }

    /// `[0, len)` minus `self`. O(n).
    pub fn complement(&self, len: u64) -> Self {
        let mut b = Builder::with_capacity(self.map.len() + 1);
        for g in self.iter_gaps(len) {
            b.push(g.start, g.end);
        }
        b.finish()
    }

    /// `self ∩ r`. O(log n + extents inside `r`).
    pub fn clip(&self, r: Range<u64>) -> Self {
        let mut b = Builder::with_capacity(0);
        for x in self.iter_range(r) {
            b.push(x.start, x.end);
        }
        b.finish()
    }

    /// The extents in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Range<u64>> + ExactSizeIterator + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// The extents intersected with `r`, ascending, clipped to `r`. O(log n) to start.
    pub fn iter_range(&self, r: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let (lo, hi) = (r.start, r.end);
        // The extent that may straddle `lo`, then those starting inside `[lo, hi)`.
        let first = if lo < hi {
            self.map
                .range(..lo)
                .next_back()
                .filter(|(_, &e)| e > lo)
                .map(|(_, &e)| lo..e.min(hi))
        } else {
            None
        };
        let rest = if lo < hi {
            Some(self.map.range(lo..hi).map(move |(&s, &e)| s..e.min(hi)))
        } else {
            None
        };
        first.into_iter().chain(rest.into_iter().flatten())
    }

    /// The gaps of `[0, len)`: the ranges not in the map, ascending (lazy `complement`).
    pub fn iter_gaps(&self, len: u64) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut cur = 0u64;
        let mut it = self.map.iter();
        let mut done = len == 0;
        std::iter::from_fn(move || {
            while !done {
                match it.next() {
                    Some((&s, &e)) if s < len => {
                        let gap = cur..s;
                        cur = e;
                        if cur >= len {
                            done = true;
                        }
                        if gap.start < gap.end {
                            return Some(gap);
                        }
                    }
                    _ => {
                        done = true;
                        if cur < len {
                            return Some(cur..len);
                        }
                    }
                }
            }
            None
        })
    }

    /// The first bytes of the set at or after `offset`: the extent containing `offset`
    /// (clipped to start at `offset`), or else the next extent after it. Like `SEEK_DATA`.
    pub fn first_at_or_after(&self, offset: u64) -> Option<Range<u64>> {
        if let Some((_, &e)) = self.map.range(..=offset).next_back() {
            if e > offset {
                return Some(offset..e);
            }
        }
        self.map
            .range(offset.saturating_add(1)..)
            .next()
            .map(|(&s, &e)| s..e)
    }

    /// The extent containing `offset`, unclipped.
    pub fn extent_containing(&self, offset: u64) -> Option<Range<u64>> {
        self.map
            .range(..=offset)
            .next_back()
            .filter(|(_, &e)| e > offset)
            .map(|(&s, &e)| s..e)
    }

    /// Number of bytes in the set. O(1).
    pub fn total_len(&self) -> u64 {
        self.total
    }

    /// Number of (coalesced) extents. O(1).
    pub fn extent_count(&self) -> usize {
        self.map.len()
    }

    /// The ranges in order, consuming the map (its memory is freed as the walk goes).
    pub fn into_ranges(self) -> impl Iterator<Item = Range<u64>> {
        self.map.into_iter().map(|(s, e)| s..e)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The lowest byte in the set.
    pub fn start(&self) -> Option<u64> {
        self.map.keys().next().copied()
    }

    /// One past the highest byte in the set.
    pub fn end(&self) -> Option<u64> {
        self.map.values().next_back().copied()
    }

    /// Removes every extent.
    pub fn clear(&mut self) {
        self.map.clear();
        self.total = 0;
    }

    /// Reports `[0, len)` as extents: bytes in the set as `inside`, the gaps as `outside`.
    /// Bytes of the set at or past `len` are not reported.
    pub fn to_report(&self, len: u64, inside: ExtentKind, outside: ExtentKind) -> Vec<Extent> {
        let mut out = Vec::with_capacity(2 * self.map.len() + 1);
        let mut cur = 0u64;
        for r in self.iter_range(0..len) {
            if r.start > cur {
                out.push(Extent {
                    offset: cur,
                    len: r.start - cur,
                    kind: outside,
                });
            }
            out.push(Extent {
                offset: r.start,
                len: r.end - r.start,
                kind: inside,
            });
            cur = r.end;
        }
        if cur < len {
            out.push(Extent {
                offset: cur,
                len: len - cur,
                kind: outside,
            });
        }
        out
    }

    /// Verifies the representation invariants; returns a description of the first violation.
    ///
    /// Used by tests and the fuzz harness; O(n).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut prev_end: Option<u64> = None;
        let mut sum: u64 = 0;
        for (&s, &e) in &self.map {
            if s >= e {
                return Err(format!("empty or reversed extent {s}..{e}"));
            }
            if let Some(p) = prev_end {
                if s <= p {
                    return Err(format!(
                        "extent {s}..{e} overlaps or touches the previous one ending at {p}"
                    ));
                }
            }
            sum = sum
                .checked_add(e - s)
                .ok_or_else(|| "total length overflows u64".to_string())?;
            prev_end = Some(e);
        }
        if sum != self.total {
            return Err(format!("total_len {} but extents sum to {sum}", self.total));
        }
        Ok(())
    }
}

impl fmt::Debug for ExtentMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<Range<u64>> for ExtentMap {
    fn from_iter<I: IntoIterator<Item = Range<u64>>>(iter: I) -> Self {
        Self::from_ranges(iter)
    }
}

impl Extend<Range<u64>> for ExtentMap {
    fn extend<I: IntoIterator<Item = Range<u64>>>(&mut self, iter: I) {
        for r in iter {
            self.insert(r);
        }
    }
}

impl<'a> IntoIterator for &'a ExtentMap {
    type Item = Range<u64>;
    type IntoIter = std::iter::Map<
        std::collections::btree_map::Iter<'a, u64, u64>,
        fn((&'a u64, &'a u64)) -> Range<u64>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        fn conv((s, e): (&u64, &u64)) -> Range<u64> {
            *s..*e
        }
        self.map
            .iter()
            .map(conv as fn((&'a u64, &'a u64)) -> Range<u64>)
    }
}

/// Builds a map from ranges pushed in ascending order of start, coalescing overlapping and
/// touching ones, then bulk-loads the B-tree.
struct Builder {
    v: Vec<(u64, u64)>,
    total: u64,
}

impl Builder {
    fn with_capacity(n: usize) -> Self {
        Self {
            v: Vec::with_capacity(n),
            total: 0,
        }
    }

    /// Pushes `[s, e)`; `s` must be >= the start of every range pushed before.
    fn push(&mut self, s: u64, e: u64) {
        if s >= e {
            return;
        }
        if let Some(last) = self.v.last_mut() {
            debug_assert!(s >= last.0, "Builder::push out of order");
            if s <= last.1 {
                if e > last.1 {
                    self.total += e - last.1;
                    last.1 = e;
                }
                return;
            }
        }
        self.v.push((s, e));
        self.total += e - s;
    }

    fn finish(self) -> ExtentMap {
        // Sorted, unique keys: BTreeMap's FromIterator bulk-builds (its sort sees one run).
        ExtentMap {
            map: self.v.into_iter().collect(),
            total: self.total,
        }
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn m(r: &[Range<u64>]) -> ExtentMap {
        ExtentMap::from_ranges(r.iter().cloned())
    }

    fn v(m: &ExtentMap) -> Vec<Range<u64>> {
        m.iter().collect()
    }

    #[test]
    fn insert_merges_touching_and_overlapping() {
        let mut x = ExtentMap::new();
        x.insert(0..5);
        x.insert(5..10);
        assert_eq!(v(&x), vec![0..10]);
        x.insert(20..30);
        x.insert(12..14);
        assert_eq!(v(&x), vec![0..10, 12..14, 20..30]);
        x.insert(9..21);
        assert_eq!(v(&x), vec![0..30]);
        assert_eq!(x.total_len(), 30);
        x.insert(3..4); // already covered
        assert_eq!(v(&x), vec![0..30]);
        x.check_invariants().unwrap();
    }

    #[test]
    fn empty_and_reversed_ranges_are_ignored() {
        let mut x = ExtentMap::new();
        x.insert(5..5);
        #[allow(clippy::reversed_empty_ranges)]
        x.insert(7..3);
        assert!(x.is_empty());
        x.insert(0..10);
        x.remove(4..4);
        assert_eq!(v(&x), vec![0..10]);
        assert!(ExtentMap::full(0).is_empty());
        assert_eq!(m(&[3..3, 1..2]), m(&[1..2]));
    }

    #[test]
    fn remove_splits() {
        let mut x = m(&[0..100]);
        x.remove(10..20);
        assert_eq!(v(&x), vec![0..10, 20..100]);
        x.remove(0..10);
        assert_eq!(v(&x), vec![20..100]);
        x.remove(90..200);
        assert_eq!(v(&x), vec![20..90]);
        let mut y = m(&[0..10, 20..30, 40..50]);
        y.remove(5..45);
        assert_eq!(v(&y), vec![0..5, 45..50]);
        assert_eq!(y.total_len(), 10);
        y.check_invariants().unwrap();
    }

    #[test]
    fn u64_max_edges() {
        let top = u64::MAX;
        let mut x = ExtentMap::new();
        x.insert(top - 10..top);
        x.insert(0..top - 10);
        assert_eq!(v(&x), vec![0..top]);
        assert_eq!(x.total_len(), top);
        assert!(x.contains(top - 1));
        assert!(!x.contains(top));
        assert!(x.complement(top).is_empty());
        x.remove(top - 1..top);
        assert_eq!(v(&x), vec![0..top - 1]);
        assert_eq!(v(&x.complement(top)), vec![top - 1..top]);
        assert_eq!(x.first_at_or_after(top), None);
        let y = m(&[top - 5..top]);
        assert_eq!(v(&y.union(&x)), vec![0..top]);
        assert_eq!(v(&y.intersection(&x)), vec![top - 5..top - 1]);
        assert_eq!(v(&y.difference(&x)), vec![top - 1..top]);
        assert_eq!(v(&y.clip(top - 2..top)), vec![top - 2..top]);
        assert_eq!(v(&ExtentMap::full(top)), vec![0..top]);
    }

    #[test]
    fn set_operations() {
        let a = m(&[0..10, 20..30, 40..50]);
        let b = m(&[5..25, 45..60]);
        assert_eq!(v(&a.union(&b)), vec![0..30, 40..60]);
        assert_eq!(v(&a.intersection(&b)), vec![5..10, 20..25, 45..50]);
        assert_eq!(v(&a.difference(&b)), vec![0..5, 25..30, 40..45]);
        assert_eq!(v(&b.difference(&a)), vec![10..20, 50..60]);
        assert_eq!(v(&a.complement(55)), vec![10..20, 30..40, 50..55]);
        assert_eq!(v(&a.complement(25)), vec![10..20]);
        assert_eq!(v(&a.complement(0)), Vec::<Range<u64>>::new());
        assert_eq!(v(&ExtentMap::new().complement(7)), vec![0..7]);
        assert_eq!(v(&a.clip(5..45)), vec![5..10, 20..30, 40..45]);
        assert_eq!(v(&a.clip(12..18)), Vec::<Range<u64>>::new());
        // A subtrahend covering several extents.
        let c = m(&[0..100]);
        assert!(a.difference(&c).is_empty());
        // Touching results are coalesced.
        assert_eq!(v(&m(&[0..5]).union(&m(&[5..9]))), vec![0..9]);
    }

    #[test]
    fn lookups() {
        let a = m(&[10..20, 30..40]);
        assert!(!a.contains(9));
        assert!(a.contains(10));
        assert!(a.contains(19));
        assert!(!a.contains(20));
        assert_eq!(a.first_at_or_after(0), Some(10..20));
        assert_eq!(a.first_at_or_after(15), Some(15..20));
        assert_eq!(a.first_at_or_after(20), Some(30..40));
        assert_eq!(a.first_at_or_after(40), None);
        assert_eq!(a.extent_containing(35), Some(30..40));
        assert_eq!(a.extent_containing(25), None);
        assert!(a.contains_range(12..18));
        assert!(!a.contains_range(12..22));
        assert!(a.intersects(18..31));
        assert!(!a.intersects(20..30));
        assert_eq!(
            a.iter_gaps(50).collect::<Vec<_>>(),
            vec![0..10, 20..30, 40..50]
        );
        assert_eq!(a.iter_gaps(35).collect::<Vec<_>>(), vec![0..10, 20..30]);
        assert_eq!(a.iter_gaps(10).collect::<Vec<_>>(), vec![0..10]);
        assert_eq!(a.start(), Some(10));
        assert_eq!(a.end(), Some(40));
        assert_eq!(format!("{a:?}"), "[10..20, 30..40]");
    }

    #[test]
    fn report_and_serialize() {
        let a = m(&[10..20]);
        let r = a.to_report(30, ExtentKind::Data, ExtentKind::Hole);
        assert_eq!(
            r,
            vec![
                Extent {
                    offset: 0,
                    len: 10,
                    kind: ExtentKind::Hole
                },
                Extent {
                    offset: 10,
                    len: 10,
                    kind: ExtentKind::Data
                },
                Extent {
                    offset: 20,
                    len: 10,
                    kind: ExtentKind::Hole
                },
            ]
        );
        let j = serde_json::to_string(&r[1]).unwrap();
        assert_eq!(j, r#"{"offset":10,"len":10,"kind":"data"}"#);
    }

    #[test]
    fn collect_extend_and_eq() {
        let a: ExtentMap = vec![5..6, 0..3, 2..5].into_iter().collect();
        assert_eq!(v(&a), vec![0..6]);
        let mut b = ExtentMap::new();
        b.extend([0..1, 1..6]);
        assert_eq!(a, b);
        let n: usize = (&a).into_iter().count();
        assert_eq!(n, 1);
    }
}
