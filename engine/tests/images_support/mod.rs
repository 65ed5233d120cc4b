//! Shared helpers of the image tests: seeded sparse sources, qemu-img runners and a plain
//! sequential pread/pwrite plan executor used as an oracle.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ember_engine::format::{self, FileSource};
use ember_engine::plan::{Op, Plan};
use rand::{Rng, RngCore, SeedableRng};

/// Runs a command (argument vector, no shell) and panics with its stderr on failure.
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn qemu_img(args: &[&str]) -> String {
    run("qemu-img", args)
}

/// `qemu-img create -f qcow2 -u -b BACKING -F raw PATH SIZE`: a qcow2 whose backing file names
/// a host path (`-u`: the backing file need not exist or be readable).
pub fn qcow2_backed_by(path: &Path, backing: &str, size: &str) {
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        backing,
        "-F",
        "raw",
        p(path),
        size,
    ]);
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A sparse raw file of `size` bytes: random data runs, explicit zero runs (allocated) and
/// holes, chosen by `seed`.
pub fn sparse_source(path: &Path, size: u64, seed: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut off = 0u64;
    while off < size {
        let run = rng.gen_range(1..=48u64) * 4096 + if rng.gen_bool(0.2) { 512 } else { 0 };
        let len = run.min(size - off);
        match rng.gen_range(0..4) {
            0 => {
                let mut buf = vec![0u8; len as usize];
                rng.fill_bytes(&mut buf);
                f.write_all_at(&buf, off).unwrap();
            }
            1 => {
                // compressible data
                let b = rng.gen::<u8>();
                let buf: Vec<u8> = (0..len).map(|i| b.wrapping_add((i / 64) as u8)).collect();
                f.write_all_at(&buf, off).unwrap();
            }
            2 => f.write_all_at(&vec![0u8; len as usize], off).unwrap(),
            _ => {}
        }
        off += len + rng.gen_range(0..8u64) * 65536;
    }
    f.sync_all().unwrap();
}

/// Executes `plan` with plain preads/pwrites into a new file (the test oracle).
pub fn execute(image: &Path, plan: &Plan, out: &Path) {
    let src = File::open(image).unwrap();
    let dst = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(out)
        .unwrap();
    dst.set_len(plan.logical_size).unwrap();
    let mut last_end = 0u64;
    for op in &plan.ops {
        match *op {
            Op::Copy {
                src: s,
                dst: d,
                len,
            } => {
                assert!(d >= last_end, "ops must be ascending and disjoint");
                let mut buf = vec![0u8; len as usize];
                src.read_exact_at(&mut buf, s).unwrap();
                dst.write_all_at(&buf, d).unwrap();
                last_end = d + len;
            }
            Op::Zero { dst: d, len } | Op::Skip { dst: d, len } => {
                assert!(d >= last_end);
                last_end = d + len;
            }
            Op::Decode {
                src: s,
                src_len,
                dst: d,
                len,
                codec,
            } => {
                assert!(d >= last_end);
                let mut input = vec![0u8; src_len as usize];
                src.read_exact_at(&mut input, s).unwrap();
                let mut buf = vec![0u8; len as usize];
                format::decode(codec, &input, &mut buf).unwrap();
                dst.write_all_at(&buf, d).unwrap();
                last_end = d + len;
            }
        }
    }
    assert!(last_end <= plan.logical_size);
}

/// Analyzes an image declared to be `declared` (the content must agree).
pub fn analyze_as(image: &Path, declared: format::Format) -> format::ImageResult<format::Analysis> {
    format::analyze(
        &format::FileSource::open(image).unwrap(),
        &format::InspectOptions {
            declared: Some(declared),
            ..Default::default()
        },
    )
}

/// Analyzes an image with default options.
pub fn analyze(image: &Path) -> format::ImageResult<format::Analysis> {
    let src = FileSource::open(image).unwrap();
    format::analyze(&src, &format::InspectOptions::default())
}

/// Byte-for-byte equality of two files.
pub fn assert_same(a: &Path, b: &Path) {
    let x = std::fs::read(a).unwrap();
    let y = std::fs::read(b).unwrap();
    assert_eq!(x.len(), y.len(), "{a:?} vs {b:?}: sizes differ");
    if let Some(i) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{a:?} and {b:?} differ at offset {i}");
    }
}

pub fn virtual_size(image: &Path) -> u64 {
    let j = qemu_img(&["info", "--output=json", p(image)]);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Names of the entries of `dir` that contain `part`.
pub fn names_with(dir: &tempfile::TempDir, part: &str) -> Vec<String> {
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(part))
        .collect()
}

pub fn path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
