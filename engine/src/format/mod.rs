//! Image formats: detection from content, safety inspection, and readers that turn an image
//! into an extent [`Plan`] for the engine.
//!
//! ```text
//! image file -> detect (every probe; >1 match = format confusion) -> declared format check
//!            -> header validation (caps, ranges, feature bits, backing/data files, extents)
//!            -> table walk (qcow2 L1/L2, vmdk GD/GT; one table in memory at a time)
//!            -> Plan { Copy | Zero | Decode }   (nothing is written before this succeeds)
//! ```
//!
//! Rules (Cinder/oslo format_inspector, CVE-2022-47951, CVE-2024-32498, OSSA-2024-002,
//! CVE-2026-24708): an image's format is decided by its declared format confirmed by its
//! content, never by probing alone; a volume's own data is always raw and never probed.

pub mod codec;
pub mod convert;
pub mod error;
pub mod gpt;
pub mod iso;
pub mod luks;
pub mod overlap;
pub mod qcow2;
pub mod source;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use std::fmt;
use std::str::FromStr;

pub use codec::{decode, verify_compressed};
pub use error::{ImageError, ImageResult};
pub use source::{FileSource, ImageSource};

use crate::plan::Plan;

/// Default cap on an image's virtual size: 1 PiB.
pub const DEFAULT_MAX_VIRTUAL_SIZE: u64 = 1 << 50;

/// Bytes read from the start of a file for detection (ISO descriptors sit at 32 KiB+).
const HEAD_LEN: usize = 64 * 1024;

/// An image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
    Iso,
    Luks,
    /// Raw disk with a GPT (protective MBR).
    Gpt,
    /// Raw disk with an MBR partition table.
    Mbr,
    Qed,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Iso => "iso",
            Format::Luks => "luks",
            Format::Gpt => "gpt",
            Format::Mbr => "mbr",
            Format::Qed => "qed",
        }
    }

    /// Formats whose bytes are the disk itself (read as raw).
    pub fn is_raw_like(self) -> bool {
        matches!(
            self,
            Format::Raw | Format::Iso | Format::Luks | Format::Gpt | Format::Mbr
        )
    }

    /// qemu-img's `-f` name, for formats Ember hands to qemu-img.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Vhd => "vpc",
            f if f.is_raw_like() => "raw",
            f => f.name(),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "raw" => Format::Raw,
            "qcow2" => Format::Qcow2,
            "vmdk" => Format::Vmdk,
            "vhd" | "vpc" => Format::Vhd,
            "vhdx" => Format::Vhdx,
            "vdi" => Format::Vdi,
            "iso" => Format::Iso,
            "luks" => Format::Luks,
            "gpt" => Format::Gpt,
            "mbr" => Format::Mbr,
            "qed" => Format::Qed,
            _ => return Err(format!("unknown image format {s:?}")),
        })
    }
}

/// Header facts of a format Ember does not read natively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatInfo {
    pub virtual_size: u64,
    pub cluster_size: Option<u64>,
    pub subformat: String,
}

impl FormatInfo {
    pub fn new(virtual_size: u64, cluster_size: Option<u64>, subformat: &str) -> Self {
        FormatInfo {
            virtual_size,
            cluster_size,
            subformat: subformat.to_string(),
        }
    }
}

/// Inspection settings.
#[derive(Debug, Clone, Copy)]
pub struct InspectOptions {
    /// The format the caller says the image is (`None` = auto-detect).
    pub declared: Option<Format>,
    /// Largest virtual size accepted.
    pub max_virtual_size: u64,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            declared: None,
            max_virtual_size: DEFAULT_MAX_VIRTUAL_SIZE,
        }
    }
}

/// How the image's data is to be read.
#[derive(Debug, Clone)]
pub enum Reader {
    /// The file is the disk: copy it as raw (sparse-aware).
    Raw,
    /// Ember's native reader produced this plan (qcow2, vmdk).
    Native(Plan),
    /// Hand to `qemu-img convert -f <format>` (vhd, vhdx, vdi), after inspection passed.
    Qemu(Format),
}

/// The result of a successful (safe) analysis.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub format: Format,
    /// Every format whose signature matched (before resolving hybrid ISOs).
    pub matched: Vec<Format>,
    pub virtual_size: u64,
    pub cluster_size: Option<u64>,
    pub subformat: Option<String>,
    /// Guest bytes backed by data (native readers only).
    pub data_size: Option<u64>,
    pub reader: Reader,
}

