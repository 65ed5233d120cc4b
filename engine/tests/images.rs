//! Image readers against real qemu-img made images: the plan, executed, must equal
//! `qemu-img convert -O raw` byte for byte; detection must agree with qemu-img.

mod images_support;

use ember_engine::format::{self, FileSource, Format, InspectOptions, Reader};
use ember_engine::plan::Op;
use images_support::*;

/// Converts `src` to an image with `args`, reads it natively, and compares with qemu-img's
/// own raw conversion. Returns the plan's op count kinds (copy, zero, decode).
fn roundtrip(
    name: &str,
    src_size: u64,
    seed: u64,
    out_fmt: &str,
    opts: &[&str],
) -> (usize, usize, usize) {
    let d = tmp();
    let src = path(&d, "src.raw");
    sparse_source(&src, src_size, seed);
    let img = path(&d, name);
    let mut args = vec!["convert", "-f", "raw", "-O", out_fmt];
    args.extend_from_slice(opts);
    args.push(p(&src));
    args.push(p(&img));
    qemu_img(&args);
    check_image(&img, &src)
}

fn check_image(img: &std::path::Path, expect_raw: &std::path::Path) -> (usize, usize, usize) {
    let a = analyze(img).unwrap_or_else(|e| panic!("{img:?}: {e}"));
    assert_eq!(a.virtual_size, virtual_size(img), "virtual size of {img:?}");
    let Reader::Native(plan) = a.reader else {
        panic!("native reader expected")
    };
    let d = tmp();
    let ours = path(&d, "ours.raw");
    execute(img, &plan, &ours);
    let theirs = path(&d, "theirs.raw");
    qemu_img(&["convert", "-O", "raw", p(img), p(&theirs)]);
    assert_same(&ours, &theirs);
    // and the source itself (qemu-img's raw output equals the source)
    if std::fs::metadata(expect_raw).unwrap().len() == plan.logical_size {
        assert_same(&ours, expect_raw);
    }
    let mut k = (0, 0, 0);
    for op in &plan.ops {
        match op {
            Op::Copy { .. } => k.0 += 1,
            Op::Zero { .. } => k.1 += 1,
            Op::Decode { .. } => k.2 += 1,
            Op::Skip { .. } => panic!("image plans have no Skip"),
        }
    }
    k
}

#[test]
fn qcow2_v3_cluster_sizes() {
    ember_engine::require_tool!("qemu-img");
    for (cs, seed) in [("4k", 1u64), ("64k", 2), ("2M", 3)] {
        let o = format!("cluster_size={cs}");
        let (c, _, dec) = roundtrip("a.qcow2", 24 << 20, seed, "qcow2", &["-o", &o]);
        assert!(c > 0 && dec == 0, "{cs}: copies {c}");
    }
}

#[test]
fn qcow2_v2_compat_010_and_unaligned_size() {
    ember_engine::require_tool!("qemu-img");
    roundtrip(
        "v2.qcow2",
        (16 << 20) + 3 * 512,
        4,
        "qcow2",
        &["-o", "compat=0.10"],
    );
    roundtrip("v3.qcow2", (5 << 20) + 512, 5, "qcow2", &[]);
}

#[test]
fn qcow2_compressed_deflate_and_zstd() {
    ember_engine::require_tool!("qemu-img");
    let (_, _, dec) = roundtrip("c.qcow2", (20 << 20) + 1536, 6, "qcow2", &["-c"]);
    assert!(dec > 0);
    let (_, _, dec) = roundtrip(
        "z.qcow2",
        (20 << 20) + 1536,
        7,
        "qcow2",
        &["-c", "-o", "compression_type=zstd"],
    );
    assert!(dec > 0);
    let (_, _, dec) = roundtrip(
        "c4k.qcow2",
        6 << 20,
        8,
        "qcow2",
        &["-c", "-o", "cluster_size=4k"],
    );
    assert!(dec > 0);
}

#[test]
fn qcow2_preallocation() {
    ember_engine::require_tool!("qemu-img");
    for pre in ["metadata", "falloc", "full"] {
        let o = format!("preallocation={pre}");
        roundtrip("pre.qcow2", 8 << 20, 9, "qcow2", &["-o", &o]);
    }
}

#[test]
fn qcow2_zero_clusters_and_extended_l2_subclusters() {
    ember_engine::require_tool!("qemu-img", "qemu-io");
    let d = tmp();
    for (name, opts) in [
        ("std.qcow2", "cluster_size=64k"),
        ("ext.qcow2", "extended_l2=on,cluster_size=64k"),
        ("ext2m.qcow2", "extended_l2=on,cluster_size=2M"),
    ] {
        let img = path(&d, name);
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, p(&img), "9M"]);
        run(
            "qemu-io",
            &[
                "-c",
                "write -P 0xab 4k 8k",
                "-c",
                "write -P 0x11 100k 300k",
                "-c",
                "write -z 128k 64k",
                "-c",
                "write -P 0xcd 1000k 2k",
                "-c",
                "write -z 3M 2M",
                "-c",
                "write -P 0x5a 8M 4k",
                "-c",
                "write -z 8M 2k",
                p(&img),
            ],
        );
        let (c, z, _) = check_image(&img, &img);
        assert!(c > 0 && z > 0, "{name}: copies {c} zeros {z}");
    }
}

