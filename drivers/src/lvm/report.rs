//! lvm2 `--reportformat json` reports parsed into typed structs (sizes requested with
//! `--units b --nosuffix`, so every size is a byte count). One function per report kind, each
//! unit-tested on output captured from lvm2 2.03 on this machine (`testdata/`).
//!
//! LVs are always reported with their segments (`lvs --segments`, one row per segment with the
//! LV's fields repeated) and PVs with their VG's extent size, so one lookup of an LV is enough
//! to map it onto its PVs: each lvm2 command costs about 45 ms here, most of it lvm2 starting
//! and scanning devices, whatever it reports.

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
    /// Its segments, in LV order.
    pub segments: Vec<Segment>,
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
    /// The extent size of its VG (0 for a PV in no VG).
    pub extent_size: u64,
}

#[derive(Deserialize)]
struct Report<T> {
    report: Vec<T>,
}
#[derive(Deserialize)]
struct SegPart {
    #[serde(default)]
    seg: Vec<RawLvSeg>,
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
/// One row of `lvs --segments`: the LV's fields, then the segment's.
#[derive(Deserialize)]
struct RawLvSeg {
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
    #[serde(default)]
    vg_extent_size: String,
}

/// The `lvs --segments` fields [`parse_lvs`] reads: the LV's, then its segment's.
pub const LVS_FIELDS: &str = "lv_name,lv_size,lv_attr,origin,lv_tags,pool_lv,data_percent,\
                              seg_start,seg_size,seg_pe_ranges,stripes,segtype";
/// The order `lvs --segments` is asked for, which keeps one LV's rows together in segment order
/// whatever a site's `lvm.conf` sets as `report/segs_sort` ([`parse_lvs`] relies on it).
pub const LVS_ORDER: &str = "lv_name,seg_start";
/// The vgs fields [`parse_vgs`] reads.
pub const VGS_FIELDS: &str = "vg_name,vg_size,vg_free,vg_extent_size,lv_count,vg_uuid";
/// The pvs fields [`parse_pvs`] reads.
pub const PVS_FIELDS: &str = "pv_name,pe_start,vg_name,vg_extent_size";

/// The command [`parse_lvs`] names in its errors.
const WHAT: &str = "lvs --segments";

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

/// Parses `lvs --segments -O LVS_ORDER --reportformat json -o LVS_FIELDS --units b --nosuffix`:
/// the rows of one LV (together, in segment order) become one [`Lv`]. Rows of one LV that
/// disagree on what it is (size, origin, tags, pool), or an LV reported twice apart, are
/// refused; its attributes and `data_percent` are read live for each row (an LV opened or a
/// snapshot written while the report runs) and taken from its first row.
pub fn parse_lvs(text: &str) -> Result<Vec<Lv>> {
    let mut out: Vec<Lv> = Vec::new();
    for part in parse::<SegPart>(WHAT, text)? {
        for r in part.seg {
            let seg = segment(&r)?;
            let lv = Lv {
                size: num(WHAT, "lv_size", &r.lv_size)?,
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
                segments: Vec::new(),
            };
            match out.last_mut() {
                Some(prev) if prev.name == lv.name => {
                    let same = (prev.size, &prev.origin, &prev.tags, &prev.pool_lv)
                        == (lv.size, &lv.origin, &lv.tags, &lv.pool_lv);
                    if !same {
                        return Err(bad(WHAT, format!("rows of LV {:?} disagree", lv.name)));
                    }
                    prev.segments.push(seg);
                }
                _ => {
                    if out.iter().any(|l| l.name == lv.name) {
                        return Err(bad(WHAT, format!("LV {:?} reported twice", lv.name)));
                    }
                    out.push(Lv {
                        segments: vec![seg],
                        ..lv
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The segment of one `lvs --segments` row.
fn segment(r: &RawLvSeg) -> Result<Segment> {
    let mut pe_ranges = Vec::new();
    for item in r.seg_pe_ranges.split_whitespace() {
        let (pv, range) = item
            .rsplit_once(':')
            .ok_or_else(|| bad(WHAT, format!("pe range {item:?}")))?;
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| bad(WHAT, format!("pe range {item:?}")))?;
        let (a, b) = (num(WHAT, "first pe", a)?, num(WHAT, "last pe", b)?);
        if b < a {
            return Err(bad(WHAT, format!("pe range {item:?} reversed")));
        }
        pe_ranges.push((pv.to_owned(), a, b));
    }
    Ok(Segment {
        start: num(WHAT, "seg_start", &r.seg_start)?,
        size: num(WHAT, "seg_size", &r.seg_size)?,
        stripes: r.stripes.trim().parse().unwrap_or(1),
        segtype: r.segtype.clone(),
        pe_ranges,
    })
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
                // A PV in no VG reports no extent size.
                extent_size: match r.vg_extent_size.trim() {
                    "" => 0,
                    v => num("pvs", "vg_extent_size", v)?,
                },
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
        assert_eq!(lvs[0].tag_value("ember_name"), Some("db"));
        assert!(lvs[0].has_tag("ember_creating"));
        assert_eq!(lvs[0].segments.len(), 1);
        let z = &lvs[2];
        assert_eq!(z.name, "z");
        assert_eq!(z.size, 1887436800);
        assert_eq!(z.segments.len(), 2);
        assert_eq!(z.segments[1].start, 1073741824);
        assert_eq!(
            z.segments[1].pe_ranges,
            vec![("/dev/loop2".to_owned(), 310, 503)]
        );
        assert_eq!(z.segments[1].segtype, "linear");
        let vgs = parse_vgs(include_str!("testdata/vgs.json")).unwrap();
        assert_eq!(vgs[0].extent_size, 4 << 20);
        assert_eq!(vgs[0].size, 2143289344);
        let pvs = parse_pvs(include_str!("testdata/pvs.json")).unwrap();
        assert_eq!(pvs[0].pe_start, 1 << 20);
        assert_eq!(pvs[0].extent_size, 4 << 20);
    }

    fn row(name: &str, size: &str, start: &str, ranges: &str) -> String {
        format!(
            r#"{{"lv_name":"{name}","lv_size":"{size}","lv_attr":"-wi-XX----","seg_start":"{start}","seg_size":"4194304","seg_pe_ranges":"{ranges}"}}"#
        )
    }

    fn seg_report(rows: &[String]) -> String {
        format!(r#"{{"report":[{{"seg":[{}]}}]}}"#, rows.join(","))
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_lvs("not json").is_err());
        assert!(parse_vgs(r#"{"report":[{"vg":[{"vg_name":"a","vg_size":"x","vg_free":"1","vg_extent_size":"1","lv_count":"0"}]}]}"#).is_err());
        assert!(parse_lvs(&seg_report(&[row("a", "1", "0", "/dev/x:5-2")])).is_err());
        assert!(parse_lvs(&seg_report(&[])).unwrap().is_empty());
        // Two rows of one LV must agree on the LV, and one LV's rows come together.
        let a0 = row("a", "8388608", "0", "/dev/x:0-0");
        let a1 = row("a", "8388608", "4194304", "/dev/x:3-3");
        assert_eq!(
            parse_lvs(&seg_report(&[a0.clone(), a1.clone()])).unwrap()[0]
                .segments
                .len(),
            2
        );
        let other_size = row("a", "4194304", "4194304", "/dev/x:3-3");
        assert!(parse_lvs(&seg_report(&[a0.clone(), other_size])).is_err());
        // Attributes read live may change between rows (the LV was opened): the first counts.
        let opened = a1.replace("-wi-XX----", "-wi-ao----");
        let l = parse_lvs(&seg_report(&[a0.clone(), opened])).unwrap();
        assert_eq!((l[0].attr.as_str(), l[0].segments.len()), ("-wi-XX----", 2));
        let b = row("b", "4194304", "0", "/dev/x:1-1");
        assert!(parse_lvs(&seg_report(&[a0, b, a1])).is_err());
        let l = parse_lvs(r#"{"report":[{"seg":[{"lv_name":"a","lv_size":"1","lv_attr":"owi-a-s---","lv_tags":"ember_name:db,x","seg_start":"0","seg_size":"1","seg_pe_ranges":""}]}]}"#).unwrap();
        assert!(l[0].has_snapshots());
        assert_eq!(l[0].tag_value("ember_name"), Some("db"));
        let pv = parse_pvs(r#"{"report":[{"pv":[{"pv_name":"/dev/x","pe_start":"1048576","vg_name":"","vg_extent_size":""}]}]}"#).unwrap();
        assert_eq!(pv[0].extent_size, 0);
    }
}
