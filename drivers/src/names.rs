//! Strict allow-list validation of every name that reaches a backend command or path.
//!
//! Cinder's templates: volumes are `volume-<uuid>`, snapshots `snapshot-<uuid>` (stored in LVM as
//! `_snapshot-<uuid>`, because LVM reserves names starting with "snapshot"). Users may give volumes
//! a display name; it never reaches a command or a path — it is stored as metadata and resolved to
//! the volume's UUID. Anything outside the allow-list is refused, never escaped.

use uuid::Uuid;

use crate::error::{DriverError, Result};

/// Prefix of volume names (Cinder's `volume_name_template`).
pub const VOLUME_PREFIX: &str = "volume-";
/// Prefix of snapshot names (Cinder's `snapshot_name_template`).
pub const SNAPSHOT_PREFIX: &str = "snapshot-";
/// Longest display name accepted.
pub const MAX_DISPLAY_NAME: usize = 64;
/// Largest volume size accepted, in GiB (1 PiB): keeps byte arithmetic far from overflow.
pub const MAX_SIZE_GB: u64 = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;

/// Parses a canonical (lowercase, hyphenated) UUID; anything else is refused.
pub fn parse_uuid(s: &str) -> Result<Uuid> {
    let u = Uuid::try_parse(s).map_err(|_| DriverError::invalid(format!("{s:?} is not a UUID")))?;
    if u.hyphenated().to_string() != s {
        return Err(DriverError::invalid(format!(
            "{s:?} is not a canonical lowercase hyphenated UUID"
        )));
    }
    Ok(u)
}

/// `volume-<uuid>` for a volume id.
pub fn volume_name(id: &Uuid) -> String {
    format!("{VOLUME_PREFIX}{}", id.hyphenated())
}

/// `snapshot-<uuid>` for a snapshot id.
pub fn snapshot_name(id: &Uuid) -> String {
    format!("{SNAPSHOT_PREFIX}{}", id.hyphenated())
}

/// Validates a `volume-<uuid>` name and returns the UUID.
pub fn check_volume_name(name: &str) -> Result<Uuid> {
    let rest = name.strip_prefix(VOLUME_PREFIX).ok_or_else(|| {
        DriverError::invalid(format!("volume name {name:?} does not match volume-<uuid>"))
    })?;
    parse_uuid(rest)
}

/// Validates a `snapshot-<uuid>` name and returns the UUID.
pub fn check_snapshot_name(name: &str) -> Result<Uuid> {
    let rest = name.strip_prefix(SNAPSHOT_PREFIX).ok_or_else(|| {
        DriverError::invalid(format!(
            "snapshot name {name:?} does not match snapshot-<uuid>"
        ))
    })?;
    parse_uuid(rest)
}

/// The LVM name of a snapshot: `_snapshot-<uuid>` (Cinder's `_escape_snapshot`).
pub fn lvm_snapshot_name(snapshot_name: &str) -> Result<String> {
    check_snapshot_name(snapshot_name)?;
    Ok(format!("_{snapshot_name}"))
}

/// Validates a user's display name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 bytes, no `..`,
/// not a UUID and not starting with `volume-`/`snapshot-` (those resolve as ids).
pub fn check_display_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(DriverError::invalid(format!(
            "name {name:?} refused: {why}"
        )))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_DISPLAY_NAME {
        return bad("longer than 64 bytes");
    }
    let first = name.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return bad(&format!(
            "character {c:?} is not allowed (A-Z a-z 0-9 _ . -)"
        ));
    }
    if name.contains("..") {
        return bad("contains \"..\"");
    }
    if Uuid::try_parse(name).is_ok() {
        return bad("looks like a UUID");
    }
    if name.starts_with(VOLUME_PREFIX) || name.starts_with(SNAPSHOT_PREFIX) {
        return bad("starts with a reserved prefix (volume-, snapshot-)");
    }
    Ok(())
}

/// Validates a size in GiB: whole, at least 1, at most [`MAX_SIZE_GB`].
pub fn check_size_gb(size: u64) -> Result<u64> {
    if size == 0 {
        return Err(DriverError::invalid("size must be at least 1 GiB"));
    }
    if size > MAX_SIZE_GB {
        return Err(DriverError::invalid(format!(
            "size {size} GiB is larger than the maximum {MAX_SIZE_GB} GiB"
        )));
    }
    Ok(size * GIB)
}

/// Validates an LVM object name from configuration or a manage reference (VG, thin pool, an LV
/// to manage): `[A-Za-z0-9+_.][A-Za-z0-9+_.-]*`, at most 127 bytes, not `.`/`..`, no leading `-`.
pub fn check_lvm_name(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(DriverError::invalid(format!(
            "{what} name {name:?} refused: {why}"
        )))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 127 {
        return bad("longer than 127 bytes");
    }
    if name == "." || name == ".." {
        return bad("reserved");
    }
    if name.starts_with('-') {
        return bad("starts with '-'");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '.' | '-')))
    {
        return bad(&format!("character {c:?} is not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0b6c3a2e-2d1f-4b8e-9d6c-3f7a1e2b4c5d";

    #[test]
    fn volume_and_snapshot_templates() {
        let id = parse_uuid(U).unwrap();
        assert_eq!(volume_name(&id), format!("volume-{U}"));
        assert_eq!(check_volume_name(&format!("volume-{U}")).unwrap(), id);
        assert_eq!(
            lvm_snapshot_name(&format!("snapshot-{U}")).unwrap(),
            format!("_snapshot-{U}")
        );
        for bad in [
            "volume-x",
            "volume-0B6C3A2E-2D1F-4B8E-9D6C-3F7A1E2B4C5D",
            "vol-0b6c3a2e-2d1f-4b8e-9d6c-3f7a1e2b4c5d",
            "volume-0b6c3a2e2d1f4b8e9d6c3f7a1e2b4c5d",
            "volume-0b6c3a2e-2d1f-4b8e-9d6c-3f7a1e2b4c5d;rm",
        ] {
            assert!(check_volume_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_names_are_allow_listed() {
        for ok in ["db", "db-01", "a.b_c", "X9"] {
            check_display_name(ok).unwrap();
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "-rf",
            ".hidden",
            "a/b",
            "a..b",
            "a b",
            "a;b",
            "$(x)",
            "a\nb",
            "é",
            long.as_str(),
            U,
            "volume-x",
            "snapshot-y",
        ] {
            assert!(check_display_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sizes_and_lvm_names() {
        assert!(check_size_gb(0).is_err());
        assert!(check_size_gb(MAX_SIZE_GB + 1).is_err());
        assert_eq!(check_size_gb(2).unwrap(), 2 * GIB);
        check_lvm_name("vg", "cinder-volumes").unwrap();
        for bad in ["", "-vg", "..", "a/b", "a b", "a$", "a\n"] {
            assert!(check_lvm_name("vg", bad).is_err(), "{bad:?}");
        }
    }
}
