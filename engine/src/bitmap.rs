//! Chunk bitmaps: one bit per fixed-size chunk of a byte range.
//!
//! A copy records which chunks are done in a [`ChunkBitmap`] and persists it with
//! [`ChunkBitmap::to_bytes`], so that an interrupted copy can resume. Chunk `i` covers bytes
//! `[i * chunk_size, min((i + 1) * chunk_size, len_bytes))`; the last chunk may be short.
//!
//! # Serialized form (version 1, little-endian)
//!
//! ```text
//! offset size field
//!      0    8 magic  b"EMBERBMP"
//!      8    4 version (1)
//!     12    4 flags (0; nonzero is rejected)
//!     16    8 len_bytes
//!     24    8 chunk_size (power of two >= 512)
//!     32    8 chunks = ceil(len_bytes / chunk_size)
//!     40    n bits, n = ceil(chunks / 8); chunk i is bit (i % 8) of byte i / 8; padding bits 0
//!   40+n    4 CRC-32 (IEEE) of bytes [0, 40 + n)
//! ```
//!
//! [`ChunkBitmap::from_bytes`] validates every field, the exact total size and the checksum,
//! and returns a [`BitmapError`] for any mismatch: a torn or foreign file is never taken for a
//! valid done-bitmap, and no input makes it panic or allocate more than the input's size.

use std::ops::Range;

use bitvec::prelude::*;

use crate::extent::ExtentMap;

/// Smallest accepted chunk size in bytes.
pub const MIN_CHUNK_SIZE: u64 = 512;
/// Largest number of chunks a bitmap may have (a 512 MiB bitmap). With 1 MiB chunks this is
/// 4 PiB of data; it bounds memory for hostile lengths.
pub const MAX_CHUNKS: u64 = 1 << 32;

const MAGIC: [u8; 8] = *b"EMBERBMP";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 40;
const TRAILER_LEN: usize = 4;

/// Why a bitmap could not be created or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BitmapError {
    /// The chunk size is not a power of two of at least 512 bytes.
    #[error("chunk size {chunk_size} is not a power of two >= 512")]
    ChunkSize {
        /// The rejected chunk size.
        chunk_size: u64,
    },
    /// The length needs more than [`MAX_CHUNKS`] chunks.
    #[error("{len_bytes} bytes in {chunk_size}-byte chunks needs more than {max} chunks")]
    TooManyChunks {
        /// Length in bytes.
        len_bytes: u64,
        /// Chunk size in bytes.
        chunk_size: u64,
        /// The limit, [`MAX_CHUNKS`].
        max: u64,
    },
    /// The input is shorter than its header says.
    #[error("bitmap data truncated: {got} bytes, need {need}")]
    Truncated {
        /// Bytes needed.
        need: u64,
        /// Bytes given.
        got: u64,
    },
    /// The input is longer than its header says.
    #[error("bitmap data has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Extra bytes after the checksum.
        extra: u64,
    },
    /// The magic number is wrong: not an Ember bitmap.
    #[error("not an Ember chunk bitmap (bad magic)")]
    BadMagic,
    /// Unknown format version.
    #[error("unsupported bitmap version {version}")]
    Version {
        /// The version found.
        version: u32,
    },
    /// Unknown flags are set.
    #[error("unsupported bitmap flags {flags:#x}")]
    Flags {
        /// The flags found.
        flags: u32,
    },
    /// The stored chunk count does not match `ceil(len / chunk_size)`.
    #[error("bitmap header says {stored} chunks, but {len_bytes} bytes in {chunk_size}-byte chunks make {expected}")]
    ChunkCount {
        /// Stored chunk count.
        stored: u64,
        /// Computed chunk count.
        expected: u64,
        /// Stored length.
        len_bytes: u64,
        /// Stored chunk size.
        chunk_size: u64,
    },
    /// Bits past the last chunk are set.
    #[error("bitmap padding bits past chunk {chunks} are set")]
    Padding {
        /// Number of chunks.
        chunks: u64,
    },
    /// The checksum does not match: the data is corrupt or torn.
    #[error("bitmap checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Stored CRC-32.
        stored: u32,
        /// Computed CRC-32.
        computed: u32,
    },
}

impl From<BitmapError> for crate::Error {
    fn from(e: BitmapError) -> Self {
        crate::Error::Invalid(e.to_string())
    }
}

/// One bit per `chunk_size` bytes of a `len_bytes`-byte range.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkBitmap {
    bits: BitVec<u64, Lsb0>,
    len_bytes: u64,
    chunk_size: u64,
}

impl std::fmt::Debug for ChunkBitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkBitmap")
            .field("len_bytes", &self.len_bytes)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.chunks())
            .field("set", &self.count_set())
            .finish()
    }
}

