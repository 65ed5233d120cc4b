//! qcow2 header: parsing and validation of every field before any table is read.
//!
//! Layout (big-endian, qemu docs/interop/qcow2.txt): magic, version, backing file offset/size,
//! cluster_bits, size, crypt_method, l1_size, l1_table_offset, refcount_table_offset,
//! refcount_table_clusters, nb_snapshots, snapshots_offset; v3 adds feature bitmaps,
//! refcount_order, header_length and (header_length > 104) compression_type, then header
//! extensions up to the end of the first cluster.

use super::super::error::{ImageError, ImageResult};
use super::super::source::{be32, be64, check_range, ImageSource};
use super::super::Format;

pub const MAGIC: [u8; 4] = *b"QFI\xfb";
const V2_HEADER_LEN: usize = 72;
const V3_HEADER_LEN: usize = 104;

/// qemu's own caps: an L1 table of at most 32 MiB, a refcount table of at most 8 MiB.
pub const MAX_L1_BYTES: u64 = 32 << 20;
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
pub const MAX_SNAPSHOTS: u64 = 65536;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
const EXT_BITMAPS: u32 = 0x2385_2875;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Compression of compressed clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionType {
    Deflate,
    Zstd,
}

/// A validated qcow2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: CompressionType,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }
    /// Bytes per L2 entry (16 with extended L2 entries).
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() {
            16
        } else {
            8
        }
    }
    /// Guest bytes covered by one L2 table.
    pub fn l2_coverage(&self) -> u64 {
        (self.cluster_size() / self.l2_entry_size()) * self.cluster_size()
    }
}

fn field(field: &'static str, value: u64, limit: &'static str) -> ImageError {
    ImageError::Field {
        format: Format::Qcow2,
        field,
        value,
        limit,
    }
}

/// True when the image starts with the qcow2 magic.
pub fn probe(head: &[u8]) -> bool {
    head.len() >= 4 && head[..4] == MAGIC
}

