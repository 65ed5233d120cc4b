//! lvm2 `--reportformat json` reports parsed into typed structs (sizes requested with
//! `--units b --nosuffix`, so every size is a byte count). One function per report kind, each
//! unit-tested on output captured from lvm2 2.03 on this machine (`testdata/`).

use serde::Deserialize;

use crate::error::{DriverError, Result};

/// One logical volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Lv {
    pub name: String,
    pub size: u64,
    /// The 10-character attribute string (`-wi-a-----`, `owi---s---`, `twi---tz--`, ...).
    pub attr: String,
    pub origin: String,
    pub tags: Vec<String>,
    pub pool_lv: String,
    /// `data_percent` of thin pools and thin LVs.
    pub data_percent: Option<f64>,
}

impl Lv {
    fn attr_at(&self, i: usize) -> char {
        self.attr.chars().nth(i).unwrap_or('-')
    }
    /// A (COW) snapshot LV.
    pub fn is_snapshot(&self) -> bool {
        self.attr_at(0) == 's'
    }
    /// The origin of (COW) snapshots.
    pub fn has_snapshots(&self) -> bool {
        matches!(self.attr_at(0), 'o' | 'O')
    }
    /// A thin pool.
    pub fn is_thin_pool(&self) -> bool {
        self.attr_at(0) == 't'
    }
    /// Hidden/internal LV (pool data/metadata, mirror legs).
    pub fn is_internal(&self) -> bool {
        matches!(self.attr_at(0), 'i' | 'I' | 'e' | 'l')
    }
    /// Open (in use).
    pub fn is_open(&self) -> bool {
        self.attr_at(5) == 'o'
    }
    /// Has the tag.
    pub fn has_tag(&self, t: &str) -> bool {
        self.tags.iter().any(|x| x == t)
    }
    /// The value of the first `key:value` tag with this key.
    pub fn tag_value(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
    }
}

/// One segment of an LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub lv_name: String,
    /// Byte offset of the segment inside the LV.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// `linear`, `striped`, `thin`, `snapshot`, ...
    pub segtype: String,
    pub stripes: u32,
    /// `(pv, first_pe, last_pe)` from `seg_pe_ranges` (inclusive extents).
    pub pe_ranges: Vec<(String, u64, u64)>,
}

/// One volume group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vg {
    pub name: String,
    pub size: u64,
    pub free: u64,
    pub extent_size: u64,
    pub lv_count: u64,
    pub uuid: String,
}

/// One physical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pv {
    pub name: String,
    /// Byte offset of the first extent on the device.
    pub pe_start: u64,
    pub vg_name: String,
}

#[derive(Deserialize)]
struct Report<T> {
    report: Vec<T>,
}
#[derive(Deserialize)]
struct LvPart {
    #[serde(default)]
    lv: Vec<RawLv>,
}
#[derive(Deserialize)]
struct SegPart {
    #[serde(default)]
    seg: Vec<RawSeg>,
}
#[derive(Deserialize)]
struct VgPart {
    #[serde(default)]
    vg: Vec<RawVg>,
}
#[derive(Deserialize)]
struct PvPart {
    #[serde(default)]
    pv: Vec<RawPv>,
}
#[derive(Deserialize)]
struct RawLv {
    lv_name: String,
    lv_size: String,
    lv_attr: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    lv_tags: String,
    #[serde(default)]
    pool_lv: String,
    #[serde(default)]
    data_percent: String,
}
#[derive(Deserialize)]
struct RawSeg {
    lv_name: String,
    seg_start: String,
    seg_size: String,
    seg_pe_ranges: String,
    #[serde(default)]
    stripes: String,
    #[serde(default)]
    segtype: String,
}
#[derive(Deserialize)]
struct RawVg {
    vg_name: String,
    vg_size: String,
    vg_free: String,
    vg_extent_size: String,
    lv_count: String,
    #[serde(default)]
    vg_uuid: String,
}
#[derive(Deserialize)]
struct RawPv {
    pv_name: String,
    pe_start: String,
    #[serde(default)]
    vg_name: String,
}

/// The lvs fields [`parse_lvs`] reads.
pub const LVS_FIELDS: &str = "lv_name,lv_size,lv_attr,origin,lv_tags,pool_lv,data_percent";
/// The `lvs --segments` fields [`parse_segments`] reads.
pub const SEG_FIELDS: &str = "lv_name,seg_start,seg_size,seg_pe_ranges,stripes,segtype";
/// The vgs fields [`parse_vgs`] reads.
pub const VGS_FIELDS: &str = "vg_name,vg_size,vg_free,vg_extent_size,lv_count,vg_uuid";
/// The pvs fields [`parse_pvs`] reads.
pub const PVS_FIELDS: &str = "pv_name,pe_start,vg_name";

fn bad(what: &str, reason: impl Into<String>) -> DriverError {
    DriverError::BadOutput {
        op: "parse lvm report",
        command: what.to_owned(),
        reason: reason.into(),
    }
}

fn num(what: &str, field: &str, v: &str) -> Result<u64> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| bad(what, format!("{field} {v:?} is not a byte count")))
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<Vec<T>> {
    let r: Report<T> = serde_json::from_str(text)
        .map_err(|e| bad(what, format!("not an lvm JSON report: {e}")))?;
    Ok(r.report)
}

