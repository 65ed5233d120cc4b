//! LV -> PV byte ranges: where device-mapper is absent, an LV's bytes are found through its
//! segments (`seg_pe_ranges`), its PV's `pe_start` and the VG's extent size, and the engine runs
//! on those byte windows of the PVs.

use crate::data::Span;
use crate::error::{DriverError, Result};

use super::report::{Pv, Segment};

/// The byte spans of `lv`, in LV order. Only linear (single-stripe) segments can be mapped.
pub fn lv_spans(lv: &str, segs: &[Segment], pvs: &[Pv], extent_size: u64) -> Result<Vec<Span>> {
    let mut mine: Vec<&Segment> = segs.iter().filter(|s| s.lv_name == lv).collect();
    mine.sort_by_key(|s| s.start);
    if mine.is_empty() {
        return Err(DriverError::NotFound {
            what: "segments of LV",
            name: lv.to_owned(),
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
                    "LV {lv} has a {} segment with {} stripe(s); only linear segments can be used without device-mapper",
                    s.segtype, s.stripes
                ),
            });
        }
        if s.start != expect {
            return Err(DriverError::BadOutput {
                op: "map LV onto PVs",
                command: "lvs --segments".into(),
                reason: format!("LV {lv}: segment at {} but expected {expect}", s.start),
            });
        }
        let (pv, first, last) = &s.pe_ranges[0];
        let p = pvs
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
                    "LV {lv}: segment of {} bytes spans {extents} extents of {extent_size}",
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
    use super::super::report::{parse_pvs, parse_segments};
    use super::*;

    #[test]
    fn maps_a_two_segment_lv() {
        let segs = parse_segments(include_str!("testdata/segs.json")).unwrap();
        let pvs = parse_pvs(include_str!("testdata/pvs.json")).unwrap();
        let sp = lv_spans("z", &segs, &pvs, 4 << 20).unwrap();
        assert_eq!(sp.len(), 2);
        assert_eq!(sp[0].offset, 1 << 20);
        assert_eq!(sp[0].len, 256 * (4 << 20));
        assert_eq!(sp[1].offset, (1 << 20) + 310 * (4 << 20));
        assert_eq!(sp[1].len, 194 * (4 << 20));
        assert!(lv_spans("nope", &segs, &pvs, 4 << 20).is_err());
        assert!(lv_spans("z", &segs, &pvs, 1 << 20).is_err());
    }
}
