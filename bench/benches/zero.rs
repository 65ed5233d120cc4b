//! is_zero throughput on 1 MiB buffers, against a naive byte loop as a reference.
//!
//! Run: `cargo bench -p ember-bench --bench zero`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ember_engine::zero::is_zero;

const MIB: usize = 1 << 20;

fn zero(c: &mut Criterion) {
    let mut g = c.benchmark_group("is_zero_1MiB");
    g.throughput(Throughput::Bytes(MIB as u64));
    // One extra byte so the unaligned case still has 1 MiB.
    let zeros = vec![0u8; MIB + 1];
    let mut last = vec![0u8; MIB];
    last[MIB - 1] = 1;
    let mut first = vec![0u8; MIB];
    first[0] = 1;
    g.bench_function("all_zero", |b| b.iter(|| is_zero(black_box(&zeros[..MIB]))));
    g.bench_function("all_zero_unaligned", |b| {
        b.iter(|| is_zero(black_box(&zeros[1..])))
    });
    g.bench_function("nonzero_last_byte", |b| {
        b.iter(|| is_zero(black_box(&last)))
    });
    g.bench_function("nonzero_first_byte", |b| {
        b.iter(|| is_zero(black_box(&first)))
    });
    g.bench_function("naive_iter_all_reference", |b| {
        b.iter(|| black_box(&zeros[..MIB]).iter().all(|&x| x == 0))
    });
    g.finish();
}

criterion_group!(benches, zero);
criterion_main!(benches);