/// What `ember image inspect` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InspectReport {
    pub format: Format,
    pub declared: Option<Format>,
    pub matched: Vec<Format>,
    pub virtual_size: u64,
    pub actual_size: u64,
    pub file_size: u64,
    pub cluster_size: Option<u64>,
    pub subformat: Option<String>,
    pub data_size: Option<u64>,
    pub safe: bool,
    pub reasons: Vec<String>,
}

/// Every format whose signature is present in `head` (raw is implied, never listed).
pub fn probe_all(head: &[u8]) -> Vec<Format> {
    let mut v = Vec::new();
    if qcow2::header::probe(head) {
        v.push(Format::Qcow2);
    }
    if head.starts_with(b"QED\0") {
        v.push(Format::Qed);
    }
    if vmdk::probe(head) || vmdk::probe_cowd(head) || vmdk::probe_text(head) {
        v.push(Format::Vmdk);
    }
    if vhd::probe(head) {
        v.push(Format::Vhd);
    }
    if vhdx::probe(head) {
        v.push(Format::Vhdx);
    }
    if vdi::probe(head) {
        v.push(Format::Vdi);
    }
    if iso::probe(head) {
        v.push(Format::Iso);
    }
    if luks::probe(head) {
        v.push(Format::Luks);
    }
    match gpt::probe(head) {
        Some(gpt::Partitioned::Gpt) => v.push(Format::Gpt),
        Some(gpt::Partitioned::Mbr) => v.push(Format::Mbr),
        None => {}
    }
    v
}

