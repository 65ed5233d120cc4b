//! Seeded fixtures: sparse or fully allocated raw files of random, non-zero data, either
//! incompressible bytes or compressible printable text ([`Fill`]), in extents at seeded random
//! places or, for fragmentation, at a fixed stride ([`FixtureSpec::stride`]).
//!
//! A fixture is rebuilt only when missing or when its manifest (`NAME.raw.json`: layout version,
//! spec and extent list) or its size does not match; otherwise it is reused across runs.
//! Strided fixtures leave the extent list out of the manifest: the spec alone places their
//! extents, and a million of them would make a 30 MB manifest.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result};
use crate::units::{self, KIB, MIB};

/// Bumped whenever the layout algorithm or data generator changes.
const LAYOUT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixtureSpec {
    pub name: String,
    /// Logical size (bytes).
    pub logical: u64,
    /// Allocated data bytes (== logical for a full fixture).
    pub data: u64,
    /// Extent lengths are drawn from [ext_min, ext_max] in 64 KiB steps.
    pub ext_min: u64,
    pub ext_max: u64,
    pub seed: u64,
    /// What the data extents hold. Omitted from the manifest when `Random`, so the keys of
    /// fixtures made before this field existed stay byte-identical (and are not rebuilt).
    #[serde(default, skip_serializing_if = "Fill::is_random")]
    pub fill: Fill,
    /// Fragmentation layout: one extent of `ext_min` bytes at the start of every `stride`
    /// bytes (`data` must be `logical / stride * ext_min`). Omitted from the manifest when
    /// `None` (the random layout), so older keys stay byte-identical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<u64>,
}

impl FixtureSpec {
    /// A fully allocated fixture of `size` bytes of random data.
    pub fn full(name: String, size: u64, seed: u64) -> Self {
        FixtureSpec {
            name,
            logical: size,
            data: size,
            ext_min: size,
            ext_max: size,
            seed,
            fill: Fill::Random,
            stride: None,
        }
    }
}

/// Content of a fixture's data extents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    /// Seeded random bytes: incompressible (`qemu-img convert -c` stores ~95% of the clusters
    /// of such data uncompressed).
    #[default]
    Random,
    /// Seeded random bytes mapped onto a 64-symbol printable alphabet (base64-like text, 6 bits
    /// of entropy per byte): deflate shrinks it to ~75%, so a compressed qcow2 of it really
    /// holds compressed clusters, as cloud images do.
    Text,
}

impl Fill {
    pub fn is_random(&self) -> bool {
        *self == Fill::Random
    }
}

