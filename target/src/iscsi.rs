//! iSCSI logic shared by every [`TargetHelper`](crate::TargetHelper) implementation (tgt, LIO),
//! as Cinder's `volume/targets/iscsi.py` is for its helpers: the checks on paths Ember writes
//! into target state, the private state folder, the IQN of a volume, the stored model
//! (`provider_location` / `provider_auth`) built and checked, the byte window of a volume, the
//! "in use" error and Cinder's connection_info. An implementation keeps only what differs:
//! how it drives its target (tgtadm + config files, configfs) and its LUN numbering.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::chap::Chap;
use crate::error::{io_err, Result, TargetError};
use crate::iqn;
use crate::types::{
    parse_provider_auth, parse_provider_location, ConnectionInfo, Connector, ExportModel,
    ExportVolume, ProviderLocation, TargetConfig,
};
use crate::window::Window;

/// A path written into a config file: absolute, printable ASCII, no whitespace or tgt-config
/// syntax characters.
pub fn validate_config_path(p: &Path, field: &'static str) -> Result<()> {
    let s = p.to_str().unwrap_or("");
    let reason = if s.is_empty() {
        Some("must be valid UTF-8")
    } else if !s.starts_with('/') {
        Some("must be absolute")
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"#<>\"'\\,=".contains(&b))
    {
        // `,` and `=` would add keys to tgtadm's and LIO's `key=value,...` parameter strings.
        Some("must be printable ASCII without whitespace, quotes, `#`, `<`, `>`, `\\`, `,`, `=`")
    } else if s.split('/').any(|c| c == "..") {
        Some("must not contain `..`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TargetError::InvalidValue {
            field,
            value: p.display().to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A volume id as Ember records it in target state: letters, digits and `-` (a UUID).
pub fn validate_volume_id(id: &str) -> Result<()> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(TargetError::InvalidValue {
            field: "volume id",
            value: id.to_owned(),
            reason: "only letters, digits and `-` are allowed",
        });
    }
    Ok(())
}

/// Creates the helper's state folder `dir` (mode 0700: it holds CHAP secrets), or tightens an
/// existing one to 0700.
pub fn create_state_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("cannot create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err("cannot chmod", dir))
}

/// The IQN of a volume: `target_prefix + name`.
pub fn volume_iqn(cfg: &TargetConfig, vol: &ExportVolume) -> Result<String> {
    iqn::target_iqn(&cfg.target_prefix, &vol.name)
}

/// The byte window of a volume that is one range of its backing device, `None` for a whole
/// device or file.
pub fn window_of(vol: &ExportVolume) -> Option<Window> {
    vol.is_windowed().then(|| Window {
        source: vol.backing_path.clone(),
        offset: vol.backing_offset,
        len: vol.backing_len.unwrap_or(vol.size_bytes),
    })
}

/// The model a caller persists for an export: `provider_location` on the configured portals,
/// `provider_auth` as given.
pub fn export_model(
    cfg: &TargetConfig,
    tid: u32,
    iqn: &str,
    lun: u32,
    provider_auth: Option<String>,
) -> ExportModel {
    ExportModel {
        provider_location: ProviderLocation {
            portals: cfg.portals(),
            tid,
            iqn: iqn.to_owned(),
            lun,
        }
        .to_string(),
        provider_auth,
    }
}

/// Parses a stored model's `provider_location` and checks it names `vol`'s IQN.
pub fn check_model_iqn(
    cfg: &TargetConfig,
    vol: &ExportVolume,
    model: &ExportModel,
) -> Result<ProviderLocation> {
    let loc = parse_provider_location(&model.provider_location)?;
    let expected = volume_iqn(cfg, vol)?;
    if loc.iqn != expected {
        return Err(TargetError::ModelMismatch {
            volume: vol.name.clone(),
            iqn: loc.iqn,
            expected,
        });
    }
    Ok(loc)
}

/// The CHAP credentials of a stored `provider_auth` (`None` without one).
pub fn chap_of(provider_auth: Option<&str>) -> Result<Option<Chap>> {
    match provider_auth {
        Some(a) => parse_provider_auth(a),
        None => Ok(None),
    }
}

/// The error for a removal refused while `initiators` (one per session) are logged in.
pub fn in_use(iqn: &str, initiators: &[&str]) -> TargetError {
    TargetError::TargetInUse {
        iqn: iqn.to_owned(),
        sessions: initiators.len(),
        initiators: initiators.join(", "),
    }
}

/// Cinder's connection_info for `vol` exported at `loc`: through the portals the model names
/// (the configured ones if it names none).
pub fn connection_info(
    cfg: &TargetConfig,
    vol: &ExportVolume,
    loc: &ProviderLocation,
    connector: &Connector,
    chap: Option<Chap>,
) -> ConnectionInfo {
    let portals = if loc.portals.is_empty() {
        cfg.portals()
    } else {
        loc.portals.clone()
    };
    ConnectionInfo::iscsi(cfg, vol, loc, portals, connector.multipath, chap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths() {
        validate_config_path(Path::new("/dev/vg/volume-1"), "p").unwrap();
        for p in [
            "relative",
            "/a b",
            "/a\nb",
            "/a/../b",
            "/a#b",
            "/a<b",
            "/a,bsoflags=x",
            "/a=b",
        ] {
            assert!(validate_config_path(Path::new(p), "p").is_err(), "{p:?}");
        }
    }
}
