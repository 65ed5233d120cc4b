//! Errors of image inspection and decoding: one variant per broken invariant, each naming the
//! field and the offset. Converted into [`crate::Error::BadImage`] at the engine's edge.

use std::io;
use std::path::Path;

use super::Format;

/// Why an image cannot be read or is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Reading the image file failed.
    #[error("cannot read {len} bytes at offset {offset} of the image")]
    Read {
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    /// A structure lies (partly) past the end of the file.
    #[error(
        "{what} at offset {offset} ({len} bytes) lies past the end of the file ({file_len} bytes)"
    )]
    PastEof {
        what: &'static str,
        offset: u64,
        len: u64,
        file_len: u64,
    },
    /// The bytes are not an image of this format.
    #[error("not a {format} image: {reason}")]
    NotFormat { format: Format, reason: String },
    /// An image format Ember never reads (QED).
    #[error("{format} images are not allowed")]
    Banned { format: Format },
    /// A format that passes detection but that Ember cannot read safely.
    #[error("{format}: {what} is not supported")]
    Unsupported { format: Format, what: String },
    /// The caller declared one format and the content is another.
    #[error("image was declared {declared} but its content is {detected}")]
    FormatMismatch { declared: Format, detected: Format },
    /// The content is valid as more than one format (format confusion, OSSA-2024-002).
    #[error("image matches more than one format ({formats}); refusing format confusion")]
    MultipleFormats { formats: String },
    /// A header field is out of range.
    #[error("{format} {field} = {value} is out of range ({limit})")]
    Field {
        format: Format,
        field: &'static str,
        value: u64,
        limit: &'static str,
    },
    /// The virtual size is above the configured limit.
    #[error("{format} virtual size {size} exceeds the limit of {limit} bytes")]
    VirtualSizeTooLarge {
        format: Format,
        size: u64,
        limit: u64,
    },
    /// An offset that must be aligned is not.
    #[error("{what} offset {offset:#x} is not aligned to {align} bytes")]
    Misaligned {
        what: &'static str,
        offset: u64,
        align: u64,
    },
    /// Arithmetic on header fields overflowed.
    #[error("{what} overflows")]
    Overflow { what: &'static str },
    /// A table is larger than the memory cap.
    #[error("{what} of {bytes} bytes exceeds the cap of {cap} bytes")]
    TableTooLarge {
        what: &'static str,
        bytes: u64,
        cap: u64,
    },
    /// qcow2: a backing file is referenced.
    #[error("qcow2 references a backing file {name:?}")]
    BackingFile { name: String },
    /// qcow2: an external data file is referenced.
    #[error("qcow2 uses an external data file {name:?}")]
    DataFile { name: String },
    /// qcow2: encrypted image.
    #[error("qcow2 is encrypted ({what})")]
    Encrypted { what: &'static str },
    /// qcow2: the corrupt bit is set.
    #[error("qcow2 is marked corrupt (incompatible feature bit 1)")]
    MarkedCorrupt,
    /// qcow2: incompatible feature bits Ember does not know.
    #[error("qcow2 has unknown incompatible feature bits {bits:#x}")]
    UnknownFeatures { bits: u64 },
    /// A table entry has reserved bits set or is otherwise malformed.
    #[error("{what} entry {entry:#018x} at offset {offset} is invalid: {reason}")]
    BadEntry {
        what: &'static str,
        offset: u64,
        entry: u64,
        reason: &'static str,
    },
    /// Two structures of the image file overlap.
    #[error("{a} at {a_offset} overlaps {b} at {b_offset}")]
    Overlap {
        a: &'static str,
        a_offset: u64,
        b: &'static str,
        b_offset: u64,
    },
    /// Too many fragments to track.
    #[error("image has more than {limit} separate data fragments")]
    TooFragmented { limit: usize },
    /// A compressed unit decodes to more bytes than its cluster/grain.
    #[error("compressed data expands beyond {limit} bytes (compression bomb)")]
    Bomb { limit: usize },
    /// A compressed unit decodes to fewer bytes than its cluster/grain.
    #[error("compressed data decodes to {got} bytes, expected {want}")]
    ShortDecode { got: usize, want: usize },
    /// The compressed stream is malformed.
    #[error("{codec} stream is malformed: {reason}")]
    Decode { codec: &'static str, reason: String },
    /// vmdk: the descriptor is malformed or refused.
    #[error("vmdk descriptor: {reason}")]
    Descriptor { reason: String },
    /// vmdk: an extent outside this file.
    #[error("vmdk extent {name:?} refers to another file ({kind})")]
    ExternalExtent { name: String, kind: String },
    /// vmdk: a subformat that is not allowed.
    #[error(
        "vmdk createType {create_type:?} is not allowed (only monolithicSparse, streamOptimized)"
    )]
    CreateType { create_type: String },
    /// An MBR or protective MBR whose entries oslo's inspector refuses.
    #[error("partition table: {reason}")]
    PartitionTable { reason: String },
    /// An image that is refused for one or more safety reasons.
    #[error("image failed the safety check: {}", reasons.join("; "))]
    Unsafe { reasons: Vec<String> },
}

impl ImageError {
    /// The engine error for an image at `path`.
    pub fn into_engine(self, path: &Path) -> crate::Error {
        crate::Error::BadImage {
            path: path.to_path_buf(),
            reason: error_chain(&self),
        }
    }
}

/// The message of `e` followed by its sources.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub type ImageResult<T> = Result<T, ImageError>;
