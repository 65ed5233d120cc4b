//! Hostile images: each must be refused by analysis (before anything could be written) with
//! an error that names the problem. Built with qemu-img, then corrupted by hand.

mod images_support;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ember_engine::copy::{Destination, Job, Source};
use ember_engine::format::{self, qcow2, FileSource, Format, ImageSource, InspectOptions, Reader};
use ember_engine::plan::Op;
use images_support::*;

fn refused(img: &Path, want: &str) {
    let e = match analyze(img) {
        Ok(a) => panic!("{img:?} accepted as {:?}", a.format),
        Err(e) => e.to_string(),
    };
    assert!(
        e.to_lowercase().contains(&want.to_lowercase()),
        "{img:?}: {e:?} (wanted {want:?})"
    );
    // inspect reports it unsafe with the same reason
    let s = FileSource::open(img).unwrap();
    let r = format::inspect(&s, &InspectOptions::default()).unwrap();
    assert!(!r.safe && !r.reasons.is_empty(), "{r:?}");
}

fn patch(img: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn read_u64(img: &Path, off: u64) -> u64 {
    let f = std::fs::File::open(img).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    u64::from_be_bytes(b)
}

/// A small qcow2 with data in a few clusters.
fn base_qcow2(d: &tempfile::TempDir, name: &str, extra: &[&str]) -> PathBuf {
    let src = path(d, "src.raw");
    sparse_source(&src, 4 << 20, 99);
    let img = path(d, name);
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[p(&src), p(&img)]);
    qemu_img(&args);
    img
}

fn header(img: &Path) -> qcow2::Header {
    qcow2::parse_header(&FileSource::open(img).unwrap(), 1 << 50).unwrap()
}

#[test]
fn qcow2_backing_file_data_file_and_encryption_refused() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let base = base_qcow2(&d, "base.qcow2", &[]);
    let top = path(&d, "top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        p(&base),
        "-F",
        "qcow2",
        p(&top),
    ]);
    refused(&top, "backing file");
    // a backing file naming a host path
    let evil = path(&d, "evil.qcow2");
    qcow2_backed_by(&evil, "/etc/shadow", "1M");
    refused(&evil, "/etc/shadow");
    let df = path(&d, "df.qcow2");
    let data = path(&d, "data.raw");
    let o = format!("data_file={}", p(&data));
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &o, p(&df), "1M"]);
    refused(&df, "data file");
    let enc = path(&d, "enc.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "--object",
        "secret,id=s0,data=abc",
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
        p(&enc),
        "1M",
    ]);
    refused(&enc, "encrypted");
}

#[test]
fn qcow2_feature_bits() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let img = base_qcow2(&d, "a.qcow2", &[]);
    let orig = std::fs::read(&img).unwrap();
    for (byte_at, val, want) in [
        (0x4f, 0x02u8, "corrupt"),
        (0x4f, 0x20, "unknown incompatible"),
        (0x48, 0x01, "unknown incompatible"),
        (0x4f, 0x04, "data file"),
        (0x23, 0x01, "encrypted"),
    ] {
        std::fs::write(&img, &orig).unwrap();
        patch(&img, byte_at, &[val]);
        refused(&img, want);
    }
    // the dirty bit alone is fine
    std::fs::write(&img, &orig).unwrap();
    patch(&img, 0x4f, &[0x01]);
    analyze(&img).unwrap();
}

#[test]
fn qcow2_tables_out_of_range_or_overlapping() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let img = base_qcow2(&d, "a.qcow2", &[]);
    let orig = std::fs::read(&img).unwrap();
    let h = header(&img);
    let len = orig.len() as u64;
    let reset = || std::fs::write(&img, &orig).unwrap();

    // L1 table past EOF
    patch(
        &img,
        40,
        &(len + (1 << 20))
            .div_ceil(65536)
            .wrapping_mul(65536)
            .to_be_bytes(),
    );
    refused(&img, "past the end");
    reset();
    // L1 table on top of the refcount table
    patch(&img, 40, &h.refcount_table_offset.to_be_bytes());
    refused(&img, "overlaps");
    reset();
    // absurd virtual size (and an l1_size to match): refused by the 1 PiB cap
    patch(&img, 24, &(1u64 << 60).to_be_bytes());
    patch(&img, 36, &u32::MAX.to_be_bytes());
    refused(&img, "exceeds the limit");
    reset();
    // huge l1_size with a plausible size: L1 cap
    patch(&img, 36, &0x1000_0000u32.to_be_bytes());
    refused(&img, "exceeds the cap");
    reset();
    // refcount table clusters huge
    patch(&img, 56, &0xffff_ffffu32.to_be_bytes());
    refused(&img, "refcount table");
    reset();
    // cluster_bits out of range
    patch(&img, 20, &31u32.to_be_bytes());
    refused(&img, "cluster_bits");
    reset();

    // An L2 entry pointing into the header cluster / at the L1 table / duplicated.
    let l1 = read_u64(&img, h.l1_table_offset) & 0x00ff_ffff_ffff_fe00;
    assert_ne!(l1, 0);
    let mut data_entries = vec![];
    for k in 0..(65536 / 8) {
        let e = read_u64(&img, l1 + k * 8);
        if e & 0x00ff_ffff_ffff_fe00 != 0 && e & (1 << 62) == 0 {
            data_entries.push(k);
        }
    }
    assert!(data_entries.len() >= 2);
    let first = l1 + data_entries[0] * 8;
    let second = l1 + data_entries[1] * 8;
    patch(
        &img,
        first,
        &((1u64 << 63) | h.l1_table_offset).to_be_bytes(),
    );
    refused(&img, "overlaps");
    reset();
    let e1 = read_u64(&img, first);
    patch(&img, second, &e1.to_be_bytes());
    refused(&img, "overlaps");
    reset();
    patch(
        &img,
        first,
        &((1u64 << 63) | ((len + (1 << 20)) & !0xffff)).to_be_bytes(),
    );
    refused(&img, "past the end");
    reset();
    patch(
        &img,
        first,
        &((1u64 << 63) | 0x1000 | (1 << 3)).to_be_bytes(),
    );
    refused(&img, "reserved bits");
    reset();
    analyze(&img).unwrap();
}

