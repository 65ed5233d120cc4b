//! ExtentMap costs at scale: building, set operations and iteration over 1M-extent maps.
//!
//! Run: `cargo bench -p ember-bench --bench extents`.

use std::hint::black_box;
use std::ops::Range;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ember_engine::extent::ExtentMap;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const N: u64 = 1_000_000;

/// `N` disjoint 2 KiB extents, one every 4 KiB, starting at `shift`.
fn ranges(shift: u64) -> Vec<Range<u64>> {
    (0..N)
        .map(|i| i * 4096 + shift..i * 4096 + shift + 2048)
        .collect()
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("extent_build_1M");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    let sorted = ranges(0);
    let mut shuffled = sorted.clone();
    shuffled.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(7));
    g.bench_function("from_ranges_sorted", |b| {
        b.iter_batched(
            || sorted.clone(),
            |v| black_box(ExtentMap::from_ranges(v)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("from_ranges_shuffled", |b| {
        b.iter_batched(
            || shuffled.clone(),
            |v| black_box(ExtentMap::from_ranges(v)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("insert_ascending", |b| {
        b.iter(|| {
            let mut m = ExtentMap::new();
            for r in &sorted {
                m.insert(r.clone());
            }
            black_box(m)
        })
    });
    g.bench_function("insert_shuffled", |b| {
        b.iter(|| {
            let mut m = ExtentMap::new();
            for r in &shuffled {
                m.insert(r.clone());
            }
            black_box(m)
        })
    });
    let full = ExtentMap::from_ranges(sorted.clone());
    g.bench_function("remove_shuffled_all", |b| {
        b.iter_batched(
            || full.clone(),
            |mut m| {
                for r in &shuffled {
                    m.remove(r.clone());
                }
                black_box(m)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn set_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("extent_setops_1M");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * N));
    // Overlapping halves: every extent of `a` overlaps two of `b`'s neighbours' edges.
    let a = ExtentMap::from_ranges(ranges(0));
    let b = ExtentMap::from_ranges(ranges(1024));
    let len = N * 4096;
    g.bench_function("union", |bch| bch.iter(|| black_box(a.union(&b))));
    g.bench_function("intersection", |bch| {
        bch.iter(|| black_box(a.intersection(&b)))
    });
    g.bench_function("difference", |bch| bch.iter(|| black_box(a.difference(&b))));
    g.bench_function("complement", |bch| {
        bch.iter(|| black_box(a.complement(len)))
    });
    g.bench_function("clip_middle_half", |bch| {
        bch.iter(|| black_box(a.clip(len / 4..3 * len / 4)))
    });
    g.finish();

    let mut g = c.benchmark_group("extent_iter_1M");
    g.throughput(Throughput::Elements(N));
    g.bench_function("iter_sum", |bch| {
        bch.iter(|| black_box(a.iter().map(|r| r.end - r.start).sum::<u64>()))
    });
    g.bench_function("iter_gaps_sum", |bch| {
        bch.iter(|| black_box(a.iter_gaps(len).map(|r| r.end - r.start).sum::<u64>()))
    });
    g.bench_function("contains_1M_probes", |bch| {
        bch.iter(|| {
            let mut hits = 0u64;
            for i in 0..N {
                hits += u64::from(a.contains(i * 4096 + 100));
            }
            black_box(hits)
        })
    });
    g.finish();
}

criterion_group!(benches, build, set_ops);
criterion_main!(benches);