/// Reads and validates the header and its extensions. `max_virtual_size` caps `size`.
pub fn parse(src: &(impl ImageSource + ?Sized), max_virtual_size: u64) -> ImageResult<Header> {
    let file_len = src.len();
    let mut fixed = [0u8; V3_HEADER_LEN];
    let n = src.read_up_to(0, &mut fixed)?;
    if n < 4 || fixed[..4] != MAGIC {
        return Err(ImageError::NotFormat {
            format: Format::Qcow2,
            reason: "no QFI\\xfb magic".into(),
        });
    }
    let version = if n >= 8 { be32(&fixed, 4) } else { 0 };
    if version != 2 && version != 3 {
        if n < 8 {
            return Err(truncated(n));
        }
        return Err(field("version", version.into(), "2 or 3"));
    }
    let need = if version == 2 {
        V2_HEADER_LEN
    } else {
        V3_HEADER_LEN
    };
    if n < need {
        return Err(truncated(n));
    }
    let h = &fixed[..need];
    let backing_file_offset = be64(h, 8);
    let backing_file_size = be32(h, 16);
    let cluster_bits = be32(h, 20);
    let size = be64(h, 24);
    let crypt_method = be32(h, 32);
    let l1_size = be32(h, 36);
    let l1_table_offset = be64(h, 40);
    let refcount_table_offset = be64(h, 48);
    let refcount_table_clusters = be32(h, 56);
    let nb_snapshots = be32(h, 60);
    let snapshots_offset = be64(h, 64);
    let (incompatible, refcount_order, header_length) = if version == 3 {
        (be64(h, 72), be32(h, 96), be32(h, 100))
    } else {
        (0, 4, V2_HEADER_LEN as u32)
    };

    if !(9..=21).contains(&cluster_bits) {
        return Err(field("cluster_bits", cluster_bits.into(), "9..=21"));
    }
    let cluster_size = 1u64 << cluster_bits;
    if version == 3 {
        if (header_length as usize) < V3_HEADER_LEN
            || u64::from(header_length) > cluster_size
            || header_length % 8 != 0
        {
            return Err(field(
                "header_length",
                header_length.into(),
                "104..=cluster_size, multiple of 8",
            ));
        }
        if refcount_order > 6 {
            return Err(field("refcount_order", refcount_order.into(), "0..=6"));
        }
    }

    // Read the whole header cluster (bounded: at most 2 MiB) for extensions and names.
    let hc_len = cluster_size.min(file_len) as usize;
    let mut hc = vec![0u8; hc_len];
    src.read_exact_at(0, &mut hc)?;

    if backing_file_offset != 0 {
        let name = read_name(&hc, backing_file_offset, backing_file_size.into());
        return Err(ImageError::BackingFile { name });
    }
    if crypt_method != 0 {
        return Err(ImageError::Encrypted {
            what: if crypt_method == 1 {
                "crypt_method 1 (AES)"
            } else {
                "crypt_method LUKS or unknown"
            },
        });
    }
    if incompatible & INCOMPAT_CORRUPT != 0 {
        return Err(ImageError::MarkedCorrupt);
    }
    let unknown = incompatible & !INCOMPAT_KNOWN;
    if unknown != 0 {
        return Err(ImageError::UnknownFeatures { bits: unknown });
    }

    // Header extensions (v3 only; v2 images may carry the backing-format extension, which
    // is harmless without a backing file).
    let ext = parse_extensions(
        &hc,
        if version == 3 {
            header_length as usize
        } else {
            V2_HEADER_LEN
        },
    )?;
    if incompatible & INCOMPAT_DATA_FILE != 0 || ext.data_file.is_some() {
        return Err(ImageError::DataFile {
            name: ext.data_file.unwrap_or_default(),
        });
    }
    if ext.crypto {
        return Err(ImageError::Encrypted {
            what: "full disk encryption header extension",
        });
    }

    let compression = if version == 3 && header_length as usize > V3_HEADER_LEN {
        match hc.get(V3_HEADER_LEN) {
            Some(0) => CompressionType::Deflate,
            Some(1) => CompressionType::Zstd,
            Some(&t) => {
                return Err(field(
                    "compression_type",
                    t.into(),
                    "0 (deflate) or 1 (zstd)",
                ))
            }
            None => return Err(truncated(hc.len())),
        }
    } else {
        CompressionType::Deflate
    };
    if (compression == CompressionType::Zstd) != (incompatible & INCOMPAT_COMPRESSION != 0) {
        return Err(field(
            "compression_type",
            (compression == CompressionType::Zstd).into(),
            "must match incompatible feature bit 3",
        ));
    }

    if size > max_virtual_size {
        return Err(ImageError::VirtualSizeTooLarge {
            format: Format::Qcow2,
            size,
            limit: max_virtual_size,
        });
    }
    let l2_entry = if incompatible & INCOMPAT_EXTL2 != 0 {
        if cluster_bits < 14 {
            return Err(field(
                "cluster_bits",
                cluster_bits.into(),
                ">= 14 with extended L2",
            ));
        }
        16
    } else {
        8
    };
    let l2_coverage = (cluster_size / l2_entry) * cluster_size;
    let l1_needed = size.div_ceil(l2_coverage);
    let l1_bytes = u64::from(l1_size) * 8;
    if u64::from(l1_size) < l1_needed {
        return Err(field(
            "l1_size",
            l1_size.into(),
            "too small for the virtual size",
        ));
    }
    if l1_bytes > MAX_L1_BYTES {
        return Err(ImageError::TableTooLarge {
            what: "qcow2 L1 table",
            bytes: l1_bytes,
            cap: MAX_L1_BYTES,
        });
    }
    if l1_size > 0 {
        aligned("L1 table", l1_table_offset, cluster_size)?;
        if l1_table_offset == 0 {
            return Err(ImageError::Overlap {
                a: "header",
                a_offset: 0,
                b: "L1 table",
                b_offset: 0,
            });
        }
        check_range(file_len, "qcow2 L1 table", l1_table_offset, l1_bytes)?;
    }

    let reft_bytes = u64::from(refcount_table_clusters) * cluster_size;
    if reft_bytes > MAX_REFTABLE_BYTES {
        return Err(ImageError::TableTooLarge {
            what: "qcow2 refcount table",
            bytes: reft_bytes,
            cap: MAX_REFTABLE_BYTES,
        });
    }
    if refcount_table_clusters == 0 {
        return Err(field("refcount_table_clusters", 0, ">= 1"));
    }
    aligned("refcount table", refcount_table_offset, cluster_size)?;
    if refcount_table_offset == 0 {
        return Err(ImageError::Overlap {
            a: "header",
            a_offset: 0,
            b: "refcount table",
            b_offset: 0,
        });
    }
    check_range(
        file_len,
        "qcow2 refcount table",
        refcount_table_offset,
        reft_bytes,
    )?;

    if u64::from(nb_snapshots) > MAX_SNAPSHOTS {
        return Err(field("nb_snapshots", nb_snapshots.into(), "<= 65536"));
    }
    if nb_snapshots > 0 {
        aligned("snapshot table", snapshots_offset, cluster_size)?;
        // Each snapshot header is at least 40 bytes.
        check_range(
            file_len,
            "qcow2 snapshot table",
            snapshots_offset,
            u64::from(nb_snapshots) * 40,
        )?;
    }

    Ok(Header {
        version,
        cluster_bits,
        size,
        l1_size,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters,
        nb_snapshots,
        snapshots_offset,
        incompatible,
        refcount_order,
        header_length,
        compression,
    })
}

fn truncated(n: usize) -> ImageError {
    ImageError::NotFormat {
        format: Format::Qcow2,
        reason: format!("header truncated at {n} bytes"),
    }
}