/// `ceil(len / cs)` checked against [`MAX_CHUNKS`]; `cs` must already be valid.
fn chunk_count(len_bytes: u64, chunk_size: u64) -> Result<u64, BitmapError> {
    let n = len_bytes.div_ceil(chunk_size);
    if n > MAX_CHUNKS || usize::try_from(n).is_err() {
        return Err(BitmapError::TooManyChunks {
            len_bytes,
            chunk_size,
            max: MAX_CHUNKS,
        });
    }
    Ok(n)
}

fn check_chunk_size(chunk_size: u64) -> Result<(), BitmapError> {
    if chunk_size < MIN_CHUNK_SIZE || !chunk_size.is_power_of_two() {
        return Err(BitmapError::ChunkSize { chunk_size });
    }
    Ok(())
}

impl ChunkBitmap {
    /// An all-clear bitmap for `len_bytes` bytes in `chunk_size`-byte chunks.
    ///
    /// `chunk_size` must be a power of two of at least 512, and the chunk count at most
    /// [`MAX_CHUNKS`].
    pub fn new(len_bytes: u64, chunk_size: u64) -> Result<Self, BitmapError> {
        check_chunk_size(chunk_size)?;
        let n = chunk_count(len_bytes, chunk_size)?;
        Ok(Self {
            bits: bitvec![u64, Lsb0; 0; n as usize],
            len_bytes,
            chunk_size,
        })
    }

    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Length of the covered byte range.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Number of chunks, `ceil(len_bytes / chunk_size)`.
    pub fn chunks(&self) -> u64 {
        self.bits.len() as u64
    }

    /// The byte range chunk `chunk` covers (the last chunk may be short).
    ///
    /// # Panics
    /// If `chunk >= self.chunks()`.
    pub fn chunk_range(&self, chunk: u64) -> Range<u64> {
        assert!(chunk < self.chunks(), "chunk {chunk} out of range");
        let start = chunk * self.chunk_size;
        start..start.saturating_add(self.chunk_size).min(self.len_bytes)
    }

    /// Marks chunk `chunk`.
    ///
    /// # Panics
    /// If `chunk >= self.chunks()`.
    pub fn set(&mut self, chunk: u64) {
        let i = self.index(chunk);
        self.bits.set(i, true);
    }

    /// Clears chunk `chunk`.
    ///
    /// # Panics
    /// If `chunk >= self.chunks()`.
    pub fn clear(&mut self, chunk: u64) {
        let i = self.index(chunk);
        self.bits.set(i, false);
    }

    /// Whether chunk `chunk` is marked.
    ///
    /// # Panics
    /// If `chunk >= self.chunks()`.
    pub fn get(&self, chunk: u64) -> bool {
        self.bits[self.index(chunk)]
    }

    fn index(&self, chunk: u64) -> usize {
        assert!(
            chunk < self.chunks(),
            "chunk {chunk} out of range ({} chunks)",
            self.chunks()
        );
        chunk as usize
    }

    /// The chunks (as an index range) that the bytes of `r` touch, after clipping `r` to
    /// `[0, len_bytes)`; empty if nothing remains.
    pub fn chunks_touching(&self, r: Range<u64>) -> Range<u64> {
        let end = r.end.min(self.len_bytes);
        if r.start >= end {
            return 0..0;
        }
        r.start / self.chunk_size..(end - 1) / self.chunk_size + 1
    }

    /// Marks every chunk that any byte of `r` touches. Bytes at or past `len_bytes` are
    /// ignored; an empty range marks nothing. O(chunks / 64).
    pub fn set_range(&mut self, r: Range<u64>) {
        let c = self.chunks_touching(r);
        self.bits[c.start as usize..c.end as usize].fill(true);
    }

    /// Number of marked chunks.
    pub fn count_set(&self) -> u64 {
        self.bits.count_ones() as u64
    }

    /// Whether every chunk is marked (true for a zero-length bitmap).
    pub fn all_set(&self) -> bool {
        self.bits.all()
    }

    /// Indexes of the marked chunks, ascending.
    pub fn iter_set(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter_ones().map(|i| i as u64)
    }

    /// The first chunk not marked, if any.
    pub fn first_unset(&self) -> Option<u64> {
        self.bits.first_zero().map(|i| i as u64)
    }

    /// The bytes of the marked chunks as an extent map (runs of chunks coalesce; the last
    /// chunk ends at `len_bytes`). O(chunks / 64 + runs).
    pub fn to_extents(&self) -> ExtentMap {
        let mut ranges = Vec::new();
        let mut i = 0usize;
        let n = self.bits.len();
        while i < n {
            let Some(s) = self.bits[i..].first_one().map(|o| o + i) else {
                break;
            };
            let e = self.bits[s..].first_zero().map_or(n, |o| o + s);
            let start = s as u64 * self.chunk_size;
            let end = (e as u64)
                .saturating_mul(self.chunk_size)
                .min(self.len_bytes);
            ranges.push(start..end);
            i = e;
        }
        ExtentMap::from_ranges(ranges)
    }

