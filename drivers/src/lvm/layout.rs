//! LV -> PV byte ranges: where device-mapper is absent, an LV's bytes are found through its
//! segments (`seg_pe_ranges`), its PV's `pe_start` and the VG's extent size, and the engine runs
//! on those byte windows of the PVs.

use crate::data::Span;
use crate::error::{DriverError, Result};

use super::report::{Lv, Pv, Segment};

/// Where a VG's extents lie: its PVs' data offsets and its extent size (one `pvs` report).
/// Creating, removing, tagging or growing LVs changes neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub pvs: Vec<Pv>,
    pub extent_size: u64,
}

impl Geometry {
    /// The geometry of VG `vg` from a report of all PVs.
    pub fn of_vg(vg: &str, all: Vec<Pv>) -> Result<Geometry> {
        let pvs: Vec<Pv> = all.into_iter().filter(|p| p.vg_name == vg).collect();
        let extent_size = pvs.first().map_or(0, |p| p.extent_size);
        if extent_size == 0 || pvs.iter().any(|p| p.extent_size != extent_size) {
            return Err(DriverError::BadOutput {
                op: "map LV onto PVs",
                command: "pvs".into(),
                reason: format!("no single extent size for the PVs of volume group {vg}"),
            });
        }
        Ok(Geometry { pvs, extent_size })
    }
}

/// The byte spans of `lv`, in LV order. Only linear (single-stripe) segments can be mapped.
pub fn lv_spans(lv: &Lv, geo: &Geometry) -> Result<Vec<Span>> {
    let (name, extent_size) = (&lv.name, geo.extent_size);
    let mut mine: Vec<&Segment> = lv.segments.iter().collect();
    mine.sort_by_key(|s| s.start);
    if mine.is_empty() {
        return Err(DriverError::NotFound {
            what: "segments of LV",
            name: name.to_owned(),
        });
    }
    let mut out = Vec::new();
    let mut expect = 0u64;
    for s in mine {
        if !(s.segtype == "linear" || s.segtype == "striped" && s.stripes == 1)
            || s.pe_ranges.len() != 1
        {
            return Err(DriverError::NotSupported {
                op: "map LV onto PVs",
                reason: format!(
                    "LV {name} has a {} segment with {} stripe(s); only linear segments can be used without device-mapper",
                    s.segtype, s.stripes
                ),
            });
        }
        if s.start != expect {
            return Err(DriverError::BadOutput {
                op: "map LV onto PVs",
                command: "lvs --segments".into(),
                reason: format!("LV {name}: segment at {} but expected {expect}", s.start),
            });
        }
        let (pv, first, last) = &s.pe_ranges[0];
        let p = geo
            .pvs
            .iter()
            .find(|p| &p.name == pv)
            .ok_or_else(|| DriverError::NotFound {
                what: "physical volume",
                name: pv.clone(),
            })?;
        let extents = last - first + 1;
        let len = extents
            .checked_mul(extent_size)
            .ok_or_else(|| DriverError::invalid("extent arithmetic overflows"))?;
        if len != s.size {
            return Err(DriverError::BadOutput {
                op: "map LV onto PVs",
                command: "lvs --segments".into(),
                reason: format!(
                    "LV {name}: segment of {} bytes spans {extents} extents of {extent_size}",
                    s.size
                ),
            });
        }
        let offset = first
            .checked_mul(extent_size)
            .and_then(|o| o.checked_add(p.pe_start))
            .ok_or_else(|| DriverError::invalid("extent arithmetic overflows"))?;
        out.push(Span {
            path: pv.into(),
            offset,
            len,
        });
        expect += s.size;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::report::{parse_lvs, parse_pvs};
    use super::*;

    #[test]
    fn maps_a_two_segment_lv() {
        let lvs = parse_lvs(include_str!("testdata/lvs.json")).unwrap();
        let z = lvs.iter().find(|l| l.name == "z").unwrap();
        let pvs = parse_pvs(include_str!("testdata/pvs.json")).unwrap();
        let geo = Geometry::of_vg("testvg", pvs.clone()).unwrap();
        assert_eq!(geo.extent_size, 4 << 20);
        let sp = lv_spans(z, &geo).unwrap();
        assert_eq!(sp.len(), 2);
        assert_eq!(sp[0].offset, 1 << 20);
        assert_eq!(sp[0].len, 256 * (4 << 20));
        assert_eq!(sp[1].offset, (1 << 20) + 310 * (4 << 20));
        assert_eq!(sp[1].len, 194 * (4 << 20));
        // A wrong extent size shows in the segment sizes: refused, never mapped wrong.
        let small = Geometry {
            extent_size: 1 << 20,
            ..geo.clone()
        };
        assert!(lv_spans(z, &small).is_err());
        let none = Lv {
            segments: Vec::new(),
            ..z.clone()
        };
        assert!(lv_spans(&none, &geo).is_err());
        // Another VG's PVs are not ours; nor is a VG whose PVs disagree on the extent size.
        assert!(Geometry::of_vg("othervg", pvs.clone()).is_err());
        let mut two = pvs.clone();
        two.push(Pv {
            name: "/dev/loop9".into(),
            extent_size: 8 << 20,
            ..pvs[0].clone()
        });
        assert!(Geometry::of_vg("testvg", two).is_err());
        let gone = Geometry {
            pvs: Vec::new(),
            ..geo
        };
        assert!(lv_spans(z, &gone).is_err());
    }
}
