//! Fuzz harnesses for the drivers' hostile inputs (config text, names, lvm2 reports). The logic
//! lives here so `cargo test` replays the checked-in corpus
//! (`fuzz/corpus/{config_parse,names,lvm_report}`) through exactly the code the `fuzz/` targets
//! run. Not a public API.

use crate::config::Config;
use crate::lvm::layout::{lv_spans, Geometry};
use crate::lvm::report::{parse_lvs, parse_pvs, parse_vgs};
use crate::names;

/// Shell metacharacters and quoting: none may appear in a name that reaches a command or path.
pub const SHELL_META: &[char] = &[
    ';', '&', '|', '$', '`', '(', ')', '<', '>', '*', '?', '[', ']', '{', '}', '~', '!', '#', '\'',
    '"', '\\', ' ', '\t', '=', '%', '^', ',', ':', '@',
];

/// The independent allow-list every accepted name must satisfy, whatever the checker: non-empty,
/// at most `max` bytes, ASCII, no control characters or newlines, no shell metacharacter, no `/`,
/// no leading `-`, not `.` or `..`. Returns why it fails.
pub fn forbidden(name: &str, max: usize) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > max {
        return Some("too long");
    }
    if !name.is_ascii() {
        return Some("non-ASCII");
    }
    if name.chars().any(|c| c.is_ascii_control()) {
        return Some("control character");
    }
    if name.contains(SHELL_META) {
        return Some("shell metacharacter");
    }
    if name.contains('/') {
        return Some("slash");
    }
    if name.starts_with('-') {
        return Some("leading '-'");
    }
    if name == "." || name == ".." {
        return Some("dot name");
    }
    None
}

/// Runs every name checker on `s` and asserts that whatever is accepted passes [`forbidden`]
/// (plus each checker's own extra promises).
pub fn check_names(s: &str) {
    if names::check_volume_name(s).is_ok() {
        assert_eq!(forbidden(s, 7 + 36), None, "volume name {s:?}");
        assert_eq!(s.len(), 7 + 36, "{s:?}");
    }
    if names::check_snapshot_name(s).is_ok() {
        assert_eq!(forbidden(s, 9 + 36), None, "snapshot name {s:?}");
    }
    if let Ok(l) = names::lvm_snapshot_name(s) {
        assert_eq!(forbidden(&l, 10 + 36), None, "lvm snapshot name {l:?}");
    }
    if names::parse_uuid(s).is_ok() {
        assert_eq!(forbidden(s, 36), None, "uuid {s:?}");
    }
    if names::check_display_name(s).is_ok() {
        assert_eq!(
            forbidden(s, names::MAX_DISPLAY_NAME),
            None,
            "display name {s:?}"
        );
        assert!(!s.contains(".."), "display name {s:?} contains ..");
        assert!(!s.starts_with('.'), "display name {s:?} is hidden");
    }
    if names::check_lvm_name("fuzz", s).is_ok() {
        assert_eq!(forbidden(s, 127), None, "lvm name {s:?}");
    }
}

/// Fuzz entry for names: the input as lossy UTF-8, and each line of it separately.
pub fn names(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    check_names(&s);
    for line in s.split('\n') {
        check_names(line);
    }
}

/// Fuzz entry for config text: parse must return Ok or Err, never panic; an accepted config
/// validates again, its names pass [`forbidden`], file paths are absolute and its target table
/// converts.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(cfg) = Config::parse(&text) else {
        return;
    };
    cfg.validate().expect("a parsed config validates again");
    for b in &cfg.backends {
        assert_eq!(forbidden(&b.name, 127), None, "backend name {:?}", b.name);
        for n in [&b.volume_group, &b.thin_pool].into_iter().flatten() {
            assert_eq!(forbidden(n, 127), None, "lvm name {n:?}");
        }
        if let Some(p) = &b.path {
            assert!(p.is_absolute(), "path {p:?}");
        }
        b.target_config().expect("validated target table converts");
        let _ = cfg.backend(Some(&b.name)).expect("backend found by name");
    }
    // Round trip: what we accept we can write back and read again identically.
    if let Ok(out) = toml::to_string(&cfg) {
        if let Ok(again) = Config::parse(&out) {
            assert_eq!(again, cfg, "round trip changed the config");
        }
    }
}

/// Fuzz entry for lvm2 JSON reports (`lvs --segments`, `pvs`, `vgs`; one text may hold all
/// three): parsing returns Ok or Err, never panics. Accepted LVs have distinct names and at
/// least one segment each. Every LV is mapped onto the geometry of every VG the PVs name: the
/// mapping returns Ok or Err, and an Ok mapping has one span per segment, each of the segment's
/// size, on a PV of that VG, at its extents' offset, the segments following each other from 0.
pub fn lvm_report(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = parse_vgs(&text);
    let Ok(lvs) = parse_lvs(&text) else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    for lv in &lvs {
        assert!(seen.insert(lv.name.as_str()), "LV {:?} twice", lv.name);
        assert!(!lv.segments.is_empty(), "LV {:?} without segments", lv.name);
    }
    let Ok(pvs) = parse_pvs(&text) else {
        return;
    };
    let mut vgs: Vec<&str> = pvs.iter().map(|p| p.vg_name.as_str()).collect();
    vgs.sort_unstable();
    vgs.dedup();
    for vg in vgs {
        let Ok(geo) = Geometry::of_vg(vg, pvs.clone()) else {
            continue;
        };
        for lv in &lvs {
            let Ok(spans) = lv_spans(lv, &geo) else {
                continue;
            };
            let mut segs: Vec<_> = lv.segments.iter().collect();
            segs.sort_by_key(|s| s.start);
            assert_eq!(spans.len(), segs.len(), "one span per segment");
            let mut at = 0u64;
            for (sp, seg) in spans.iter().zip(segs) {
                assert_eq!(seg.start, at, "segments follow each other");
                assert_eq!(sp.len, seg.size, "span of the segment's size");
                let (pv, first, _) = &seg.pe_ranges[0];
                let p = geo
                    .pvs
                    .iter()
                    .find(|p| &p.name == pv)
                    .expect("span on a PV");
                assert_eq!(sp.path.to_str(), Some(pv.as_str()));
                assert_eq!(sp.offset, first * geo.extent_size + p.pe_start);
                at += seg.size;
            }
        }
    }
}
