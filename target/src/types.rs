//! Data passed across [`TargetHelper`](crate::TargetHelper): the volume to export, the model the
//! caller persists (Cinder's `provider_location` / `provider_auth` strings), the os-brick connector
//! and Cinder's `connection_info`, plus the helper configuration.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chap::{Chap, Secret};
use crate::error::{Result, TargetError};
use crate::iqn;

/// A volume as the target sees it. `backing_path` is always the path the driver computed (an LV
/// device, a file); callers never supply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportVolume {
    /// Volume id (a UUID in Cinder).
    pub id: String,
    /// Volume name, `volume-<uuid>` by default; the IQN is `target_prefix + name`.
    pub name: String,
    /// Device or file holding the volume's bytes.
    pub backing_path: PathBuf,
    /// Volume size in bytes (what the initiator must see).
    pub size_bytes: u64,
    /// Start of the volume inside `backing_path` (non-zero for volumes that live as a byte range of
    /// a PV without device-mapper); 0 otherwise.
    pub backing_offset: u64,
    /// Length of the window inside `backing_path`, or `None` for the whole file/device.
    pub backing_len: Option<u64>,
}

impl ExportVolume {
    /// A volume backed by the whole of `backing_path`.
    pub fn whole(
        id: impl Into<String>,
        name: impl Into<String>,
        backing_path: impl Into<PathBuf>,
        size_bytes: u64,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            backing_path: backing_path.into(),
            size_bytes,
            backing_offset: 0,
            backing_len: None,
        }
    }

    /// True when only a byte window of `backing_path` belongs to this volume.
    pub fn is_windowed(&self) -> bool {
        self.backing_offset != 0 || self.backing_len.is_some()
    }
}

/// What `create_export` returns and the caller stores (Cinder's model update). The strings keep
/// Cinder's exact formats:
/// `provider_location` = `<ip>:<port>[;<ip2>:<port>],<tid> <iqn> <lun>`,
/// `provider_auth` = `CHAP <user> <secret>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportModel {
    pub provider_location: String,
    pub provider_auth: Option<String>,
}

impl fmt::Debug for ExportModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportModel")
            .field("provider_location", &self.provider_location)
            .field(
                "provider_auth",
                &self.provider_auth.as_ref().map(|_| "CHAP *** ***"),
            )
            .finish()
    }
}

/// The os-brick connector dict (`connector` in Cinder's initialize_connection).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connector {
    /// Initiator IQN; required by every iSCSI target call.
    #[serde(default)]
    pub initiator: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub multipath: bool,
    /// Every other os-brick key (platform, os_type, do_local_attach, uuid, ...), kept as given.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Connector {
    /// The connector's initiator IQN, which every connection needs, validated.
    pub fn initiator_name(&self) -> Result<&str> {
        let initiator = self
            .initiator
            .as_deref()
            .ok_or(TargetError::InvalidConnector {
                missing: "initiator",
            })?;
        iqn::validate_initiator_name(initiator)?;
        Ok(initiator)
    }
}

/// Cinder's connection_info: `{"driver_volume_type": "iscsi", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub driver_volume_type: String,
    pub data: IscsiData,
}

/// The `data` part of an iSCSI connection_info, serialised with Cinder's exact keys. The multipath
/// keys are present only when the connector asked for multipath or there is more than one portal;
/// the auth keys only when the export uses CHAP. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IscsiData {
    pub target_discovered: bool,
    pub target_iqn: String,
    pub target_portal: String,
    pub target_lun: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_iqns: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_portals: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_luns: Option<Vec<u32>>,
    pub volume_id: String,
    pub discard: bool,
    pub encrypted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_password: Option<Secret>,
}

impl ConnectionInfo {
    /// Cinder's iSCSI connection_info for `vol` exported at `loc` through `portals`: the
    /// multipath lists when the connector asks for multipath or there are several portals, the
    /// CHAP keys when the export has credentials. Shared by every target helper.
    pub fn iscsi(
        cfg: &TargetConfig,
        vol: &ExportVolume,
        loc: &ProviderLocation,
        portals: Vec<String>,
        multipath: bool,
        chap: Option<Chap>,
    ) -> ConnectionInfo {
        let multi = multipath || portals.len() > 1;
        let n = portals.len();
        ConnectionInfo {
            driver_volume_type: cfg.target_protocol.clone(),
            data: IscsiData {
                target_discovered: false,
                target_iqn: loc.iqn.clone(),
                target_portal: portals[0].clone(),
                target_lun: loc.lun,
                target_iqns: multi.then(|| vec![loc.iqn.clone(); n]),
                target_luns: multi.then(|| vec![loc.lun; n]),
                target_portals: multi.then_some(portals),
                volume_id: vol.id.clone(),
                discard: cfg.report_discard_supported,
                encrypted: false,
                auth_method: chap.as_ref().map(|_| "CHAP".to_owned()),
                auth_username: chap.as_ref().map(|c| c.username.clone()),
                auth_password: chap.map(|c| c.secret),
            },
        }
    }
}