    /// A bitmap with every chunk set that holds any byte of `map` (bytes of `map` at or past
    /// `len_bytes` are ignored).
    pub fn from_extents(
        map: &ExtentMap,
        len_bytes: u64,
        chunk_size: u64,
    ) -> Result<Self, BitmapError> {
        let mut b = Self::new(len_bytes, chunk_size)?;
        for r in map.iter_range(0..len_bytes) {
            b.set_range(r);
        }
        Ok(b)
    }

    /// The stable serialized form (see the module doc).
    pub fn to_bytes(&self) -> Vec<u8> {
        let nbytes = self.bits.len().div_ceil(8);
        let mut out = Vec::with_capacity(HEADER_LEN + nbytes + TRAILER_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.len_bytes.to_le_bytes());
        out.extend_from_slice(&self.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.chunks().to_le_bytes());
        // Little-endian u64 words with LSB-first bits give exactly "bit i%8 of byte i/8".
        for w in self.bits.as_raw_slice() {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.truncate(HEADER_LEN + nbytes);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and validates [`ChunkBitmap::to_bytes`] output.
    pub fn from_bytes(data: &[u8]) -> Result<Self, BitmapError> {
        let got = data.len() as u64;
        if data.len() < HEADER_LEN {
            return Err(BitmapError::Truncated {
                need: (HEADER_LEN + TRAILER_LEN) as u64,
                got,
            });
        }
        let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().expect("8 bytes"));
        if data[..8] != MAGIC {
            return Err(BitmapError::BadMagic);
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(BitmapError::Version { version });
        }
        let flags = u32_at(12);
        if flags != 0 {
            return Err(BitmapError::Flags { flags });
        }
        let len_bytes = u64_at(16);
        let chunk_size = u64_at(24);
        let stored = u64_at(32);
        check_chunk_size(chunk_size)?;
        let expected = chunk_count(len_bytes, chunk_size)?;
        if stored != expected {
            return Err(BitmapError::ChunkCount {
                stored,
                expected,
                len_bytes,
                chunk_size,
            });
        }
        // expected <= MAX_CHUNKS = 2^32, so these sizes cannot overflow.
        let nbytes = expected.div_ceil(8);
        let need = HEADER_LEN as u64 + nbytes + TRAILER_LEN as u64;
        if got < need {
            return Err(BitmapError::Truncated { need, got });
        }
        if got > need {
            return Err(BitmapError::TrailingBytes { extra: got - need });
        }
        let body_end = HEADER_LEN + nbytes as usize;
        let stored_crc = u32_at(body_end);
        let computed = crc32(&data[..body_end]);
        if stored_crc != computed {
            return Err(BitmapError::Checksum {
                stored: stored_crc,
                computed,
            });
        }
        let payload = &data[HEADER_LEN..body_end];
        let mut bits: BitVec<u64, Lsb0> = BitVec::with_capacity(expected as usize);
        for c in payload.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            bits.extend_from_bitslice(&u64::from_le_bytes(w).view_bits::<Lsb0>()[..c.len() * 8]);
        }
        if bits[expected as usize..].any() {
            return Err(BitmapError::Padding { chunks: expected });
        }
        bits.truncate(expected as usize);
        Ok(Self {
            bits,
            len_bytes,
            chunk_size,
        })
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib/PNG), table-driven.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn validates_chunk_size_and_count() {
        for cs in [0, 1, 256, 511, 513, 1000, 4097] {
            assert_eq!(
                ChunkBitmap::new(10, cs),
                Err(BitmapError::ChunkSize { chunk_size: cs })
            );
        }
        assert!(ChunkBitmap::new(10, 512).is_ok());
        assert!(ChunkBitmap::new(0, 1 << 20).is_ok());
        assert!(matches!(
            ChunkBitmap::new(u64::MAX, 512),
            Err(BitmapError::TooManyChunks { .. })
        ));
        // The largest length with the largest chunk size still works (one chunk).
        let b = ChunkBitmap::new(u64::MAX, 1 << 63).unwrap();
        assert_eq!(b.chunks(), 2);
        assert_eq!(b.chunk_range(1), (1 << 63)..u64::MAX);
    }