/// The 64 symbols of [`Fill::Text`] (the base64 alphabet; none is zero).
const TEXT_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Fill `buf` with the next bytes of a fixture's data stream: every 4 KiB block holds a non-zero
/// byte, so no copy tool may legitimately turn a data block into a hole.
fn fill_data(fill: Fill, rng: &mut SmallRng, buf: &mut [u8]) {
    rng.fill_bytes(buf);
    match fill {
        Fill::Random => {
            // Random data is non-zero with overwhelming probability; make sure of it per 4 KiB.
            for block in buf.chunks_mut(4096) {
                block[0] |= 1;
            }
        }
        Fill::Text => {
            // Every symbol is printable, hence non-zero.
            for b in buf.iter_mut() {
                *b = TEXT_ALPHABET[usize::from(*b & 63)];
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    spec: FixtureSpec,
    /// Empty for strided fixtures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    extents: Vec<(u64, u64)>,
}

/// A fixture on disk. Its extent list is not kept: the harness's own memory is what every
/// forked tool's peak RSS starts from, and a fragmented fixture has a million extents.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub path: PathBuf,
    data: u64,
}

impl Fixture {
    pub fn data_bytes(&self) -> u64 {
        self.data
    }
}

/// Where the data of `spec` goes: with a stride, `ext_min` bytes at the start of every stride;
/// otherwise extents of [ext_min, ext_max] (64 KiB granular) summing to exactly `spec.data`,
/// separated by random 4 KiB-aligned gaps.
pub fn layout(spec: &FixtureSpec) -> Vec<Range<u64>> {
    if let Some(stride) = spec.stride {
        return (0..spec.logical / stride)
            .map(|i| i * stride..i * stride + spec.ext_min)
            .collect();
    }
    if spec.data >= spec.logical {
        return std::iter::once(0..spec.logical).collect();
    }
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let step = 64 * KIB;
    let mut lens = Vec::new();
    let mut sum = 0u64;
    while sum < spec.data {
        let steps = (spec.ext_max - spec.ext_min) / step;
        let len = spec.ext_min + step * rng.gen_range(0..=steps);
        let len = len.min(spec.data - sum);
        lens.push(len);
        sum += len;
    }
    let gap_total = spec.logical - spec.data;
    let weights: Vec<u64> = (0..=lens.len())
        .map(|_| rng.gen_range(1..=1_000_000u64))
        .collect();
    let wsum: u64 = weights.iter().sum();
    let mut out = Vec::with_capacity(lens.len());
    let mut pos = 0u64;
    for (i, len) in lens.iter().enumerate() {
        let gap = (u128::from(gap_total) * u128::from(weights[i]) / u128::from(wsum)) as u64;
        pos += gap / (4 * KIB) * (4 * KIB);
        out.push(pos..pos + len);
        pos += len;
    }
    debug_assert!(pos <= spec.logical);
    out
}

fn manifest_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Reuse `DIR/NAME.raw` when its manifest matches, else (re)build it.
pub fn ensure(dir: &Path, spec: &FixtureSpec) -> Result<Fixture> {
    let path = dir.join(format!("{}.raw", spec.name));
    let mpath = manifest_path(&path);
    let extents = layout(spec);
    let fixture = Fixture {
        path: path.clone(),
        data: extents.iter().map(|r| r.end - r.start).sum(),
    };
    let want = Manifest {
        version: LAYOUT_VERSION,
        spec: spec.clone(),
        extents: match spec.stride {
            Some(_) => Vec::new(),
            None => extents.iter().map(|r| (r.start, r.end)).collect(),
        },
    };
    if let (Ok(text), Ok(meta)) = (fs::read_to_string(&mpath), fs::metadata(&path)) {
        if let Ok(have) = serde_json::from_str::<Manifest>(&text) {
            if have == want && meta.len() == spec.logical {
                eprintln!("fixture {}: reusing {}", spec.name, path.display());
                return Ok(fixture);
            }
        }
    }
    let _ = fs::remove_file(&mpath);
    eprintln!(
        "fixture {}: building {} ({} logical, {} {} data in {} extents)",
        spec.name,
        path.display(),
        units::bytes(spec.logical),
        units::bytes(spec.data.min(spec.logical)),
        match spec.fill {
            Fill::Random => "random",
            Fill::Text => "text",
        },
        extents.len()
    );
    let tmp = dir.join(format!("{}.raw.tmp", spec.name));
    write_data(&tmp, spec, &extents)?;
    fs::rename(&tmp, &path).map_err(io_err("rename fixture to", &path))?;
    let mut f = File::create(&mpath).map_err(io_err("create", &mpath))?;
    f.write_all(serde_json::to_string_pretty(&want)?.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &mpath))?;
    Ok(fixture)
}

fn write_data(path: &Path, spec: &FixtureSpec, extents: &[Range<u64>]) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("create fixture", path))?;
    f.set_len(spec.logical)
        .map_err(io_err("size fixture", path))?;
    let mut rng = SmallRng::seed_from_u64(spec.seed ^ 0x5eed_da7a);
    let mut buf = vec![0u8; (4 * MIB) as usize];
    for r in extents {
        let mut off = r.start;
        while off < r.end {
            let n = (r.end - off).min(buf.len() as u64) as usize;
            fill_data(spec.fill, &mut rng, &mut buf[..n]);
            f.write_all_at(&buf[..n], off)
                .map_err(io_err("write fixture", path))?;
            off += n as u64;
        }
    }
    f.sync_all().map_err(io_err("sync fixture", path))?;
    Ok(())
}

/// Fill `[0, len)` of `path` (file or block device) with a cheap non-zero pattern, so a wipe
/// has real data to destroy. Buffered writes plus fsync; the caller drops caches afterwards.
pub fn prefill(path: &Path, len: u64, create: bool) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(io_err("open for prefill", path))?;
    let mut buf = vec![0xa5u8; (4 * MIB) as usize];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        buf[..8].copy_from_slice(&off.to_le_bytes());
        f.write_all_at(&buf[..n], off)
            .map_err(io_err("prefill", path))?;
        off += n as u64;
    }
    f.sync_all().map_err(io_err("sync prefill", path))?;
    Ok(())
}

/// Write a 1 MiB non-zero stamp every `every` bytes of `path`, so a copy onto it must really
/// zero the source's holes to validate.
pub fn stamp(path: &Path, len: u64, every: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open for stamping", path))?;
    let buf = vec![0x5au8; MIB as usize];
    let mut off = every / 2 / MIB * MIB;
    while off + MIB <= len {
        f.write_all_at(&buf, off).map_err(io_err("stamp", path))?;
        off += every;
    }
    f.sync_all().map_err(io_err("sync stamp", path))?;
    Ok(())
}

