//! image -> volume through the real io_uring engine (image plan jobs / copies / qemu-img), and
//! volume -> image (raw, qcow2) checked by `qemu-img check` and `qemu-img compare`.

mod images_support;

use std::path::Path;
use std::process::Command;

use ember_engine::copy::{Destination, Job, Source};
use ember_engine::format::convert::{
    image_to_volume, volume_to_image, FromVolumeOptions, ToVolumeOptions,
};
use ember_engine::format::{Format, InspectOptions};
use ember_engine::options::CopyOptions;
use ember_engine::tuning::DEVICE_IN_FLIGHT;
use images_support::*;

fn to_volume(
    img: &Path,
    dest: &Path,
) -> ember_engine::Result<ember_engine::format::convert::ToVolumeSummary> {
    image_to_volume(img, dest, &ToVolumeOptions::default())
}

#[test]
fn to_volume_matches_qemu_for_every_native_format() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let src = path(&d, "src.raw");
    let size = (24 << 20) + 3 * 512;
    sparse_source(&src, size, 21);
    for (name, fmt, compress, opts) in [
        ("v2.qcow2", "qcow2", false, "compat=0.10"),
        ("v3.qcow2", "qcow2", false, "cluster_size=4k"),
        ("c.qcow2", "qcow2", true, ""),
        ("z.qcow2", "qcow2", true, "compression_type=zstd"),
        ("big.qcow2", "qcow2", true, "cluster_size=2M"),
        ("ms.vmdk", "vmdk", false, "subformat=monolithicSparse"),
        ("so.vmdk", "vmdk", false, "subformat=streamOptimized"),
        ("a.vhd", "vpc", false, "subformat=dynamic"),
        ("a.vhdx", "vhdx", false, "subformat=dynamic"),
        ("a.vdi", "vdi", false, "static=off"),
    ] {
        let img = path(&d, name);
        let mut args = vec!["convert", "-f", "raw", "-O", fmt];
        if compress {
            args.push("-c");
        }
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        args.extend([p(&src), p(&img)]);
        qemu_img(&args);
        let out = path(&d, &format!("{name}.out"));
        let s = to_volume(&img, &out).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = path(&d, &format!("{name}.qemu"));
        qemu_img(&["convert", "-O", "raw", p(&img), p(&theirs)]);
        assert_same(&out, &theirs);
        if compress {
            // Compressed units decoded on the pipeline thread, and on three decoder threads.
            for threads in [1, 3] {
                let out = path(&d, &format!("{name}.{threads}.out"));
                let opts = ToVolumeOptions {
                    threads,
                    ..Default::default()
                };
                image_to_volume(&img, &out, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_same(&out, &theirs);
            }
            // Into an existing file (written in place after the precheck) as into a new one
            // (written under a temporary name, then linked into place: none left over).
            let existing = path(&d, &format!("{name}.existing"));
            std::fs::write(&existing, b"x").unwrap();
            let opts = ToVolumeOptions {
                copy: CopyOptions {
                    force: true,
                    ..Default::default()
                },
                ..Default::default()
            };
            image_to_volume(&img, &existing, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_same(&existing, &theirs);
            let temps = names_with(&d, ".tmp");
            assert!(temps.is_empty(), "{name}: {temps:?}");
        }
        let native = matches!(fmt, "qcow2" | "vmdk");
        assert_eq!(s.via, if native { "ember" } else { "qemu-img" }, "{name}");
        if let Some(io) = s.copy.as_ref().and_then(|c| c.io) {
            // No rule keeps more in flight than the device rule; blocks raised to fit 2 MiB
            // clusters are fewer, not more bytes.
            let in_flight = io.block_size as u64 * u64::from(io.queue_depth);
            assert!(in_flight <= DEVICE_IN_FLIGHT, "{name}: {io:?}");
        }
        // (2 MiB clusters hold data and zeros mixed: whether their zero parts become holes is
        // the pipeline's zero-detection granularity, not the reader's business.)
        if name != "big.qcow2" {
            // sparse destination: holes kept (qemu-img's formats too: it writes the staged,
            // sparse new file with --target-is-zero)
            let alloc =
                std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&out).unwrap()) * 512;
            assert!(alloc < size, "{name}: {alloc} bytes allocated of {size}");
        }
    }
}

