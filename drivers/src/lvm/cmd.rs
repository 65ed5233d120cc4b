//! The lvm2 argument vectors the driver runs, built by pure functions so their shape is unit
//! tested against Cinder's commands (`cinder/brick/local_dev/lvm.py`). Every name passed here was
//! validated by [`crate::names`] first; nothing goes through a shell.

/// `lvcreate -n <name> <vg> -L <N>g` (thick; Cinder's order), plus `--addtag`s. Metadata-only
/// mode (no device-mapper) adds `-an -Zn`: no activation, nothing for lvcreate to zero.
pub fn create_thick(
    vg: &str,
    name: &str,
    size_gb: u64,
    tags: &[String],
    metadata_only: bool,
) -> Vec<String> {
    let mut a = vec!["lvcreate".to_owned()];
    if metadata_only {
        a.extend(["-an".into(), "-Zn".into()]);
    }
    a.extend(["-n".into(), name.into()]);
    push_tags(&mut a, tags);
    a.extend([vg.into(), "-L".into(), format!("{size_gb}g")]);
    a
}

/// `lvcreate -T -V <N>g -n <name> <vg>/<pool>` (thin).
pub fn create_thin(vg: &str, pool: &str, name: &str, size_gb: u64, tags: &[String]) -> Vec<String> {
    let mut a = vec![
        "lvcreate".to_owned(),
        "-T".into(),
        "-V".into(),
        format!("{size_gb}g"),
        "-n".into(),
        name.into(),
    ];
    push_tags(&mut a, tags);
    a.push(format!("{vg}/{pool}"));
    a
}

/// `lvcreate -T -L <size>g <vg>/<pool>`: the thin pool, sized by the caller (Cinder: 95% of free).
pub fn create_pool(vg: &str, pool: &str, size_gib: f64) -> Vec<String> {
    vec![
        "lvcreate".into(),
        "-T".into(),
        "-L".into(),
        format!("{size_gib:.2}g"),
        format!("{vg}/{pool}"),
    ]
}

/// `lvcreate --name <name> --snapshot <vg>/<origin> [-L <N>g]` (thick snapshots get the origin's
/// size for their COW area; thin snapshots no size).
pub fn snapshot(
    vg: &str,
    origin: &str,
    name: &str,
    cow_size_gb: Option<u64>,
    tags: &[String],
) -> Vec<String> {
    let mut a = vec![
        "lvcreate".to_owned(),
        "--name".into(),
        name.into(),
        "--snapshot".into(),
        format!("{vg}/{origin}"),
    ];
    if let Some(s) = cow_size_gb {
        a.extend(["-L".into(), format!("{s}g")]);
    }
    push_tags(&mut a, tags);
    a
}

/// `lvextend -L <N>g <vg>/<name>`.
pub fn extend(vg: &str, name: &str, size_gb: u64) -> Vec<String> {
    vec![
        "lvextend".into(),
        "-L".into(),
        format!("{size_gb}g"),
        format!("{vg}/{name}"),
    ]
}

/// `lvremove -f <vg>/<name>`.
pub fn remove(vg: &str, name: &str) -> Vec<String> {
    vec!["lvremove".into(), "-f".into(), format!("{vg}/{name}")]
}

/// `lvrename <vg> <old> <new>`.
pub fn rename(vg: &str, old: &str, new: &str) -> Vec<String> {
    vec!["lvrename".into(), vg.into(), old.into(), new.into()]
}

/// `lvconvert --merge <vg>/<snapshot>`.
pub fn merge(vg: &str, snap: &str) -> Vec<String> {
    vec!["lvconvert".into(), "--merge".into(), format!("{vg}/{snap}")]
}

/// `lvchange -a y --yes (-k n | -K) <vg>/<name>`: permanent activation clears the
/// activation-skip flag, a temporary one ignores it.
pub fn activate(vg: &str, name: &str, permanent: bool) -> Vec<String> {
    let mut a: Vec<String> = vec!["lvchange".into(), "-a".into(), "y".into(), "--yes".into()];
    if permanent {
        a.extend(["-k".into(), "n".into()]);
    } else {
        a.push("-K".into());
    }
    a.push(format!("{vg}/{name}"));
    a
}

fn push_tags(a: &mut Vec<String>, tags: &[String]) {
    for t in tags {
        a.extend(["--addtag".into(), t.clone()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: Vec<String>) -> String {
        v.join(" ")
    }

    #[test]
    fn commands_match_cinders() {
        let v = "volume-0b6c3a2e-2d1f-4b8e-9d6c-3f7a1e2b4c5d";
        assert_eq!(
            s(create_thick("cinder-volumes", v, 10, &[], false)),
            format!("lvcreate -n {v} cinder-volumes -L 10g")
        );
        assert_eq!(
            s(create_thick("vg", v, 1, &["ember_name:db".into()], true)),
            format!("lvcreate -an -Zn -n {v} --addtag ember_name:db vg -L 1g")
        );
        assert_eq!(
            s(create_thin("vg", "vg-pool", v, 5, &[])),
            format!("lvcreate -T -V 5g -n {v} vg/vg-pool")
        );
        assert_eq!(
            s(create_pool("vg", "vg-pool", 9.5)),
            "lvcreate -T -L 9.50g vg/vg-pool"
        );
        assert_eq!(
            s(snapshot("vg", v, "_snapshot-x", Some(10), &[])),
            format!("lvcreate --name _snapshot-x --snapshot vg/{v} -L 10g")
        );
        assert_eq!(
            s(snapshot("vg", v, "_snapshot-x", None, &[])),
            format!("lvcreate --name _snapshot-x --snapshot vg/{v}")
        );
        assert_eq!(s(extend("vg", v, 3)), format!("lvextend -L 3g vg/{v}"));
        assert_eq!(s(remove("vg", v)), format!("lvremove -f vg/{v}"));
        assert_eq!(s(rename("vg", "old", v)), format!("lvrename vg old {v}"));
        assert_eq!(
            s(merge("vg", "_snapshot-x")),
            "lvconvert --merge vg/_snapshot-x"
        );
        assert_eq!(
            s(activate("vg", v, true)),
            format!("lvchange -a y --yes -k n vg/{v}")
        );
        assert_eq!(
            s(activate("vg", v, false)),
            format!("lvchange -a y --yes -K vg/{v}")
        );
    }
}
