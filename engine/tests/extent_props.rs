//! Property tests: every ExtentMap operation against a naive per-block model, and ChunkBitmap
//! round trips.
//!
//! The model is a `Vec<bool>` over a universe of `U` blocks; block `i` is the byte range
//! `[i * block, (i + 1) * block)` with `block` 1 or 512, so the same properties cover
//! byte-granular and sector-scaled maps.

use std::ops::Range;

use ember_engine::bitmap::ChunkBitmap;
use ember_engine::extent::ExtentMap;
use proptest::prelude::*;

const U: u64 = 2048;

#[derive(Clone, Debug)]
struct Model(Vec<bool>);

impl Model {
    fn from_ranges(rs: &[Range<u64>]) -> Self {
        let mut m = Model(vec![false; U as usize]);
        for r in rs {
            for i in r.clone() {
                m.0[i as usize] = true;
            }
        }
        m
    }

    fn zip(&self, o: &Model, f: impl Fn(bool, bool) -> bool) -> Model {
        Model(self.0.iter().zip(&o.0).map(|(&a, &b)| f(a, b)).collect())
    }

    fn get(&self, i: u64) -> bool {
        i < U && self.0[i as usize]
    }

    /// Maximal runs, scaled to bytes.
    fn extents(&self, block: u64) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut start = None;
        for i in 0..=U {
            match (self.get(i), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    out.push(s * block..i * block);
                    start = None;
                }
                _ => {}
            }
        }
        out
    }

    fn count(&self) -> u64 {
        self.0.iter().filter(|&&b| b).count() as u64
    }
}

fn scaled(rs: &[Range<u64>], block: u64) -> Vec<Range<u64>> {
    rs.iter().map(|r| r.start * block..r.end * block).collect()
}

/// Asserts `m` is well-formed and equals the model.
fn assert_matches(m: &ExtentMap, model: &Model, block: u64) -> Result<(), TestCaseError> {
    m.check_invariants().map_err(TestCaseError::fail)?;
    prop_assert_eq!(m.iter().collect::<Vec<_>>(), model.extents(block));
    prop_assert_eq!(m.total_len(), model.count() * block);
    prop_assert_eq!(m.extent_count(), model.extents(block).len());
    prop_assert_eq!(m.is_empty(), model.count() == 0);
    Ok(())
}

/// A range of blocks inside the universe; sometimes empty, sometimes a single block.
fn range() -> impl Strategy<Value = Range<u64>> {
    prop_oneof![
        (0..=U, 0..=U).prop_map(|(a, b)| a.min(b)..a.max(b)),
        (0..U, 1..64u64).prop_map(|(a, l)| a..(a + l).min(U)),
        (0..U).prop_map(|a| a..a + 1),
    ]
}

fn ranges() -> impl Strategy<Value = Vec<Range<u64>>> {
    prop::collection::vec(range(), 0..40)
}