#[test]
fn hostile_images_never_touch_the_destination() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let base = path(&d, "base.raw");
    sparse_source(&base, 4 << 20, 3);
    let backed = path(&d, "backed.qcow2");
    qcow2_backed_by(&backed, "/etc/passwd", "4M");
    // a compressed image whose first compressed cluster is turned into a bomb
    let bomb = path(&d, "bomb.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        p(&base),
        p(&bomb),
    ]);
    {
        use ember_engine::format::{analyze, FileSource, Reader};
        use ember_engine::plan::Op;
        use flate2::{Compress, Compression, FlushCompress};
        use std::os::unix::fs::FileExt;
        let a = analyze(
            &FileSource::open(&bomb).unwrap(),
            &InspectOptions::default(),
        )
        .unwrap();
        let Reader::Native(plan) = a.reader else {
            panic!()
        };
        let (at, room) = plan
            .ops
            .iter()
            .rev()
            .find_map(|o| match *o {
                Op::Decode { src, src_len, .. } => Some((src, src_len)),
                _ => None,
            })
            .unwrap();
        let mut c = Compress::new(Compression::best(), false);
        let mut z = vec![0u8; 64 << 10];
        c.compress(&vec![0u8; 2 << 20], &mut z, FlushCompress::Finish)
            .unwrap();
        z.truncate(c.total_out() as usize);
        assert!(z.len() as u64 <= room);
        let f = std::fs::OpenOptions::new().write(true).open(&bomb).unwrap();
        f.write_all_at(&z, at).unwrap();
    }
    let raw_claiming = path(&d, "claims-raw.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        p(&base),
        p(&raw_claiming),
    ]);

    for (img, declared, want) in [
        (&backed, None, "backing file"),
        (&bomb, None, "bomb"),
        (&raw_claiming, Some(Format::Raw), "declared raw"),
    ] {
        // 1. destination does not exist: it must not be created
        let dest = path(&d, "new.raw");
        let opts = ToVolumeOptions {
            inspect: InspectOptions {
                declared,
                ..Default::default()
            },
            ..Default::default()
        };
        let e = image_to_volume(img, &dest, &opts).unwrap_err().to_string();
        assert!(e.contains(want), "{img:?}: {e}");
        assert!(!dest.exists(), "{img:?}: destination created");
        // (a compressed image to a new file is decoded into a temporary name, removed)
        let left = names_with(&d, "new.raw");
        assert!(left.is_empty(), "{img:?}: left behind {left:?}");
        // 2. destination exists (and --force would allow overwriting): unchanged
        let existing = path(&d, "existing.raw");
        std::fs::write(&existing, vec![0x5au8; 1 << 20]).unwrap();
        let mut o2 = opts.clone();
        o2.copy = CopyOptions {
            force: true,
            ..Default::default()
        };
        assert!(image_to_volume(img, &existing, &o2).is_err());
        let after = std::fs::read(&existing).unwrap();
        assert!(
            after.len() == 1 << 20 && after.iter().all(|&b| b == 0x5a),
            "{img:?}: destination changed"
        );
    }
}

/// A loop device over a file full of 0xff: holes of the image must be zeroed on it.
#[test]
fn to_volume_on_a_loop_device_zeroes_holes() {
    ember_engine::require_root!();
    ember_engine::require_tool!("qemu-img", "losetup");
    let d = tmp();
    let src = path(&d, "src.raw");
    sparse_source(&src, 32 << 20, 31);
    let img = path(&d, "c.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        p(&src),
        p(&img),
    ]);
    let backing = path(&d, "backing.img");
    std::fs::write(&backing, vec![0xffu8; 32 << 20]).unwrap();
    let lo = Loop::over(&backing);
    let dev = lo.0.clone();
    let s = to_volume(&img, Path::new(&dev)).unwrap();
    assert_eq!(s.via, "ember");
    ember_engine::test_util::assert_same_bytes(Path::new(&dev), &src);
    // Holes and the zero parts of partly used clusters were punched, not written: the loop
    // device's backing file maps no more than the source's non-zero 4 KiB blocks.
    let data = std::fs::read(&src).unwrap();
    let nonzero = data
        .chunks(4096)
        .filter(|b| b.iter().any(|&x| x != 0))
        .count() as u64;
    let mapped = ember_engine::alloc::data_map(&backing).unwrap().total_len();
    assert!(
        mapped <= nonzero * 4096,
        "backing maps {mapped} bytes for {} bytes of non-zero blocks",
        nonzero * 4096
    );
}