/// Parses `lvs --reportformat json -o LVS_FIELDS --units b --nosuffix`.
pub fn parse_lvs(text: &str) -> Result<Vec<Lv>> {
    let mut out = Vec::new();
    for part in parse::<LvPart>("lvs", text)? {
        for r in part.lv {
            out.push(Lv {
                size: num("lvs", "lv_size", &r.lv_size)?,
                attr: r.lv_attr,
                origin: r.origin,
                tags: r
                    .lv_tags
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                pool_lv: r.pool_lv,
                data_percent: r.data_percent.trim().parse::<f64>().ok(),
                name: r.lv_name,
            });
        }
    }
    Ok(out)
}

/// Parses `lvs --segments --reportformat json -o SEG_FIELDS --units b --nosuffix`.
pub fn parse_segments(text: &str) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    for part in parse::<SegPart>("lvs --segments", text)? {
        for r in part.seg {
            let mut pe_ranges = Vec::new();
            for item in r.seg_pe_ranges.split_whitespace() {
                let (pv, range) = item
                    .rsplit_once(':')
                    .ok_or_else(|| bad("lvs --segments", format!("pe range {item:?}")))?;
                let (a, b) = range
                    .split_once('-')
                    .ok_or_else(|| bad("lvs --segments", format!("pe range {item:?}")))?;
                let (a, b) = (
                    num("lvs --segments", "first pe", a)?,
                    num("lvs --segments", "last pe", b)?,
                );
                if b < a {
                    return Err(bad("lvs --segments", format!("pe range {item:?} reversed")));
                }
                pe_ranges.push((pv.to_owned(), a, b));
            }
            out.push(Segment {
                start: num("lvs --segments", "seg_start", &r.seg_start)?,
                size: num("lvs --segments", "seg_size", &r.seg_size)?,
                stripes: r.stripes.trim().parse().unwrap_or(1),
                segtype: r.segtype,
                pe_ranges,
                lv_name: r.lv_name,
            });
        }
    }
    Ok(out)
}

/// Parses `vgs --reportformat json -o VGS_FIELDS --units b --nosuffix`.
pub fn parse_vgs(text: &str) -> Result<Vec<Vg>> {
    let mut out = Vec::new();
    for part in parse::<VgPart>("vgs", text)? {
        for r in part.vg {
            out.push(Vg {
                size: num("vgs", "vg_size", &r.vg_size)?,
                free: num("vgs", "vg_free", &r.vg_free)?,
                extent_size: num("vgs", "vg_extent_size", &r.vg_extent_size)?,
                lv_count: num("vgs", "lv_count", &r.lv_count)?,
                uuid: r.vg_uuid,
                name: r.vg_name,
            });
        }
    }
    Ok(out)
}

/// Parses `pvs --reportformat json -o PVS_FIELDS --units b --nosuffix`.
pub fn parse_pvs(text: &str) -> Result<Vec<Pv>> {
    let mut out = Vec::new();
    for part in parse::<PvPart>("pvs", text)? {
        for r in part.pv {
            out.push(Pv {
                pe_start: num("pvs", "pe_start", &r.pe_start)?,
                name: r.pv_name,
                vg_name: r.vg_name,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_reports() {
        let lvs = parse_lvs(include_str!("testdata/lvs.json")).unwrap();
        assert_eq!(lvs.len(), 3);
        assert_eq!(lvs[0].name, "volume-b");
        assert_eq!(lvs[0].size, 209715200);
        assert!(!lvs[0].is_snapshot() && !lvs[0].is_open());
        let segs = parse_segments(include_str!("testdata/segs.json")).unwrap();
        let z: Vec<_> = segs.iter().filter(|s| s.lv_name == "z").collect();
        assert_eq!(z.len(), 2);
        assert_eq!(z[1].start, 1073741824);
        assert_eq!(z[1].pe_ranges, vec![("/dev/loop0".to_owned(), 310, 503)]);
        assert_eq!(z[1].segtype, "linear");
        let vgs = parse_vgs(include_str!("testdata/vgs.json")).unwrap();
        assert_eq!(vgs[0].extent_size, 4 << 20);
        assert_eq!(vgs[0].size, 2143289344);
        let pvs = parse_pvs(include_str!("testdata/pvs.json")).unwrap();
        assert_eq!(pvs[0].pe_start, 1 << 20);
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_lvs("not json").is_err());
        assert!(parse_vgs(r#"{"report":[{"vg":[{"vg_name":"a","vg_size":"x","vg_free":"1","vg_extent_size":"1","lv_count":"0"}]}]}"#).is_err());
        assert!(parse_segments(r#"{"report":[{"seg":[{"lv_name":"a","seg_start":"0","seg_size":"1","seg_pe_ranges":"/dev/x:5-2"}]}]}"#).is_err());
        assert!(parse_lvs(r#"{"report":[{"lv":[]}]}"#).unwrap().is_empty());
        let l = parse_lvs(r#"{"report":[{"lv":[{"lv_name":"a","lv_size":"1","lv_attr":"owi-a-s---","lv_tags":"ember_name:db,x"}]}]}"#).unwrap();
        assert!(l[0].has_snapshots());
        assert_eq!(l[0].tag_value("ember_name"), Some("db"));
    }
}
