//! In-cache sparse copy through `ember_engine::copy::copy`: 1 GiB logical, 10% data in 1-4 MiB
//! extents at seeded places, buffered I/O and no final fdatasync, so the figure is the engine's
//! own cost (allocation discovery, planning, io_uring submission, page-cache copies), not the
//! disk's. The side-by-side disk figures come from `ember-bench compare`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ember_engine::copy::copy;
use ember_engine::options::CopyOptions;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

const MIB: u64 = 1 << 20;
const LOGICAL: u64 = 1 << 30;

/// Write a sparse file with ~10% random data; returns the data bytes.
fn make_source(path: &Path) -> u64 {
    let f = File::create(path).expect("create source");
    f.set_len(LOGICAL).expect("size source");
    let mut rng = SmallRng::seed_from_u64(0x00c0_ffee);
    let mut buf = vec![0u8; (4 * MIB) as usize];
    let mut off = 0u64;
    let mut data = 0u64;
    loop {
        let gap = rng.gen_range(0..=90u64) * MIB / 2; // mean 22.5 MiB vs 2.5 MiB data: ~10%
        let len = rng.gen_range(16..=64u64) * 64 * 1024; // 1-4 MiB
        off += gap;
        if off + len > LOGICAL {
            break;
        }
        rng.fill_bytes(&mut buf[..len as usize]);
        for block in buf[..len as usize].chunks_mut(4096) {
            block[0] |= 1;
        }
        f.write_all_at(&buf[..len as usize], off)
            .expect("write source");
        off += len;
        data += len;
    }
    f.sync_all().expect("sync source");
    data
}

fn sparse_copy(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.raw");
    let dst = dir.path().join("dst.raw");
    let data = make_source(&src);
    let opts = CopyOptions {
        direct: false,
        sync: false,
        ..CopyOptions::default()
    };
    // Warm the page cache and check the copy once.
    copy(&src, &dst, &opts).expect("warm-up copy");

    let mut g = c.benchmark_group("copy");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data));
    g.bench_function("sparse_1g_10pct_in_cache", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_file(&dst);
            },
            |()| copy(&src, &dst, &opts).expect("copy"),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, sparse_copy);
criterion_main!(benches);