#[test]
fn vmdk_monolithic_sparse_and_stream_optimized() {
    ember_engine::require_tool!("qemu-img");
    let (c, _, _) = roundtrip("ms.vmdk", (12 << 20) + 512, 10, "vmdk", &[]);
    assert!(c > 0);
    let (_, _, dec) = roundtrip(
        "so.vmdk",
        (12 << 20) + 512,
        11,
        "vmdk",
        &["-o", "subformat=streamOptimized"],
    );
    assert!(dec > 0);
    let (c, _, _) = roundtrip(
        "big.vmdk",
        200 << 20,
        12,
        "vmdk",
        &["-o", "subformat=monolithicSparse"],
    );
    assert!(c > 0);
}

#[test]
fn other_formats_detected_with_qemu_sizes() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let src = path(&d, "src.raw");
    sparse_source(&src, 10 << 20, 13);
    for (fmt, opts, want) in [
        ("vpc", "subformat=dynamic", Format::Vhd),
        ("vhdx", "subformat=dynamic", Format::Vhdx),
        ("vdi", "static=off", Format::Vdi),
        ("qed", "cluster_size=65536", Format::Qed),
        ("vmdk", "subformat=monolithicFlat", Format::Vmdk),
    ] {
        let img = path(&d, &format!("x.{fmt}"));
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            fmt,
            "-o",
            opts,
            p(&src),
            p(&img),
        ]);
        let s = FileSource::open(&img).unwrap();
        let r = format::inspect(&s, &InspectOptions::default()).unwrap();
        assert_eq!(r.format, want, "{fmt}: {r:?}");
        match want {
            Format::Qed | Format::Vmdk => {
                assert!(!r.safe, "{fmt} must be refused: {r:?}");
                eprintln!("{fmt}: refused: {:?}", r.reasons);
            }
            _ => {
                assert!(r.safe, "{fmt}: {:?}", r.reasons);
                // qemu's vpc size comes from CHS geometry; ours is the footer's current size,
                // which qemu-img also reports for disks it created.
                assert_eq!(r.virtual_size, virtual_size(&img), "{fmt} virtual size");
                let a = analyze(&img).unwrap();
                assert!(matches!(a.reader, Reader::Qemu(f) if f == want));
            }
        }
    }
}

#[test]
fn raw_iso_and_partitioned_raw_are_raw_like() {
    let d = tmp();
    let f = path(&d, "disk.raw");
    let mut v = vec![0u8; 1 << 20];
    v[510] = 0x55;
    v[511] = 0xaa;
    v[446 + 4] = 0xee;
    v[446 + 8] = 1;
    v[512..520].copy_from_slice(b"EFI PART");
    std::fs::write(&f, &v).unwrap();
    // oslo's check: the protective entry starts at CHS 0/0/2
    let e = analyze(&f).unwrap_err().to_string();
    assert!(e.contains("CHS"), "{e}");
    v[446 + 2] = 2;
    std::fs::write(&f, &v).unwrap();
    let a = analyze(&f).unwrap();
    assert_eq!(a.format, Format::Gpt);
    assert!(matches!(a.reader, Reader::Raw));
    // declared raw: accepted, read as raw
    assert_eq!(analyze_as(&f, Format::Raw).unwrap().format, Format::Raw);
    // a GPT whose protective MBR has a second partition fails oslo's "mbr" check
    v[446 + 16 + 4] = 0x83;
    std::fs::write(&f, &v).unwrap();
    assert!(analyze(&f).is_err());
}

#[test]
fn luks_container_is_detected_and_copied_as_raw() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let img = path(&d, "a.luks");
    qemu_img(&[
        "create",
        "-q",
        "--object",
        "secret,id=s0,data=abc",
        "-f",
        "luks",
        "-o",
        "key-secret=s0,iter-time=10",
        p(&img),
        "4M",
    ]);
    let a = analyze(&img).unwrap();
    assert_eq!(a.format, Format::Luks);
    assert!(matches!(a.reader, Reader::Raw));
    assert!(a.subformat.unwrap().contains("LUKS1"));
    // declared raw is accepted (Cinder reports LUKS as raw); declared qcow2 is not
    assert_eq!(analyze_as(&img, Format::Raw).unwrap().format, Format::Raw);
    assert!(analyze_as(&img, Format::Qcow2).is_err());
}

/// A streamOptimized image whose grain directory is announced in a footer (GD_AT_END), as
/// VMware writes them: built from qemu-img's output by moving the GD offset into a footer.
#[test]
fn vmdk_stream_optimized_with_footer() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let src = path(&d, "src.raw");
    sparse_source(&src, 6 << 20, 17);
    let img = path(&d, "so.vmdk");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        p(&src),
        p(&img),
    ]);
    let mut b = std::fs::read(&img).unwrap();
    // pad to a sector, then footer marker (size 0, type 3), footer (header copy), EOS marker
    b.resize(b.len().div_ceil(512) * 512, 0);
    let header: Vec<u8> = b[..512].to_vec();
    let mut marker = vec![0u8; 512];
    marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&marker);
    b.extend_from_slice(&header);
    b.extend_from_slice(&[0u8; 512]);
    b[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    let a = analyze(&img).unwrap();
    let Reader::Native(plan) = a.reader else {
        panic!()
    };
    let out = path(&d, "out.raw");
    execute(&img, &plan, &out);
    assert_same(&out, &src);
    // the footer itself deferring to a footer: refused
    let n = b.len();
    b[n - 1024 + 56..n - 1024 + 64].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    let e = analyze(&img).unwrap_err().to_string();
    assert!(e.contains("footer"), "{e}");
}