/// A loop device over a file, detached when dropped.
struct Loop(String);
impl Loop {
    fn over(backing: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["--find", "--show", p(backing)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A block device (its size a multiple of 512, not of 4096 or of the cluster size) written as
/// qcow2: O_DIRECT reads end at the device's end and the tail cluster is still whole.
#[test]
fn from_volume_qcow2_of_a_loop_device() {
    ember_engine::require_root!();
    ember_engine::require_tool!("qemu-img", "losetup");
    let d = tmp();
    let backing = path(&d, "backing.img");
    let size = (24 << 20) + 3584;
    sparse_source(&backing, size, 47);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&backing)
            .unwrap();
        f.write_all_at(&[0x77u8; 3584], size - 3584).unwrap();
    }
    let lo = Loop::over(&backing);
    let out = path(&d, "dev.qcow2");
    let s = volume_to_image(
        Path::new(&lo.0),
        &out,
        &FromVolumeOptions {
            format: Some(Format::Qcow2),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.virtual_size, size);
    qcow2_is_clean_and_holds(&out, &backing);
}

/// `qemu-img check` finds `img` clean and `qemu-img compare` finds it identical to `raw`.
fn qcow2_is_clean_and_holds(img: &Path, raw: &Path) {
    qemu_img_check(img);
    qemu_img(&["compare", "-q", "-f", "raw", "-F", "qcow2", p(raw), p(img)]);
}

fn qemu_img_check(img: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", p(img)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img check {img:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn from_volume_qcow2_is_clean_and_identical() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    for (size, seed) in [
        ((40 << 20) + 512, 41u64),
        // not a multiple of 512: the last cluster's O_DIRECT read stops at the end of file
        ((40 << 20) + 100, 45),
        (3 << 29, 42),
        (0, 43),
        (4096, 44),
    ] {
        let src = path(&d, "vol.raw");
        if size >= 1 << 30 {
            // a big sparse volume with data spread out (several L2 tables and refcount blocks)
            let f = std::fs::File::create(&src).unwrap();
            f.set_len(size).unwrap();
            use std::os::unix::fs::FileExt;
            for i in 0..40u64 {
                let off = i * (size / 40) + i * 4096;
                f.write_all_at(&vec![(i + 1) as u8; 70_000], off).unwrap();
            }
        } else if size > 0 {
            sparse_source(&src, size, seed);
            // data up to the very last byte
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
            f.write_all_at(&[0x5au8; 100], size - 100).unwrap();
        } else {
            std::fs::File::create(&src).unwrap();
        }
        for compress in [false, true] {
            let out = path(&d, "out.qcow2");
            let s = volume_to_image(
                &src,
                &out,
                &FromVolumeOptions {
                    format: Some(Format::Qcow2),
                    compress,
                    copy: CopyOptions {
                        force: true,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .unwrap();
            // rounded up to whole sectors, as qemu-img makes it (qemu reads sizes in sectors)
            assert_eq!(s.virtual_size, size.div_ceil(512) * 512);
            qcow2_is_clean_and_holds(&out, &src);
            // and Ember reads back its own output
            let back = path(&d, "back.raw");
            let _ = std::fs::remove_file(&back);
            to_volume(&out, &back).unwrap();
            // the sector padding reads as zeros; without it the volume comes back whole
            let padded = std::fs::read(&back).unwrap();
            assert_eq!(padded.len() as u64, size.div_ceil(512) * 512);
            assert!(padded[size as usize..].iter().all(|&b| b == 0));
            std::fs::OpenOptions::new()
                .write(true)
                .open(&back)
                .unwrap()
                .set_len(size)
                .unwrap();
            ember_engine::test_util::assert_same_bytes(&back, &src);
            if compress && size > 1 << 20 {
                assert!(s.qcow2.as_ref().unwrap().compressed_clusters > 0);
            }
            if !compress {
                // Host clusters follow guest order (reads complete out of order; data is
                // placed in order), so a sequential reader of the image reads sequentially.
                let map: serde_json::Value =
                    serde_json::from_str(&qemu_img(&["map", "--output=json", p(&out)])).unwrap();
                let hosts: Vec<u64> = map
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|e| e["offset"].as_u64())
                    .collect();
                assert!(size < 1 << 20 || hosts.len() > 1, "{map}");
                assert!(hosts.windows(2).all(|w| w[0] < w[1]), "{hosts:?}");
            }
        }
    }
}

#[test]
fn from_volume_reads_the_volume_as_raw_whatever_it_contains() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    // A volume whose data is a qcow2 image with a backing file naming a host file: it must be
    // copied as data, never interpreted (CVE-2026-24708).
    let vol = path(&d, "vol.raw");
    qcow2_backed_by(&vol, "/etc/passwd", "1G");
    for fmt in [Format::Raw, Format::Qcow2] {
        let out = path(&d, "out.img");
        volume_to_image(
            &vol,
            &out,
            &FromVolumeOptions {
                format: Some(fmt),
                copy: CopyOptions {
                    force: true,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
        qemu_img(&[
            "compare",
            "-q",
            "-f",
            "raw",
            "-F",
            fmt.qemu_name(),
            p(&vol),
            p(&out),
        ]);
    }
    // Existing output without force: refused, untouched.
    let out = path(&d, "keep.img");
    std::fs::write(&out, b"keep").unwrap();
    let e = volume_to_image(
        &vol,
        &out,
        &FromVolumeOptions {
            format: Some(Format::Qcow2),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("exists"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
}

/// What is written is the file that was inspected: once it is open, replacing the file at
/// its path (rename over it) changes nothing, for raw copies and for image plans alike.
#[test]
fn the_inspected_file_is_read_even_when_its_path_is_replaced() {
    ember_engine::require_tool!("qemu-img");
    use ember_engine::format::{analyze, FileSource, Reader};
    let d = tmp();
    let (a, b) = (path(&d, "a.raw"), path(&d, "b.raw"));
    sparse_source(&a, 8 << 20, 1);
    sparse_source(&b, 8 << 20, 2);
    let (qa, qb) = (path(&d, "a.qcow2"), path(&d, "b.qcow2"));
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", p(&a), p(&qa)]);
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", p(&b), p(&qb)]);

    // raw: open, then b replaces a at its path
    let img = path(&d, "img.raw");
    std::fs::copy(&a, &img).unwrap();
    let f = std::fs::File::open(&img).unwrap();
    std::fs::rename(&b, &img).unwrap();
    let out = path(&d, "raw.out");
    let o = CopyOptions::default();
    Job::new(Source::Open(f, &img), Destination::path(&out), &o)
        .run()
        .unwrap();
    assert_same(&out, &a);

    // qcow2: inspected through the descriptor, then the path is replaced
    let img = path(&d, "img.qcow2");
    std::fs::copy(&qa, &img).unwrap();
    let src = FileSource::open(&img).unwrap();
    let an = analyze(&src, &InspectOptions::default()).unwrap();
    let Reader::Native(plan) = an.reader else {
        panic!("qcow2 has a native reader")
    };
    std::fs::rename(&qb, &img).unwrap();
    let out = path(&d, "qcow2.out");
    let image = Source::Image(src.into_file(), &img, &plan);
    Job::new(image, Destination::path(&out), &o).run().unwrap();
    assert_same(&out, &a);
}

#[test]
fn to_window_writes_the_image_into_a_larger_volume_and_keeps_its_tail() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let src = path(&d, "src.raw");
    let size: u64 = 8 << 20;
    sparse_source(&src, size, 5);
    let theirs = path(&d, "theirs.raw");
    let vol = path(&d, "volume.raw");
    for (name, fmt, compress) in [
        ("p.qcow2", "qcow2", false),
        ("c.qcow2", "qcow2", true),
        ("s.vmdk", "vmdk", false),
        ("r.raw", "raw", false),
    ] {
        let img = path(&d, name);
        let mut args = vec!["convert", "-f", "raw", "-O", fmt];
        if compress {
            args.push("-c");
        }
        args.extend([p(&src), p(&img)]);
        qemu_img(&args);
        qemu_img(&["convert", "-O", "raw", p(&img), p(&theirs)]);
        // A 32 MiB file full of old bytes (a volume, or a PV whose window from 5 MiB is the
        // volume): the image's holes must read as zeros, the bytes around it must stay, and
        // the file keeps its size.
        for at in [0u64, 5 << 20] {
            std::fs::write(&vol, vec![0xA5u8; 32 << 20]).unwrap();
            let w = ember_engine::endpoint::Window {
                path: vol.clone(),
                offset: at,
                len: Some(size),
            };
            ember_engine::format::convert::image_to_window(&img, &w, &ToVolumeOptions::default())
                .unwrap_or_else(|e| panic!("{name} at {at}: {e}"));
            let got = std::fs::read(&vol).unwrap();
            let (at, end) = (at as usize, (at + size) as usize);
            assert_eq!(got.len(), 32 << 20, "{name}: size kept");
            assert_eq!(
                &got[at..end],
                &std::fs::read(&theirs).unwrap()[..],
                "{name} at {at}"
            );
            assert!(got[..at].iter().all(|b| *b == 0xA5), "{name}: head kept");
            assert!(got[end..].iter().all(|b| *b == 0xA5), "{name}: tail kept");
        }
    }
    // qemu-img's formats are not written into a window: refused before any write.
    let vhd = path(&d, "a.vhd");
    qemu_img(&["convert", "-f", "raw", "-O", "vpc", p(&src), p(&vhd)]);
    std::fs::write(&vol, vec![0xA5u8; 32 << 20]).unwrap();
    let w = ember_engine::endpoint::Window {
        path: vol.clone(),
        offset: 0,
        len: Some(size),
    };
    let e = ember_engine::format::convert::image_to_window(&vhd, &w, &ToVolumeOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("qemu-img"), "{e}");
    assert!(std::fs::read(&vol).unwrap().iter().all(|b| *b == 0xA5));
}
