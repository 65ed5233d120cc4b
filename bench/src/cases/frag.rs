//! Fragmentation family (issue 17): a raw source made of 4 KiB data extents at a fixed stride,
//! copied to a new raw file on the work dir's disk by Ember and the copy peers. Cost that grows
//! with the extent count (allocation discovery, per-extent I/O and bookkeeping) shows here, in
//! time and in peak RSS.
//!
//! | case | source |
//! |---|---|
//! | `frag64k` | 4 KiB every 64 KiB of 4 GiB: 65,536 extents, 256 MiB of data |
//! | `frag1m` | 4 KiB every 1 MiB of 1 TiB: 1,048,576 extents, 4 GiB of data |
//!
//! `--quick`: 4,096 extents (256 MiB logical) and 16,384 extents (16 GiB logical). The fixtures
//! are written once by a pwrite loop and reused while their manifest matches. dd reads every
//! logical byte, so it is left out where that is more than [`DD_MAX_LOGICAL`]; the other peers
//! get the harness's timeout.

use std::path::Path;

use super::copy::CopyCase;
use super::Scale;
use crate::fixture::{Fill, FixtureSpec};
use crate::units::{self, GIB, KIB, MIB, TIB};

pub const CASES: [&str; 2] = ["frag64k", "frag1m"];

/// Above this logical size dd (which reads holes too) is left out.
pub const DD_MAX_LOGICAL: u64 = 64 * GIB;

const EXTENT: u64 = 4 * KIB;

impl Scale {
    /// 4 KiB of data every `stride` bytes of `logical` (full scale) or `quick` bytes.
    fn frag(self, name: &str, stride: u64, logical: u64, quick: u64, seed: u64) -> FixtureSpec {
        let logical = match self {
            Scale::Full => logical,
            Scale::Quick => quick,
        };
        FixtureSpec {
            name: format!("{name}{}", self.suffix()),
            logical,
            data: logical / stride * EXTENT,
            ext_min: EXTENT,
            ext_max: EXTENT,
            seed,
            fill: Fill::Random,
            stride: Some(stride),
        }
    }
}

/// The case `name` (one of [`CASES`]).
pub fn case(name: &str, scale: Scale, dir: &Path) -> CopyCase {
    let spec = if name == "frag1m" {
        scale.frag(name, MIB, TIB, 16 * GIB, 0x17_0002)
    } else {
        scale.frag(name, 64 * KIB, 4 * GIB, 256 * MIB, 0x17_0001)
    };
    let dd_skip = (spec.logical > DD_MAX_LOGICAL).then(|| {
        format!(
            "dd reads every logical byte, holes included: {} per run, far past any timeout",
            units::bytes(spec.logical)
        )
    });
    // frag64k's data is not allocated first by the default rule (not far apart enough): the
    // variant measures that rule's alternative in the same run.
    let variants: &'static [(&'static str, &'static str)] = if name == "frag64k" {
        &[("ember --allocate-first", "--allocate-first")]
    } else {
        &[]
    };
    CopyCase::new(name, spec, scale.full4g(), dir, false).family("frag", variants, dd_skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_counts() {
        let count = |s: &FixtureSpec| s.logical / s.stride.unwrap();
        let full64k = Scale::Full.frag("frag64k", 64 * KIB, 4 * GIB, 256 * MIB, 1);
        assert_eq!(count(&full64k), 65_536);
        assert_eq!(full64k.data, 256 * MIB);
        let full1m = Scale::Full.frag("frag1m", MIB, TIB, 16 * GIB, 2);
        assert_eq!(count(&full1m), 1_048_576);
        assert_eq!(full1m.data, 4 * GIB);
        assert_eq!(
            Scale::Quick.frag("frag1m", MIB, TIB, 16 * GIB, 2).name,
            "frag1m-quick"
        );
    }
}