fn aligned(what: &'static str, offset: u64, align: u64) -> ImageResult<()> {
    if offset & (align - 1) != 0 {
        return Err(ImageError::Misaligned {
            what,
            offset,
            align,
        });
    }
    Ok(())
}

/// A name stored in the header cluster, for error messages only (lossy, at most 1 KiB).
fn read_name(hc: &[u8], offset: u64, len: u64) -> String {
    let len = len.min(1024);
    let Some(end) = offset.checked_add(len) else {
        return String::new();
    };
    if end > hc.len() as u64 {
        return format!("<{len} bytes at offset {offset}>");
    }
    String::from_utf8_lossy(&hc[offset as usize..end as usize]).into_owned()
}

#[derive(Debug, Default)]
struct Extensions {
    data_file: Option<String>,
    crypto: bool,
}

fn parse_extensions(hc: &[u8], start: usize) -> ImageResult<Extensions> {
    let mut ext = Extensions::default();
    let mut off = start;
    loop {
        if off + 8 > hc.len() {
            // qemu requires the end marker; a header cluster cut by EOF ends the list.
            return if off >= hc.len() {
                Ok(ext)
            } else {
                Err(ImageError::PastEof {
                    what: "qcow2 header extension",
                    offset: off as u64,
                    len: 8,
                    file_len: hc.len() as u64,
                })
            };
        }
        let ty = be32(hc, off);
        let len = be32(hc, off + 4) as usize;
        if ty == EXT_END {
            return Ok(ext);
        }
        let data = off + 8;
        let end = data
            .checked_add(len)
            .filter(|&e| e <= hc.len())
            .ok_or(ImageError::PastEof {
                what: "qcow2 header extension",
                offset: off as u64,
                len: len as u64,
                file_len: hc.len() as u64,
            })?;
        match ty {
            EXT_DATA_FILE => {
                ext.data_file =
                    Some(String::from_utf8_lossy(&hc[data..end.min(data + 1024)]).into_owned())
            }
            EXT_CRYPTO => ext.crypto = true,
            EXT_BACKING_FORMAT | EXT_FEATURE_TABLE | EXT_BITMAPS => {}
            _ => {}
        }
        off = end.div_ceil(8) * 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid v3 header: 64 KiB clusters, 1 GiB, L1 at cluster 3, reftable at 1.
    pub(crate) fn minimal_v3() -> Vec<u8> {
        let mut h = vec![0u8; 4 * 65536];
        h[..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        h[36..40].copy_from_slice(&2u32.to_be_bytes());
        h[40..48].copy_from_slice(&(3u64 << 16).to_be_bytes());
        h[48..56].copy_from_slice(&(1u64 << 16).to_be_bytes());
        h[56..60].copy_from_slice(&1u32.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&112u32.to_be_bytes());
        h
    }

    #[test]
    fn minimal_parses_and_each_bad_field_is_refused() {
        let h = minimal_v3();
        let p = parse(h.as_slice(), 1 << 50).unwrap();
        assert_eq!(p.cluster_size(), 65536);
        let cases: Vec<(usize, Vec<u8>, &str)> = vec![
            (8, 1000u64.to_be_bytes().to_vec(), "backing file"),
            (20, 30u32.to_be_bytes().to_vec(), "cluster_bits"),
            (24, u64::MAX.to_be_bytes().to_vec(), "virtual size"),
            (32, 1u32.to_be_bytes().to_vec(), "encrypted"),
            (36, 0x1000_0000u32.to_be_bytes().to_vec(), "L1 table"),
            (40, (100u64 << 16).to_be_bytes().to_vec(), "past the end"),
            (40, 1000u64.to_be_bytes().to_vec(), "aligned"),
            (72, 2u64.to_be_bytes().to_vec(), "corrupt"),
            (72, 4u64.to_be_bytes().to_vec(), "data file"),
            (72, 0x20u64.to_be_bytes().to_vec(), "unknown incompatible"),
            (
                72,
                0x8000_0000_0000_0000u64.to_be_bytes().to_vec(),
                "unknown incompatible",
            ),
            (56, 1000u32.to_be_bytes().to_vec(), "refcount table"),
            (100, 7u32.to_be_bytes().to_vec(), "header_length"),
            (104, vec![7], "compression_type"),
        ];
        for (off, bytes, want) in cases {
            let mut b = h.clone();
            b[off..off + bytes.len()].copy_from_slice(&bytes);
            let e = parse(b.as_slice(), 1 << 50).unwrap_err().to_string();
            assert!(e.contains(want), "patch at {off}: {e} (wanted {want})");
        }
        let mut dirty = h.clone();
        dirty[79] = 1;
        parse(dirty.as_slice(), 1 << 50).unwrap();
    }

    #[test]
    fn truncated_header_every_length_errors() {
        let h = minimal_v3();
        for n in 0..200 {
            assert!(parse(&h[..n], 1 << 50).is_err(), "length {n}");
        }
    }
}