    #[test]
    fn set_get_and_ranges() {
        let mut b = ChunkBitmap::new(10 * 512 + 100, 512).unwrap();
        assert_eq!(b.chunks(), 11);
        assert_eq!(b.chunk_range(10), 5120..5220);
        b.set(0);
        assert!(b.get(0) && !b.get(1));
        b.set_range(1023..1025); // touches chunks 1 and 2
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![0, 1, 2]);
        b.set_range(5000..1 << 40); // clipped to the end
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![0, 1, 2, 9, 10]);
        b.set_range(3000..3000); // empty: nothing
        assert_eq!(b.count_set(), 5);
        assert_eq!(b.first_unset(), Some(3));
        assert_eq!(
            b.to_extents().iter().collect::<Vec<_>>(),
            vec![0..1536, 4608..5220]
        );
        b.clear(0);
        assert!(!b.get(0));
        assert!(!b.all_set());
        b.set_range(0..u64::MAX);
        assert!(b.all_set());
        assert_eq!(b.to_extents(), ExtentMap::full(5220));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn set_out_of_range_panics() {
        ChunkBitmap::new(512, 512).unwrap().set(1);
    }

    #[test]
    fn from_extents_sets_any_touched_chunk() {
        let m = ExtentMap::from_ranges([10..11, 2048..2049, 9000..20000]);
        let b = ChunkBitmap::from_extents(&m, 9500, 1024).unwrap();
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![0, 2, 8, 9]);
        let e = b.to_extents();
        assert_eq!(
            e.iter().collect::<Vec<_>>(),
            vec![0..1024, 2048..3072, 8192..9500]
        );
        assert!(m.clip(0..9500).difference(&e).is_empty());
    }

    #[test]
    fn bytes_round_trip() {
        for (len, cs) in [
            (0u64, 512u64),
            (1, 512),
            (512 * 64, 512),
            (512 * 65 + 7, 512),
            (1 << 30, 1 << 20),
        ] {
            let mut b = ChunkBitmap::new(len, cs).unwrap();
            for c in (0..b.chunks()).step_by(3) {
                b.set(c);
            }
            let bytes = b.to_bytes();
            assert_eq!(bytes.len() as u64, 44 + b.chunks().div_ceil(8));
            let back = ChunkBitmap::from_bytes(&bytes).unwrap();
            assert_eq!(back, b);
        }
    }

    #[test]
    fn bit_layout_is_stable() {
        let mut b = ChunkBitmap::new(10 * 512, 512).unwrap();
        b.set(0);
        b.set(9);
        let bytes = b.to_bytes();
        assert_eq!(&bytes[..8], b"EMBERBMP");
        assert_eq!(&bytes[40..42], &[0b0000_0001, 0b0000_0010]);
    }

    fn refresh_crc(bytes: &mut [u8]) {
        let n = bytes.len() - 4;
        let c = crc32(&bytes[..n]);
        bytes[n..].copy_from_slice(&c.to_le_bytes());
    }

    #[test]
    fn corrupt_input_is_rejected() {
        let mut b = ChunkBitmap::new(100 * 512, 512).unwrap();
        b.set_range(0..10_000);
        let good = b.to_bytes();
        // Every truncation.
        for n in 0..good.len() {
            let e = ChunkBitmap::from_bytes(&good[..n]).unwrap_err();
            assert!(matches!(e, BitmapError::Truncated { .. }), "{n}: {e:?}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            ChunkBitmap::from_bytes(&long),
            Err(BitmapError::TrailingBytes { extra: 1 })
        );
        // Every single-bit flip is caught.
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut x = good.clone();
                x[i] ^= 1 << bit;
                assert!(
                    ChunkBitmap::from_bytes(&x).is_err(),
                    "flip byte {i} bit {bit}"
                );
            }
        }
        // Header fields with a valid checksum are still checked.
        let mut x = good.clone();
        x[8] = 2;
        refresh_crc(&mut x);
        assert_eq!(
            ChunkBitmap::from_bytes(&x),
            Err(BitmapError::Version { version: 2 })
        );
        let mut x = good.clone();
        x[12] = 1;
        assert_eq!(
            ChunkBitmap::from_bytes(&x),
            Err(BitmapError::Flags { flags: 1 })
        );
        let mut x = good.clone();
        x[24..32].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(
            ChunkBitmap::from_bytes(&x),
            Err(BitmapError::ChunkSize { chunk_size: 1000 })
        );
        let mut x = good.clone();
        x[32..40].copy_from_slice(&99u64.to_le_bytes());
        assert!(matches!(
            ChunkBitmap::from_bytes(&x),
            Err(BitmapError::ChunkCount { .. })
        ));
        // A hostile length is refused before any allocation.
        let mut x = good.clone();
        x[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            ChunkBitmap::from_bytes(&x),
            Err(BitmapError::TooManyChunks { .. })
        ));
        // Padding bits past the last chunk must be clear (100 chunks: bits 100..104 of byte 12).
        let mut x = good.clone();
        x[40 + 12] |= 0x80;
        refresh_crc(&mut x);
        assert_eq!(
            ChunkBitmap::from_bytes(&x),
            Err(BitmapError::Padding { chunks: 100 })
        );
        let mut x = good;
        x[0] = b'X';
        assert_eq!(ChunkBitmap::from_bytes(&x), Err(BitmapError::BadMagic));
    }
}