/// A fixture whose content is produced by a command from another fixture (the qcow2 image).
pub fn ensure_derived(
    path: &Path,
    key: &serde_json::Value,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let mpath = manifest_path(path);
    if let (Ok(text), true) = (fs::read_to_string(&mpath), path.exists()) {
        if serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .as_ref()
            == Some(key)
        {
            eprintln!("fixture: reusing {}", path.display());
            return Ok(());
        }
    }
    let _ = fs::remove_file(&mpath);
    let _ = fs::remove_file(path);
    eprintln!("fixture: building {}", path.display());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    build(&tmp)?;
    fs::rename(&tmp, path).map_err(io_err("rename fixture to", path))?;
    fs::write(&mpath, serde_json::to_vec_pretty(key)?).map_err(io_err("write", &mpath))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::GIB;

    #[test]
    fn layout_is_exact_disjoint_and_seeded() {
        let spec = FixtureSpec {
            name: "t".into(),
            logical: 8 * GIB,
            data: 8 * GIB / 10,
            ext_min: MIB,
            ext_max: 4 * MIB,
            seed: 7,
            fill: Fill::Random,
            stride: None,
        };
        let a = layout(&spec);
        assert_eq!(a, layout(&spec));
        assert_eq!(a.iter().map(|r| r.end - r.start).sum::<u64>(), spec.data);
        for w in a.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
        assert!(a.last().unwrap().end <= spec.logical);
        assert!(a
            .iter()
            .all(|r| r.start % 4096 == 0 && r.end - r.start <= 4 * MIB));
        let other = layout(&FixtureSpec { seed: 8, ..spec });
        assert_ne!(a, other);
    }

    #[test]
    fn strided_layout_and_its_manifest() {
        let spec = FixtureSpec {
            name: "frag".into(),
            logical: 4 * GIB,
            data: 4 * GIB / (64 * KIB) * 4 * KIB,
            ext_min: 4 * KIB,
            ext_max: 4 * KIB,
            seed: 9,
            fill: Fill::Random,
            stride: Some(64 * KIB),
        };
        let a = layout(&spec);
        assert_eq!(a.len(), 65_536);
        assert_eq!(a[1], 64 * KIB..68 * KIB);
        assert_eq!(a.iter().map(|r| r.end - r.start).sum::<u64>(), spec.data);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.ends_with(",\"stride\":65536}"), "{json}");
        // Built and reused: the data lands where the layout says, and the manifest has no
        // extent list.
        let dir = tempfile::tempdir().unwrap();
        let small = FixtureSpec {
            logical: 16 * 64 * KIB,
            data: 16 * 4 * KIB,
            ..spec
        };
        let f = ensure(dir.path(), &small).unwrap();
        assert_eq!(f.data_bytes(), 16 * 4 * KIB);
        let manifest = fs::read_to_string(manifest_path(&f.path)).unwrap();
        assert!(!manifest.contains("extents"), "{manifest}");
        let file = File::open(&f.path).unwrap();
        let ranges = crate::sys::data_ranges(&file, small.logical).unwrap();
        assert_eq!(ranges, layout(&small));
        let again = ensure(dir.path(), &small).unwrap();
        assert_eq!(again.data_bytes(), f.data_bytes());
    }

    #[test]
    fn random_fill_keeps_the_old_key() {
        // The manifest of sparse8g as written before `fill` existed.
        let spec = FixtureSpec {
            name: "sparse8g".into(),
            logical: 8 * GIB,
            data: 858_993_459,
            ext_min: MIB,
            ext_max: 4 * MIB,
            seed: 0x8_0001,
            fill: Fill::Random,
            stride: None,
        };
        let old = "{\n  \"name\": \"sparse8g\",\n  \"logical\": 8589934592,\n  \"data\": 858993459,\n  \"ext_min\": 1048576,\n  \"ext_max\": 4194304,\n  \"seed\": 524289\n}";
        assert_eq!(serde_json::to_string_pretty(&spec).unwrap(), old);
        assert_eq!(serde_json::from_str::<FixtureSpec>(old).unwrap(), spec);
        // The derived images' keys go through serde_json::Value.
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::from_str::<serde_json::Value>(old).unwrap()
        );
        let text = FixtureSpec {
            fill: Fill::Text,
            ..spec
        };
        let json = serde_json::to_string(&text).unwrap();
        assert!(json.ends_with(",\"fill\":\"text\"}"), "{json}");
        assert_eq!(serde_json::from_str::<FixtureSpec>(&json).unwrap(), text);
    }

    #[test]
    fn fills_are_seeded_and_non_zero() {
        let fill = |fill, seed| {
            let mut buf = vec![0u8; 64 * 1024];
            fill_data(fill, &mut SmallRng::seed_from_u64(seed), &mut buf);
            buf
        };
        let text = fill(Fill::Text, 1);
        assert_eq!(text, fill(Fill::Text, 1));
        assert_ne!(text, fill(Fill::Text, 2));
        assert!(text.iter().all(|b| TEXT_ALPHABET.contains(b)));
        // All 64 symbols occur, so the text carries 6 bits per byte: compressible, not trivially.
        let mut seen = [false; 256];
        for b in &text {
            seen[usize::from(*b)] = true;
        }
        assert_eq!(seen.iter().filter(|s| **s).count(), 64);
        let random = fill(Fill::Random, 1);
        assert!(random.chunks(4096).all(|b| b.iter().any(|x| *x != 0)));
        assert_ne!(random, text);
    }
}
