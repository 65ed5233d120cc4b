//! The pipeline's own cost per I/O, in CPU time: a 64 MiB fully allocated file copied between
//! two files on a tmpfs (`/dev/shm`), so no device time hides anything, in small blocks so each
//! run is thousands of operations. The measurement is the process's CPU time (user + system,
//! every thread: the pipeline, its worker threads, io_uring's own workers), not wall time; the
//! throughput line is operations per CPU second, and `time / ops` is the CPU cost of one read
//! plus its write, kernel copies included.
//!
//! Two drivers of the same plan: `threads` (what the engine picks when every file is in memory,
//! see `engine/src/tuning.rs`) and `ring` (io_uring with buffered I/O, as pinned). Without a
//! `/dev/shm`, a temporary folder is used and a note says so.

use std::path::Path;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ember_engine::copy::copy;
use ember_engine::options::CopyOptions;
use ember_engine::tuning::Tune;
use nix::time::{clock_gettime, ClockId};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

const MIB: usize = 1 << 20;
const SIZE: usize = 64 * MIB;

/// The process's CPU time (all threads).
struct CpuTime;

fn cpu_now() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).expect("process CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

impl Measurement for CpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds of CPU, shown in the unit that fits.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = match typical {
            t if t < 1e3 => (1.0, "ns cpu"),
            t if t < 1e6 => (1e3, "µs cpu"),
            t if t < 1e9 => (1e6, "ms cpu"),
            _ => (1e9, "s cpu"),
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let per = match *t {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n as f64 / MIB as f64,
            Throughput::Elements(n) => n as f64,
        };
        // Values are CPU nanoseconds per iteration: units per CPU second.
        values.iter_mut().for_each(|v| *v = per * 1e9 / *v);
        match t {
            Throughput::Elements(_) => "ops/cpu-s",
            _ => "MiB/cpu-s",
        }
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns cpu"
    }
}

fn source(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("src.raw");
    let mut data = vec![0u8; SIZE];
    SmallRng::seed_from_u64(0x17).fill_bytes(&mut data);
    std::fs::write(&path, &data).expect("write source");
    path
}

fn pipeline_cpu(c: &mut Criterion<CpuTime>) {
    let on_shm = std::fs::metadata("/dev/shm").is_ok_and(|m| m.is_dir());
    let dir = if on_shm {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let src = source(dir.path());
    let dst = dir.path().join("dst.raw");
    let mut g = c.benchmark_group("pipeline_cpu");
    g.sample_size(10);
    for (driver, tune) in [
        ("threads", Tune::default()),
        (
            "ring",
            Tune {
                threads: false,
                ..Tune::default()
            },
        ),
    ] {
        for block in [4096usize, 64 << 10, MIB] {
            let opts = CopyOptions {
                block_size: block,
                direct: false,
                tune,
                sync: false,
                force: true,
                ..CopyOptions::default()
            };
            let s = copy(&src, &dst, &opts).expect("check copy");
            assert_eq!(
                s.backend,
                if driver == "ring" {
                    "io_uring"
                } else {
                    "threads"
                }
            );
            assert!(std::fs::read(&dst).expect("read copy") == std::fs::read(&src).expect("src"));
            g.throughput(Throughput::Elements((SIZE / block) as u64));
            g.bench_function(format!("{driver}/{}k_ops", block >> 10), |b| {
                b.iter_batched(
                    || {
                        let _ = std::fs::remove_file(&dst);
                    },
                    |()| copy(&src, &dst, &opts).expect("copy"),
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
    if !on_shm {
        eprintln!("note: /dev/shm missing; files in {}", dir.path().display());
    }
}

fn config() -> Criterion<CpuTime> {
    Criterion::default().with_measurement(CpuTime)
}

criterion_group! {
    name = benches;
    config = config();
    targets = pipeline_cpu
}
criterion_main!(benches);