/// Configuration shared by the target helpers (Cinder's option names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// `target_prefix`, default `iqn.2010-10.org.openstack:`.
    pub target_prefix: String,
    /// `target_ip_address`: the primary portal address.
    pub target_ip_address: String,
    /// `target_port`, default 3260.
    pub target_port: u16,
    /// `target_secondary_ip_addresses`: extra portals (same port).
    pub target_secondary_ip_addresses: Vec<String>,
    /// `volumes_dir`: per-volume tgt config files and the helper's persistent state.
    pub volumes_dir: PathBuf,
    /// `iscsi_write_cache`: tgt `write-cache on|off`.
    pub iscsi_write_cache: bool,
    /// Generate and require CHAP credentials for every export (Cinder always does).
    pub use_chap: bool,
    /// Private tgtd control port (`tgtadm -C N`, `tgt-admin -C N`); `None` = tgtd's default.
    pub control_port: Option<u32>,
    /// `target_protocol`: `iscsi` (or `iser`); the tgt `driver` line and `driver_volume_type`.
    pub target_protocol: String,
    /// `iscsi_target_flags`: tgt `bsoflags` (`sync`, `direct` or `sync:direct`); empty = none.
    pub iscsi_target_flags: String,
    /// `report_discard_supported`: the `discard` key of connection_info.
    pub report_discard_supported: bool,
    /// Upper bound for each tgt/LIO command.
    pub command_timeout: Duration,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            target_prefix: iqn::DEFAULT_TARGET_PREFIX.to_owned(),
            target_ip_address: "127.0.0.1".to_owned(),
            target_port: 3260,
            target_secondary_ip_addresses: Vec::new(),
            volumes_dir: PathBuf::from("/var/lib/ember/volumes"),
            iscsi_write_cache: true,
            use_chap: true,
            control_port: None,
            target_protocol: "iscsi".to_owned(),
            iscsi_target_flags: String::new(),
            report_discard_supported: false,
            command_timeout: Duration::from_secs(30),
        }
    }
}

impl TargetConfig {
    /// The portals (`ip:port`, IPv6 bracketed) in order: primary first, then the secondaries.
    pub fn portals(&self) -> Vec<String> {
        std::iter::once(&self.target_ip_address)
            .chain(&self.target_secondary_ip_addresses)
            .map(|ip| format_portal(ip, self.target_port))
            .collect()
    }
}

/// `ip:port`, with IPv6 addresses bracketed (Cinder's sanitize_host).
pub fn format_portal(ip: &str, port: u16) -> String {
    if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// A parsed `provider_location`: `<portal>[;<portal>...],<tid> <iqn> <lun>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderLocation {
    pub portals: Vec<String>,
    pub tid: u32,
    pub iqn: String,
    pub lun: u32,
}

impl fmt::Display for ProviderLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{} {} {}",
            self.portals.join(";"),
            self.tid,
            self.iqn,
            self.lun
        )
    }
}

/// Parses Cinder's `provider_location` (`<ip>:<port>[;<ip2>:<port>],<tid> <iqn> <lun>`); the IQN
/// is validated.
pub fn parse_provider_location(s: &str) -> Result<ProviderLocation> {
    let bad = |reason: &'static str| TargetError::ProviderLocation {
        location: s.to_owned(),
        reason,
    };
    let fields: Vec<&str> = s.split_whitespace().collect();
    let [head, iqn_str, lun_str] = fields[..] else {
        return Err(bad("expected `<portals>,<tid> <iqn> <lun>`"));
    };
    let (portals_str, tid_str) = head
        .rsplit_once(',')
        .ok_or(bad("no `,<tid>` after the portals"))?;
    let portals: Vec<String> = portals_str.split(';').map(str::to_owned).collect();
    for p in &portals {
        validate_portal(p).map_err(|()| bad("malformed portal (expected ip:port)"))?;
    }
    let tid = tid_str
        .parse::<u32>()
        .map_err(|_| bad("target id is not a number"))?;
    let lun = lun_str
        .parse::<u32>()
        .map_err(|_| bad("LUN is not a number"))?;
    iqn::validate_iqn(iqn_str)?;
    Ok(ProviderLocation {
        portals,
        tid,
        iqn: iqn_str.to_owned(),
        lun,
    })
}

fn validate_portal(p: &str) -> std::result::Result<(), ()> {
    let (host, port) = p.rsplit_once(':').ok_or(())?;
    port.parse::<u16>().map_err(|_| ())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

/// Parses Cinder's `provider_auth` (`CHAP <user> <secret>`); empty means no auth. The error never
/// contains the input (it holds a secret).
pub fn parse_provider_auth(s: &str) -> Result<Option<Chap>> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    match fields[..] {
        [] => Ok(None),
        ["CHAP", user, secret] => Ok(Some(Chap::new(user, Secret::new(secret))?)),
        [method, _, _] if method != "CHAP" => Err(TargetError::ProviderAuth {
            reason: "auth method is not CHAP",
        }),
        _ => Err(TargetError::ProviderAuth {
            reason: "expected `CHAP <user> <secret>`",
        }),
    }
}
