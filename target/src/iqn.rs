//! IQN building and validation.
//!
//! Ember accepts only `iqn.YYYY-MM.<reverse domain>[:<unique>]` with a restricted character set
//! (lower-case letters, digits, `.`, `-`, `:`), at most 223 bytes (RFC 3720). Anything else,
//! including whitespace and newlines that could inject lines into a tgt config file, is rejected.

use crate::error::{Result, TargetError};

/// Cinder's default `target_prefix`.
pub const DEFAULT_TARGET_PREFIX: &str = "iqn.2010-10.org.openstack:";

/// RFC 3720 limit on iSCSI names.
pub const MAX_IQN_LEN: usize = 223;

fn bad(iqn: &str, reason: &'static str) -> TargetError {
    TargetError::InvalidIqn {
        iqn: iqn.to_owned(),
        reason,
    }
}

/// Validates a full IQN (target or initiator).
pub fn validate_iqn(iqn: &str) -> Result<()> {
    if iqn.len() > MAX_IQN_LEN {
        return Err(bad(iqn, "longer than 223 bytes"));
    }
    let rest = iqn
        .strip_prefix("iqn.")
        .ok_or_else(|| bad(iqn, "does not start with `iqn.`"))?;
    let date = rest.get(..7).ok_or_else(|| bad(iqn, "no `yyyy-mm` date"))?;
    let db = date.as_bytes();
    if !(db[..4].iter().all(u8::is_ascii_digit)
        && db[4] == b'-'
        && db[5..].iter().all(u8::is_ascii_digit))
    {
        return Err(bad(iqn, "date is not `yyyy-mm`"));
    }
    let month = (db[5] - b'0') * 10 + (db[6] - b'0');
    if !(1..=12).contains(&month) {
        return Err(bad(iqn, "month is not 01..12"));
    }
    let rest = &rest[7..];
    let rest = rest
        .strip_prefix('.')
        .ok_or_else(|| bad(iqn, "no `.` and naming authority after the date"))?;
    let (authority, unique) = match rest.split_once(':') {
        Some((a, u)) => (a, Some(u)),
        None => (rest, None),
    };
    if authority.is_empty()
        || authority.starts_with(['.', '-'])
        || authority.ends_with('.')
        || !authority
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(bad(
            iqn,
            "naming authority must be a lower-case reversed domain",
        ));
    }
    if let Some(u) = unique {
        if u.is_empty() {
            return Err(bad(iqn, "empty name after `:`"));
        }
        if !u.bytes().all(is_unique_byte) {
            return Err(bad(
                iqn,
                "only lower-case letters, digits, `.`, `-`, `:` are allowed",
            ));
        }
    }
    Ok(())
}

fn is_unique_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b".-:".contains(&b)
}

/// Validates an initiator name from a connector: an IQN as [`validate_iqn`] accepts, or an
/// `eui.` (16 hex digits) / `naa.` (16 or 32 hex digits) name.
pub fn validate_initiator_name(name: &str) -> Result<()> {
    let hex_len = |rest: &str, lens: &[usize]| {
        lens.contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if let Some(rest) = name.strip_prefix("eui.") {
        return if hex_len(rest, &[16]) {
            Ok(())
        } else {
            Err(bad(name, "eui. names need 16 hex digits"))
        };
    }
    if let Some(rest) = name.strip_prefix("naa.") {
        return if hex_len(rest, &[16, 32]) {
            Ok(())
        } else {
            Err(bad(name, "naa. names need 16 or 32 hex digits"))
        };
    }
    validate_iqn(name)
}

/// Validates a `target_prefix` (an IQN ending in `:` or `.`, or a complete authority).
pub fn validate_prefix(prefix: &str) -> Result<()> {
    // A prefix becomes an IQN once a name is appended: check with a representative name.
    let probe = format!("{prefix}x");
    validate_iqn(&probe).map_err(|_| bad(prefix, "not a valid IQN prefix"))
}

/// Validates a volume name used inside an IQN, a tgt config and a file name in `volumes_dir`:
/// 1..=128 bytes of lower-case letters, digits, `.`, `-`; no leading `-` or `.`.
pub fn validate_volume_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > 128 {
        Some("must be 1..=128 bytes")
    } else if name.starts_with(['-', '.']) {
        Some("must not start with `-` or `.`")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        Some("only lower-case letters, digits, `-`, `.` are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TargetError::InvalidValue {
            field: "volume name",
            value: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Builds the target IQN for a volume: `prefix + name`, validated.
pub fn target_iqn(prefix: &str, volume_name: &str) -> Result<String> {
    validate_volume_name(volume_name)?;
    let iqn = format!("{prefix}{volume_name}");
    validate_iqn(&iqn)?;
    Ok(iqn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_prefix_builds_cinder_iqn() {
        let iqn = target_iqn(
            DEFAULT_TARGET_PREFIX,
            "volume-0b8e1c2a-4a3e-4c84-9b0e-1d2f3a4b5c6d",
        )
        .unwrap();
        assert_eq!(
            iqn,
            "iqn.2010-10.org.openstack:volume-0b8e1c2a-4a3e-4c84-9b0e-1d2f3a4b5c6d"
        );
    }

    #[test]
    fn accepts_initiator_names() {
        validate_iqn("iqn.1993-08.org.debian:01:abcdef012345").unwrap();
        validate_iqn("iqn.2004-10.com.ubuntu").unwrap();
    }

    #[test]
    fn rejects_hostile_iqns() {
        for iqn in [
            "",
            "eui.02004567A425678D",
            "iqn.2010-10.org.openstack:vol\nbacking-store /dev/vda",
            "iqn.2010-10.org.openstack:vol incominguser a b",
            "iqn.2010-10.org.openstack:vol#x",
            "iqn.2010-13.org.openstack:vol",
            "iqn.201a-10.org.openstack:vol",
            "iqn.2010-10.:vol",
            "iqn.2010-10.Org.openstack:vol",
            "iqn.2010-10.org.openstack:",
            "iqn.2010-10.org.openstack:VOL",
            "iqn.2010-10org.openstack:vol",
            "iqn.2010-10.org.openstack:vol/../x",
            "iqn.2010-10.org.openstack:vol>",
        ] {
            assert!(validate_iqn(iqn).is_err(), "{iqn:?} accepted");
        }
        let long = format!("iqn.2010-10.org.openstack:{}", "a".repeat(200));
        assert!(validate_iqn(&long).is_err());
    }

    #[test]
    fn rejects_hostile_volume_names() {
        for name in [
            "",
            "-rf",
            ".hidden",
            "vol;rm -rf /",
            "../x",
            "a b",
            "vol\nx",
            "völ",
            "Vol",
            "a/b",
        ] {
            assert!(validate_volume_name(name).is_err(), "{name:?} accepted");
        }
        assert!(validate_volume_name(&"a".repeat(129)).is_err());
    }

    #[test]
    fn prefix_validation() {
        validate_prefix(DEFAULT_TARGET_PREFIX).unwrap();
        validate_prefix("iqn.2025-11.org.ember:").unwrap();
        assert!(validate_prefix("iqn.2025-11.org.ember: ").is_err());
        assert!(validate_prefix("bogus:").is_err());
    }
}
