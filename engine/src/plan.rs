//! Extent plans: what to read from a source and write to a destination.
//!
//! PLACEHOLDER from branch `images`, matching the agreed signatures in ENGINE_API.md until the
//! lead's `plan` module lands on main (on merge, take main's version).

/// A compression codec of a [`Op::Decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Raw deflate, as qcow2 (no zlib header).
    Deflate,
    /// A zstd frame.
    Zstd,
}

/// One operation of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes at `src` in the source, write them at `dst` in the destination.
    Copy { src: u64, dst: u64, len: u64 },
    /// The destination range must read back as zeros (source hole, qcow2 zero cluster).
    Zero { dst: u64, len: u64 },
    /// Read `src_len` compressed bytes at `src`, decode to exactly `len` bytes, write at `dst`.
    Decode {
        src: u64,
        src_len: u64,
        dst: u64,
        len: u64,
        codec: Codec,
    },
}

/// Ops ascending by `dst`, disjoint. Ranges of `[0, logical_size)` not covered by any op are
/// treated like [`Op::Zero`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub logical_size: u64,
    pub ops: Vec<Op>,
}