/// Rewrites the first compressed cluster of a compressed qcow2 so that it inflates to
/// `inflated` bytes (a bomb) while keeping the L2 entry's sector count honest.
#[test]
fn qcow2_compressed_cluster_bomb_refused_by_decode() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let img = base_qcow2(&d, "c.qcow2", &["-c"]);
    let a = analyze(&img).unwrap();
    let Reader::Native(plan) = a.reader else {
        panic!()
    };
    let (src, src_len, len) = plan
        .ops
        .iter()
        .find_map(|op| match *op {
            Op::Decode {
                src, src_len, len, ..
            } => Some((src, src_len, len)),
            _ => None,
        })
        .unwrap();
    // A deflate stream of 16 MiB of zeros is ~16 KiB: write a small bomb that fits.
    use flate2::{Compress, Compression, FlushCompress};
    let zeros = vec![0u8; 4 << 20];
    let mut c = Compress::new(Compression::best(), false);
    let mut bomb = vec![0u8; 64 << 10];
    c.compress(&zeros, &mut bomb, FlushCompress::Finish)
        .unwrap();
    bomb.truncate(c.total_out() as usize);
    assert!(
        (bomb.len() as u64) <= src_len,
        "bomb {} > slot {src_len}",
        bomb.len()
    );
    patch(&img, src, &bomb);
    // The header walk accepts it (sizes are in range); the precheck of compressed data and
    // the decode step refuse it.
    let a = analyze(&img).unwrap();
    let unit = a.cluster_size.unwrap();
    let s = FileSource::open(&img).unwrap();
    let Reader::Native(plan) = a.reader else {
        panic!()
    };
    let e = format::verify_compressed(&s, &plan, unit, 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bomb"), "{e}");
    let mut input = vec![0u8; src_len as usize];
    s.read_exact_at(src, &mut input).unwrap();
    let mut out = vec![0u8; len as usize];
    let e = format::decode(ember_engine::plan::Codec::Deflate, &input, &mut out).unwrap_err();
    assert!(e.to_string().contains("bomb"), "{e}");
    // Without the precheck, the pipeline's own decode (inline, or on decoder threads) fails
    // the job naming the cluster; it never writes the bomb's output.
    for threads in [1, 2] {
        let dst = d.path().join(format!("bomb.{threads}.raw"));
        let opts = ember_engine::options::CopyOptions {
            decode_threads: threads,
            ..Default::default()
        };
        let image = std::fs::File::open(&img).unwrap();
        let e = Job::new(
            Source::Image(image, &img, &plan),
            Destination::path(&dst),
            &opts,
        )
        .run()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("compressed cluster at offset {src}")) && e.contains("bomb"),
            "{threads} threads: {e}"
        );
    }
}

/// Several L1 entries sharing one L2 table would multiply a small file into a huge plan.
#[test]
fn qcow2_shared_l2_table_refused() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let img = base_qcow2(&d, "s.qcow2", &["-o", "cluster_size=4k"]);
    let h = header(&img);
    assert!(h.l1_size >= 2);
    let e0 = read_u64(&img, h.l1_table_offset);
    let e1 = read_u64(&img, h.l1_table_offset + 8);
    assert!(e0 != 0 && e1 != 0);
    analyze(&img).unwrap();
    patch(&img, h.l1_table_offset + 8, &e0.to_be_bytes());
    refused(&img, "L2 table at");
}

#[test]
fn qcow2_truncated_at_every_header_length_and_table_step() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let img = base_qcow2(&d, "a.qcow2", &[]);
    let bytes = std::fs::read(&img).unwrap();
    let full = bytes.len();
    let mut lens: Vec<usize> = (0..=4096).collect();
    lens.extend((4096..full).step_by(4093));
    for n in lens {
        let r = format::analyze(&bytes[..n], &InspectOptions::default());
        if let (true, Ok(a)) = (n >= 4, r) {
            panic!("truncated at {n} of {full} accepted as {:?}", a.format);
        }
    }
    format::analyze(&bytes[..], &InspectOptions::default()).unwrap();
}