fn block() -> impl Strategy<Value = u64> {
    prop_oneof![Just(1u64), Just(512u64)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn from_ranges_and_inserts(rs in ranges(), block in block()) {
        let model = Model::from_ranges(&rs);
        let m = ExtentMap::from_ranges(scaled(&rs, block));
        assert_matches(&m, &model, block)?;
        let mut seq = ExtentMap::new();
        for r in scaled(&rs, block) {
            seq.insert(r);
        }
        assert_matches(&seq, &model, block)?;
        prop_assert_eq!(&seq, &m);
        let collected: ExtentMap = scaled(&rs, block).into_iter().rev().collect();
        prop_assert_eq!(collected, m);
    }

    #[test]
    fn remove(rs in ranges(), del in ranges(), block in block()) {
        let mut m = ExtentMap::from_ranges(scaled(&rs, block));
        let mut model = Model::from_ranges(&rs);
        for r in &del {
            m.remove(r.start * block..r.end * block);
            for i in r.clone() {
                model.0[i as usize] = false;
            }
            assert_matches(&m, &model, block)?;
        }
    }

    #[test]
    fn set_operations(a in ranges(), b in ranges(), block in block()) {
        let (ma, mb) = (Model::from_ranges(&a), Model::from_ranges(&b));
        let x = ExtentMap::from_ranges(scaled(&a, block));
        let y = ExtentMap::from_ranges(scaled(&b, block));
        assert_matches(&x.union(&y), &ma.zip(&mb, |p, q| p || q), block)?;
        assert_matches(&x.intersection(&y), &ma.zip(&mb, |p, q| p && q), block)?;
        assert_matches(&x.difference(&y), &ma.zip(&mb, |p, q| p && !q), block)?;
        assert_matches(&y.difference(&x), &mb.zip(&ma, |p, q| p && !q), block)?;
        // Algebra: A = (A - B) ∪ (A ∩ B), disjointly.
        let d = x.difference(&y);
        let i = x.intersection(&y);
        prop_assert!(d.intersection(&i).is_empty());
        prop_assert_eq!(d.union(&i), x.clone());
        prop_assert_eq!(x.union(&y), y.union(&x));
        prop_assert_eq!(x.intersection(&y), y.intersection(&x));
    }

    #[test]
    fn complement_and_gaps(a in ranges(), len in 0..=U, block in block()) {
        let x = ExtentMap::from_ranges(scaled(&a, block));
        let mut model = Model::from_ranges(&a).zip(&Model::from_ranges(&[]), |p, _| !p);
        for i in len..U {
            model.0[i as usize] = false;
        }
        let c = x.complement(len * block);
        assert_matches(&c, &model, block)?;
        prop_assert_eq!(x.iter_gaps(len * block).collect::<Vec<_>>(), c.iter().collect::<Vec<_>>());
        // A partition of [0, len).
        prop_assert_eq!(c.union(&x.clip(0..len * block)), ExtentMap::full(len * block));
    }

    #[test]
    fn clip_and_iter_range(a in ranges(), r in range(), block in block()) {
        let x = ExtentMap::from_ranges(scaled(&a, block));
        let ma = Model::from_ranges(&a);
        let mr = Model::from_ranges(std::slice::from_ref(&r));
        let br = r.start * block..r.end * block;
        let c = x.clip(br.clone());
        assert_matches(&c, &ma.zip(&mr, |p, q| p && q), block)?;
        prop_assert_eq!(x.iter_range(br.clone()).collect::<Vec<_>>(), c.iter().collect::<Vec<_>>());
        prop_assert_eq!(c, x.intersection(&ExtentMap::from_ranges([br])));
    }

    #[test]
    fn point_queries(a in ranges(), p in 0..=U, sub in 0..512u64, block in block()) {
        let x = ExtentMap::from_ranges(scaled(&a, block));
        let ma = Model::from_ranges(&a);
        let off = p * block + sub % block;
        prop_assert_eq!(x.contains(off), ma.get(p));
        let runs = ma.extents(block);
        let want = runs.iter().find(|r| r.end > off).map(|r| r.start.max(off)..r.end);
        prop_assert_eq!(x.first_at_or_after(off), want);
        let containing = runs.iter().find(|r| r.contains(&off)).cloned();
        prop_assert_eq!(x.extent_containing(off), containing);
    }

    /// Ranges at the very top of the u64 space behave like the same ranges at the bottom.
    #[test]
    fn top_of_u64_mirrors_bottom(a in ranges(), b in ranges()) {
        let base = u64::MAX - U;
        let shift = |rs: &[Range<u64>]| rs.iter().map(|r| base + r.start..base + r.end).collect::<Vec<_>>();
        let (x, y) = (ExtentMap::from_ranges(a.clone()), ExtentMap::from_ranges(b.clone()));
        let (hx, hy) = (ExtentMap::from_ranges(shift(&a)), ExtentMap::from_ranges(shift(&b)));
        let unshift = |m: &ExtentMap| m.iter().map(|r| r.start - base..r.end - base).collect::<Vec<_>>();
        for (lo, hi) in [
            (x.union(&y), hx.union(&hy)),
            (x.intersection(&y), hx.intersection(&hy)),
            (x.difference(&y), hx.difference(&hy)),
        ] {
            hi.check_invariants().map_err(TestCaseError::fail)?;
            prop_assert_eq!(lo.iter().collect::<Vec<_>>(), unshift(&hi));
            prop_assert_eq!(lo.total_len(), hi.total_len());
        }
        let hc = hx.complement(u64::MAX);
        prop_assert!(hc.contains_range(0..base));
        prop_assert_eq!(unshift(&hc.clip(base..u64::MAX)), x.complement(U).iter().collect::<Vec<_>>());
    }

    #[test]
    fn bitmap_round_trips(a in ranges(), len in 0..=U * 512, shift in 0..4u32) {
        let cs = 512u64 << shift;
        let x = ExtentMap::from_ranges(scaled(&a, 512)); // byte offsets up to 1 MiB
        // Some unaligned extents too.
        let x = x.union(&ExtentMap::from_ranges(a.iter().map(|r| r.start * 37..r.end * 41)));
        let bm = ChunkBitmap::from_extents(&x, len, cs).unwrap();
        prop_assert_eq!(bm.chunks(), len.div_ceil(cs));
        let back = bm.to_extents();
        // Covers the original (within len), and every chunk of it touches the original.
        prop_assert!(x.clip(0..len).difference(&back).is_empty());
        for c in 0..bm.chunks() {
            prop_assert_eq!(bm.get(c), x.intersects(bm.chunk_range(c)));
        }
        prop_assert!(back.end().unwrap_or(0) <= len);
        // A chunk-aligned map survives exactly.
        prop_assert_eq!(ChunkBitmap::from_extents(&back, len, cs).unwrap().to_extents(), back.clone());
        // Bytes round trip, and every truncation is rejected.
        let bytes = bm.to_bytes();
        prop_assert_eq!(&ChunkBitmap::from_bytes(&bytes).unwrap(), &bm);
        for cut in [0, 1, 39, 40, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(ChunkBitmap::from_bytes(&bytes[..cut.min(bytes.len() - 1)]).is_err());
        }
    }

    /// Arbitrary bytes never make from_bytes panic.
    #[test]
    fn bitmap_from_arbitrary_bytes(mut data in prop::collection::vec(any::<u8>(), 0..200), valid_head in any::<bool>()) {
        if valid_head && data.len() >= 40 {
            data[..8].copy_from_slice(b"EMBERBMP");
            data[8..12].copy_from_slice(&1u32.to_le_bytes());
            data[12..16].copy_from_slice(&0u32.to_le_bytes());
        }
        let _ = ChunkBitmap::from_bytes(&data);
    }

    /// The fuzz harness itself, on random inputs (the corpus replay covers found inputs).
    #[test]
    fn fuzz_harness_random(data in prop::collection::vec(any::<u8>(), 0..300)) {
        ember_engine::fuzz_harness::extents::extent_ops(&data);
    }
}