/// Resolves the matches to one format, refusing format confusion. A hybrid ISO (ISO 9660
/// plus an MBR/GPT for USB boot) is an ISO; any other pair is refused.
pub fn resolve(matched: &[Format]) -> ImageResult<Format> {
    let mut m: Vec<Format> = matched.to_vec();
    if m.contains(&Format::Iso) {
        m.retain(|f| !matches!(f, Format::Gpt | Format::Mbr));
    }
    match m.as_slice() {
        [] => Ok(Format::Raw),
        [f] => Ok(*f),
        many => Err(ImageError::MultipleFormats {
            formats: many.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// Reads the head of the image.
fn read_head(src: &(impl ImageSource + ?Sized)) -> ImageResult<Vec<u8>> {
    let mut head = vec![0u8; HEAD_LEN.min(src.len() as usize)];
    src.read_exact_at(0, &mut head)?;
    Ok(head)
}

/// Detects the format from content alone (format confusion is an error).
pub fn detect(src: &(impl ImageSource + ?Sized)) -> ImageResult<Format> {
    resolve(&probe_all(&read_head(src)?))
}

/// Full strict analysis: detection, declared-format check, header validation and (qcow2,
/// vmdk) the complete table walk. Any violation is an error; nothing is written.
pub fn analyze(src: &(impl ImageSource + ?Sized), opts: &InspectOptions) -> ImageResult<Analysis> {
    let head = read_head(src)?;
    let matched = probe_all(&head);
    let detected = resolve(&matched)?;
    let format = match opts.declared {
        None => detected,
        // Declared raw: the content must not be a container format (a qcow2 "uploaded as
        // raw" is refused), but partition tables, ISO and LUKS are just raw disks.
        Some(Format::Raw) if detected.is_raw_like() => Format::Raw,
        Some(d) if d == detected => d,
        Some(d) => {
            return Err(ImageError::FormatMismatch {
                declared: d,
                detected,
            })
        }
    };
    let max = opts.max_virtual_size;
    let mut a = Analysis {
        format,
        matched,
        virtual_size: src.len(),
        cluster_size: None,
        subformat: None,
        data_size: None,
        reader: Reader::Raw,
    };
    match format {
        Format::Qed => return Err(ImageError::Banned { format }),
        Format::Qcow2 => {
            let h = qcow2::parse_header(src, max)?;
            let (mut plan, stats) = qcow2::build_plan(src, &h)?;
            plan.unit = h.cluster_size();
            a.virtual_size = h.size;
            a.cluster_size = Some(h.cluster_size());
            a.subformat = Some(format!(
                "v{}{}{}",
                h.version,
                if h.compression == qcow2::CompressionType::Zstd {
                    ", zstd"
                } else {
                    ""
                },
                if h.extended_l2() { ", extended_l2" } else { "" }
            ));
            a.data_size = Some(stats.data_bytes);
            a.reader = Reader::Native(plan);
        }
        Format::Vmdk => {
            if vmdk::probe_cowd(&head) {
                return Err(ImageError::Unsupported {
                    format,
                    what: "a VMDK3 (COWD) sparse extent".into(),
                });
            }
            if !vmdk::probe(&head) {
                return Err(ImageError::ExternalExtent {
                    name: String::new(),
                    kind: "a text descriptor file: every extent is another file".into(),
                });
            }
            let h = vmdk::parse(src, max)?;
            let (mut plan, data) = vmdk::build_plan(src, &h)?;
            plan.unit = h.grain_bytes();
            a.virtual_size = h.virtual_size();
            a.cluster_size = Some(h.grain_bytes());
            a.subformat = Some(h.create_type.clone());
            a.data_size = Some(data);
            a.reader = Reader::Native(plan);
        }
        Format::Vhd | Format::Vhdx | Format::Vdi => {
            let info = match format {
                Format::Vhd => vhd::info(src, max)?,
                Format::Vhdx => vhdx::info(src, max)?,
                _ => vdi::info(src, max)?,
            };
            a.virtual_size = info.virtual_size;
            a.cluster_size = info.cluster_size;
            a.subformat = Some(info.subformat);
            a.reader = Reader::Qemu(format);
        }
        Format::Raw | Format::Iso | Format::Luks | Format::Gpt | Format::Mbr => {
            a.subformat = check_raw_like(&a.matched, &head)?;
        }
    }
    if a.virtual_size > max {
        return Err(ImageError::VirtualSizeTooLarge {
            format,
            size: a.virtual_size,
            limit: max,
        });
    }
    Ok(a)
}

/// The checks of a raw-like image, whatever it was declared as (a raw declaration does not
/// skip them, as it does not in oslo): partition entries (a hybrid ISO's MBR included) and the
/// LUKS version. Returns the subformat to report.
fn check_raw_like(matched: &[Format], head: &[u8]) -> ImageResult<Option<String>> {
    if matched
        .iter()
        .any(|f| matches!(f, Format::Gpt | Format::Mbr))
    {
        gpt::check_entries(head).map_err(|reason| ImageError::PartitionTable { reason })?;
    }
    if matched.contains(&Format::Luks) {
        let version = luks::version(head);
        if !matches!(version, 1 | 2) {
            return Err(ImageError::Unsupported {
                format: Format::Luks,
                what: format!("LUKS version {version}"),
            });
        }
        return Ok(luks::payload_offset(head).map(|p| format!("LUKS1, payload at {p}")));
    }
    if matched.contains(&Format::Iso) {
        return Ok(iso::declared_size(head).map(|s| format!("volume of {s} bytes")));
    }
    Ok(None)
}

/// Lenient inspection for reporting: a refused image gives `safe: false` and the reason
/// instead of an error. Only I/O failures are errors.
pub fn inspect(
    src: &(impl ImageSource + ?Sized),
    opts: &InspectOptions,
) -> ImageResult<InspectReport> {
    let mut r = InspectReport {
        format: Format::Raw,
        declared: opts.declared,
        matched: Vec::new(),
        virtual_size: 0,
        actual_size: src.allocated().unwrap_or(src.len()),
        file_size: src.len(),
        cluster_size: None,
        subformat: None,
        data_size: None,
        safe: false,
        reasons: Vec::new(),
    };
    let head = read_head(src)?;
    r.matched = probe_all(&head);
    r.format = resolve(&r.matched).unwrap_or(Format::Raw);
    match analyze(src, opts) {
        Ok(a) => {
            r.format = a.format;
            r.virtual_size = a.virtual_size;
            r.cluster_size = a.cluster_size;
            r.subformat = a.subformat;
            r.data_size = a.data_size;
            r.safe = true;
        }
        Err(e @ ImageError::Read { .. }) => return Err(e),
        Err(e) => r.reasons.push(error::error_chain(&e)),
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_short_inputs_are_raw_or_refused_never_panic() {
        for n in 0..600usize {
            let v: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let _ = inspect(v.as_slice(), &InspectOptions::default()).unwrap();
        }
        let r = inspect(&b"hello"[..], &InspectOptions::default()).unwrap();
        assert!(r.safe && r.format == Format::Raw);
    }

    #[test]
    fn qed_banned_and_confusion_refused() {
        let mut v = vec![0u8; 40000];
        v[..4].copy_from_slice(b"QED\0");
        let r = inspect(v.as_slice(), &InspectOptions::default()).unwrap();
        assert!(
            !r.safe && r.reasons[0].contains("not allowed"),
            "{:?}",
            r.reasons
        );
        // qcow2 magic plus an ISO descriptor: two formats.
        let mut v = vec![0u8; 40000];
        v[..4].copy_from_slice(b"QFI\xfb");
        v[0x8001..0x8006].copy_from_slice(b"CD001");
        let r = inspect(v.as_slice(), &InspectOptions::default()).unwrap();
        assert!(
            !r.safe && r.reasons[0].contains("more than one format"),
            "{:?}",
            r.reasons
        );
        // hybrid ISO (ISO + MBR) is an ISO
        let mut v = vec![0u8; 40000];
        v[0x8001..0x8006].copy_from_slice(b"CD001");
        v[510] = 0x55;
        v[511] = 0xaa;
        v[446 + 4] = 0x17;
        let r = inspect(v.as_slice(), &InspectOptions::default()).unwrap();
        assert!(r.safe && r.format == Format::Iso, "{r:?}");
    }

    fn verdict(v: &[u8]) -> Result<Format, String> {
        analyze(v, &InspectOptions::default())
            .map(|a| a.format)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn oslo_detection_classes() {
        // a bare 0x55AA signature is a partition table: with no partition it is refused,
        // beside a qcow2 magic it is format confusion
        let mut v = vec![0u8; 4096];
        v[510] = 0x55;
        v[511] = 0xaa;
        assert!(verdict(&v).unwrap_err().contains("no partition"));
        v[..4].copy_from_slice(b"QFI\xfb");
        assert!(verdict(&v).unwrap_err().contains("more than one format"));
        // UDF identifiers beside qcow2
        for (off, id) in [(0x8001, b"NSR02"), (0x8801, b"NSR03")] {
            let mut v = vec![0u8; 40000];
            v[..4].copy_from_slice(b"QFI\xfb");
            v[off..off + 5].copy_from_slice(id);
            assert!(verdict(&v).unwrap_err().contains("more than one format"));
        }
        // text descriptors without the banner, as qemu and as oslo see them
        for text in [
            "version=1\nCID=1\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"x\" 0\n".to_string(),
            "   \n# c\nversion=3\r\nRW 8 FLAT \"x\" 0\n".to_string(),
            format!("{}\ncreatetype=\"twoGbMaxExtentFlat\"\n", "x".repeat(80)),
        ] {
            let e = verdict(text.as_bytes()).unwrap_err();
            assert!(e.contains("another file"), "{text:?}: {e}");
        }
        // plain text stays raw, and so does a value of 64 bytes or more (oslo ignores it)
        let long = format!("createType=\"{}\"\n{}", "a".repeat(64), "y".repeat(80));
        assert_eq!(verdict(long.as_bytes()), Ok(Format::Raw));
        assert_eq!(
            verdict("version=4\n".repeat(10).as_bytes()),
            Ok(Format::Raw)
        );
        assert!(verdict(b"COWD\0\0\0\x01").unwrap_err().contains("COWD"));
        // LUKS by magic: versions 1 and 2 copied, others refused
        let mut v = vec![0u8; 1024];
        v[..6].copy_from_slice(b"LUKS\xba\xbe");
        v[7] = 2;
        assert_eq!(verdict(&v), Ok(Format::Luks));
        v[7] = 3;
        assert!(verdict(&v).unwrap_err().contains("LUKS version 3"));
    }

    #[test]
    fn declared_raw_with_qcow2_content_refused() {
        let mut v = vec![0u8; 4096];
        v[..4].copy_from_slice(b"QFI\xfb");
        let opts = InspectOptions {
            declared: Some(Format::Raw),
            ..Default::default()
        };
        let e = analyze(v.as_slice(), &opts).unwrap_err().to_string();
        assert!(e.contains("declared raw"), "{e}");
    }
}