#[test]
fn vmdk_hostile() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let src = path(&d, "src.raw");
    sparse_source(&src, 4 << 20, 5);
    let img = path(&d, "a.vmdk");
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk", p(&src), p(&img)]);
    let orig = std::fs::read(&img).unwrap();
    analyze(&img).unwrap();
    let reset = || std::fs::write(&img, &orig).unwrap();
    let desc_len = u64::from_le_bytes(orig[0x24..0x2c].try_into().unwrap()) as usize * 512;
    let desc = String::from_utf8_lossy(&orig[512..512 + desc_len])
        .trim_end_matches('\0')
        .to_string();
    let set_desc = |text: &str| {
        let mut b = text.as_bytes().to_vec();
        assert!(b.len() <= desc_len);
        b.resize(desc_len, 0);
        patch(&img, 512, &b);
    };
    let line = desc
        .lines()
        .find(|l| l.starts_with("RW "))
        .unwrap()
        .to_string();

    // CVE-2022-47951: an extent naming a host file
    set_desc(&desc.replace(&line, "RW 8192 FLAT \"/etc/shadow\" 0"));
    refused(&img, "/etc/shadow");
    set_desc(&desc.replace(&line, "RW 8192 SPARSE \"../x.vmdk\""));
    refused(&img, "path separator");
    set_desc(&desc.replace(&line, &format!("{line}\nRW 8192 SPARSE \"b.vmdk\"")));
    refused(&img, "2 extents");
    set_desc(&desc.replace("monolithicSparse", "monolithicFlat"));
    refused(&img, "createType");
    set_desc(&desc.replace("monolithicSparse", "vmfsSparse"));
    refused(&img, "createType");
    // two createType lines of different case: oslo reads the first one case-insensitively,
    // qemu the exact-case one (tests/inspector_parity.py shows qemu following a flat extent)
    set_desc(&desc.replace(
        "createType=\"monolithicSparse\"",
        "CREATETYPE=\"monolithicSparse\"\ncreateType=\"monolithicFlat\"",
    ));
    refused(&img, "createType given twice");
    set_desc(&desc.replace(&line, "RW 8192 SPARSE \"a.vmdk\"\nbogus line"));
    refused(&img, "not a key=value");
    set_desc(&(desc.clone() + "parentFileNameHint=\"/var/lib/base.vmdk\"\n"));
    refused(&img, "parent");
    reset();
    // descriptor size 2 MiB (memory exhaustion attempt)
    patch(&img, 0x24, &4096u64.to_le_bytes());
    refused(&img, "exceeds the cap");
    reset();
    // descriptor offset elsewhere
    patch(&img, 0x1c, &7u64.to_le_bytes());
    refused(&img, "descriptorOffset");
    reset();
    // grain size not a power of two, GTEs per GT wrong, capacity absurd
    patch(&img, 20, &100u64.to_le_bytes());
    refused(&img, "grainSize");
    reset();
    patch(&img, 44, &4096u32.to_le_bytes());
    refused(&img, "numGTEsPerGT");
    reset();
    patch(&img, 12, &(1u64 << 60).to_le_bytes());
    refused(&img, "exceeds the limit");
    reset();
    // grain directory past EOF
    patch(&img, 56, &(1u64 << 40).to_le_bytes());
    refused(&img, "past the end");
    reset();
    // a footer that points to another footer
    patch(&img, 56, &u64::MAX.to_le_bytes());
    refused(&img, "footer");
    reset();
    // truncated at every header length, then in steps through the tables and grains
    let mut lens: Vec<usize> = (0..=4096).collect();
    lens.extend((4096..orig.len()).step_by(4093));
    for n in lens {
        let r = format::analyze(&orig[..n], &InspectOptions::default());
        assert!(n < 4 || r.is_err(), "truncated at {n} accepted");
    }
    // a text descriptor (monolithicFlat) pointing at a host file
    let flat = path(&d, "flat.vmdk");
    std::fs::write(
        &flat,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"/etc/passwd\" 0\n",
    )
    .unwrap();
    refused(&flat, "another file");
}

#[test]
fn declared_format_must_match_content() {
    ember_engine::require_tool!("qemu-img");
    let d = tmp();
    let img = base_qcow2(&d, "a.qcow2", &[]);
    for declared in [Format::Raw, Format::Vmdk, Format::Vhd] {
        let e = analyze_as(&img, declared).unwrap_err().to_string();
        assert!(e.contains("declared") && e.contains("qcow2"), "{e}");
    }
    // --max-virtual-size below the image's size
    let e = format::analyze(
        &FileSource::open(&img).unwrap(),
        &InspectOptions {
            declared: Some(Format::Qcow2),
            max_virtual_size: 1 << 20,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("exceeds the limit"), "{e}");
    // raw that is raw is fine when declared raw
    let src = path(&d, "src.raw");
    assert_eq!(analyze_as(&src, Format::Raw).unwrap().format, Format::Raw);
}
