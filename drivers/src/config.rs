//! The TOML configuration: one `[[backend]]` section per backend, validated before use.
//!
//! ```toml
//! default_backend = "local"
//!
//! [[backend]]
//! name = "local"
//! driver = "file"                       # file | lvm
//! path = "/var/lib/ember/volumes"       # file: the folder holding volumes
//! volume_clear = "zero"                 # zero | none: wipe on delete
//! volume_clear_size = 0                 # MiB wiped from the start, 0 = all (max 1024)
//!
//! [[backend]]
//! name = "lvm"
//! driver = "lvm"
//! volume_group = "cinder-volumes"
//! lvm_type = "default"                  # default | thin | auto
//! lvm_conf_file = "/etc/ember/lvm/lvm.conf"   # optional: LVM_SYSTEM_DIR = its folder
//! volume_copy_bps_limit = 0             # bytes/s for copies, 0 = unlimited
//! reserved_percentage = 0
//! max_over_subscription_ratio = "20.0"
//! [backend.target]                      # iSCSI export settings (ember-target's TargetConfig)
//! target_ip_address = "127.0.0.1"
//! ```
//!
//! Default location: `$EMBER_CONFIG`, else `$XDG_CONFIG_HOME/ember/config.toml`, else
//! `~/.config/ember/config.toml`. With no file, one file backend named `default` lives in
//! `$XDG_DATA_HOME/ember/volumes` (else `~/.local/share/ember/volumes`): no root, no config.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DriverError, Result};
use crate::names;

/// Which driver a backend uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// Sparse raw files in a folder.
    File,
    /// lvm2 logical volumes in a volume group.
    Lvm,
}

/// Cinder's `lvm_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LvmType {
    /// Thick LVs.
    #[default]
    Default,
    /// Thin LVs in a thin pool.
    Thin,
    /// Thin when a thin pool exists or the VG is empty and thin works, else default.
    Auto,
}

impl LvmType {
    /// The string Cinder uses in `location_info`.
    pub fn as_str(self) -> &'static str {
        match self {
            LvmType::Default => "default",
            LvmType::Thin => "thin",
            LvmType::Auto => "auto",
        }
    }
}

/// Cinder's `volume_clear`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VolumeClear {
    /// Zero the volume (or its first `volume_clear_size` MiB) before removing it.
    #[default]
    Zero,
    /// No wipe.
    None,
}

/// One backend section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The backend's name (`volume_backend_name`).
    pub name: String,
    /// `file` or `lvm`.
    pub driver: DriverKind,
    /// File backend: the folder of volumes.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// LVM backend: the volume group.
    #[serde(default)]
    pub volume_group: Option<String>,
    /// LVM backend: thick or thin.
    #[serde(default)]
    pub lvm_type: LvmType,
    /// LVM backend: thin pool name (default `<vg>-pool`, as Cinder).
    #[serde(default)]
    pub thin_pool: Option<String>,
    /// LVM backend: an lvm.conf whose folder becomes `LVM_SYSTEM_DIR` (ignored if missing).
    #[serde(default)]
    pub lvm_conf_file: Option<PathBuf>,
    /// Wipe on delete.
    #[serde(default)]
    pub volume_clear: VolumeClear,
    /// MiB to wipe from the start of the volume; 0 = all. At most 1024.
    #[serde(default)]
    pub volume_clear_size: u64,
    /// Copy bandwidth limit in bytes per second; 0 = none.
    #[serde(default)]
    pub volume_copy_bps_limit: u64,
    /// Percentage of capacity kept free (0..=100).
    #[serde(default)]
    pub reserved_percentage: u32,
    /// `"auto"` or a ratio >= 1.0, as a string (Cinder's type).
    #[serde(default = "default_ratio")]
    pub max_over_subscription_ratio: String,
    /// Scheduler filter function.
    #[serde(default)]
    pub filter_function: Option<String>,
    /// Scheduler goodness function.
    #[serde(default)]
    pub goodness_function: Option<String>,
    /// iSCSI target settings, passed to ember-target.
    #[serde(default)]
    pub target: Option<toml::Table>,
}

fn default_ratio() -> String {
    "20.0".into()
}

impl BackendConfig {
    /// A file backend at `path` with defaults.
    pub fn file(name: &str, path: impl Into<PathBuf>) -> Self {
        BackendConfig {
            name: name.into(),
            driver: DriverKind::File,
            path: Some(path.into()),
            volume_group: None,
            lvm_type: LvmType::Default,
            thin_pool: None,
            lvm_conf_file: None,
            volume_clear: VolumeClear::Zero,
            volume_clear_size: 0,
            volume_copy_bps_limit: 0,
            reserved_percentage: 0,
            max_over_subscription_ratio: default_ratio(),
            filter_function: None,
            goodness_function: None,
            target: None,
        }
    }

    /// An LVM backend on `vg` with defaults.
    pub fn lvm(name: &str, vg: &str) -> Self {
        BackendConfig {
            driver: DriverKind::Lvm,
            path: None,
            volume_group: Some(vg.into()),
            ..Self::file(name, "")
        }
    }

    /// The `[backend.target]` table as ember-target's [`TargetConfig`](ember_target::TargetConfig)
    /// (Cinder's option names; unknown keys refused). `None` when the backend has no target.
    /// `volumes_dir` defaults to `<path or /var/lib/ember/<name>>/targets`.
    pub fn target_config(&self) -> Result<Option<ember_target::TargetConfig>> {
        let Some(t) = &self.target else {
            return Ok(None);
        };
        let bad = |k: &str, why: &str| {
            DriverError::InvalidConfiguration(format!("backend {:?}: target.{k}: {why}", self.name))
        };
        let mut c = ember_target::TargetConfig {
            volumes_dir: self
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/lib/ember").join(&self.name))
                .join("targets"),
            ..Default::default()
        };
        let string = |k: &str, v: &toml::Value| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(k, "must be a string"))
        };
        for (k, v) in t {
            match k.as_str() {
                "target_prefix" => c.target_prefix = string(k, v)?,
                "target_ip_address" => c.target_ip_address = string(k, v)?,
                "target_port" => {
                    c.target_port = v
                        .as_integer()
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad(k, "must be a port number"))?
                }
                "target_secondary_ip_addresses" => {
                    c.target_secondary_ip_addresses = v
                        .as_array()
                        .ok_or_else(|| bad(k, "must be a list of addresses"))?
                        .iter()
                        .map(|x| string(k, x))
                        .collect::<Result<_>>()?
                }
                "volumes_dir" => c.volumes_dir = PathBuf::from(string(k, v)?),
                "iscsi_write_cache" => {
                    c.iscsi_write_cache = match v {
                        toml::Value::Boolean(b) => *b,
                        toml::Value::String(s) if s == "on" => true,
                        toml::Value::String(s) if s == "off" => false,
                        _ => return Err(bad(k, "must be \"on\" or \"off\"")),
                    }
                }
                "use_chap" => {
                    c.use_chap = v.as_bool().ok_or_else(|| bad(k, "must be a boolean"))?
                }
                "control_port" => {
                    c.control_port = Some(
                        v.as_integer()
                            .and_then(|p| u32::try_from(p).ok())
                            .ok_or_else(|| bad(k, "must be a number"))?,
                    )
                }
                "target_protocol" => c.target_protocol = string(k, v)?,
                "iscsi_target_flags" => c.iscsi_target_flags = string(k, v)?,
                "report_discard_supported" => {
                    c.report_discard_supported =
                        v.as_bool().ok_or_else(|| bad(k, "must be a boolean"))?
                }
                _ => return Err(bad(k, "unknown key")),
            }
        }
        Ok(Some(c))
    }

    /// Checks every field; the error names the backend and the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(DriverError::InvalidConfiguration(format!(
                "backend {:?}: {msg}",
                self.name
            )))
        };
        if let Err(e) = names::check_lvm_name("backend", &self.name) {
            return bad(e.to_string());
        }
        match self.driver {
            DriverKind::File => match &self.path {
                None => return bad("driver = \"file\" needs `path`".into()),
                Some(p) if p.as_os_str().is_empty() => return bad("`path` is empty".into()),
                Some(p) if !p.is_absolute() => {
                    return bad(format!("`path` {} must be absolute", p.display()))
                }
                _ => {}
            },
            DriverKind::Lvm if self.volume_group.is_none() => {
                return bad("driver = \"lvm\" needs `volume_group`".into())
            }
            DriverKind::Lvm => {}
        }
        // LVM names are checked whatever the driver: a file backend must not carry an
        // unchecked name either (found by the config_parse fuzz target).
        for (what, name) in [
            ("volume_group", &self.volume_group),
            ("thin_pool", &self.thin_pool),
        ] {
            if let Some(n) = name {
                if let Err(e) = names::check_lvm_name(what, n) {
                    return bad(e.to_string());
                }
            }
        }
        if self.volume_clear_size > 1024 {
            return bad(format!(
                "volume_clear_size {} MiB is over the maximum 1024",
                self.volume_clear_size
            ));
        }
        if self.reserved_percentage > 100 {
            return bad(format!(
                "reserved_percentage {} is over 100",
                self.reserved_percentage
            ));
        }
        self.target_config()?;
        let r = &self.max_over_subscription_ratio;
        if r != "auto" {
            match r.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 1.0 => {}
                _ => {
                    return bad(format!(
                        "max_over_subscription_ratio {r:?} must be \"auto\" or a number >= 1.0"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The backend used when none is named.
    #[serde(default)]
    pub default_backend: Option<String>,
    /// The backends.
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

impl Config {
    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| DriverError::InvalidConfiguration(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| DriverError::io("read config", path, e))?;
        Self::parse(&text).map_err(|e| match e {
            DriverError::InvalidConfiguration(m) => {
                DriverError::InvalidConfiguration(format!("{}: {m}", path.display()))
            }
            other => other,
        })
    }

    /// The embedded default: one file backend `default` in the user's data folder.
    pub fn embedded_default() -> Self {
        Config {
            default_backend: Some("default".into()),
            backends: vec![BackendConfig::file("default", default_data_dir())],
        }
    }

    /// Loads `explicit` if given, else the default location if it exists, else the embedded default.
    pub fn load_or_default(explicit: Option<&Path>) -> Result<Self> {
        if let Some(p) = explicit {
            return Self::load(p);
        }
        match default_config_path() {
            Some(p) if p.exists() => Self::load(&p),
            _ => Ok(Self::embedded_default()),
        }
    }

    /// Checks every backend and that names are unique and the default exists.
    pub fn validate(&self) -> Result<()> {
        let mut seen = HashSet::new();
        for b in &self.backends {
            b.validate()?;
            if !seen.insert(b.name.as_str()) {
                return Err(DriverError::InvalidConfiguration(format!(
                    "backend name {:?} appears twice",
                    b.name
                )));
            }
        }
        if let Some(d) = &self.default_backend {
            if !seen.contains(d.as_str()) {
                return Err(DriverError::InvalidConfiguration(format!(
                    "default_backend {d:?} is not a configured backend"
                )));
            }
        }
        Ok(())
    }

    /// The named backend, or the default (or the only) one.
    pub fn backend(&self, name: Option<&str>) -> Result<&BackendConfig> {
        let want = name.or(self.default_backend.as_deref());
        match want {
            Some(n) => self.backends.iter().find(|b| b.name == n).ok_or_else(|| {
                DriverError::InvalidConfiguration(format!("no backend named {n:?}"))
            }),
            None if self.backends.len() == 1 => Ok(&self.backends[0]),
            None => Err(DriverError::InvalidConfiguration(
                "several backends and no default_backend: name one with --backend".into(),
            )),
        }
    }
}

/// `$EMBER_CONFIG`, else `$XDG_CONFIG_HOME/ember/config.toml`, else `~/.config/ember/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EMBER_CONFIG") {
        return Some(PathBuf::from(p));
    }
    xdg("XDG_CONFIG_HOME", ".config").map(|d| d.join("ember/config.toml"))
}

/// `$XDG_DATA_HOME/ember/volumes`, else `~/.local/share/ember/volumes`, else `./ember-volumes`.
pub fn default_data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share")
        .map(|d| d.join("ember/volumes"))
        .unwrap_or_else(|| {
            std::env::current_dir()
                .unwrap_or_else(|_| PathBuf::from("/tmp"))
                .join("ember-volumes")
        })
}

fn xdg(var: &str, home_rel: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(v) if Path::new(&v).is_absolute() => Some(PathBuf::from(v)),
        _ => std::env::var_os("HOME")
            .filter(|h| Path::new(h).is_absolute())
            .map(|h| PathBuf::from(h).join(home_rel)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let c = Config::parse(
            r#"
default_backend = "lvm"
[[backend]]
name = "local"
driver = "file"
path = "/srv/v"
[[backend]]
name = "lvm"
driver = "lvm"
volume_group = "cinder-volumes"
lvm_type = "thin"
volume_clear = "none"
[backend.target]
target_ip_address = "127.0.0.1"
"#,
        )
        .unwrap();
        assert_eq!(c.backend(None).unwrap().lvm_type, LvmType::Thin);
        assert_eq!(c.backend(Some("local")).unwrap().driver, DriverKind::File);
        assert!(c.backend(None).unwrap().target.is_some());
    }

    #[test]
    fn refuses_bad_values_with_a_clear_message() {
        for (text, needle) in [
            ("[[backend]]\nname='a'\ndriver='file'\n", "needs `path`"),
            ("[[backend]]\nname='a'\ndriver='lvm'\n", "needs `volume_group`"),
            (
                "[[backend]]\nname='a'\ndriver='lvm'\nvolume_group='-x'\n",
                "starts with '-'",
            ),
            (
                "[[backend]]\nname='a'\ndriver='file'\npath='/x'\nvolume_clear='shred'\n",
                "volume_clear",
            ),
            (
                "[[backend]]\nname='a'\ndriver='file'\npath='/x'\nvolume_clear_size=2048\n",
                "1024",
            ),
            (
                "[[backend]]\nname='a'\ndriver='file'\npath='/x'\nmax_over_subscription_ratio='0.5'\n",
                "max_over_subscription_ratio",
            ),
            ("[[backend]]\nname='a'\ndriver='file'\npath='rel'\n", "absolute"),
            (
                "[[backend]]\nname='a'\ndriver='file'\npath='/x'\nvolume_group='v\u{e9}'\n",
                "volume_group name",
            ),
            (
                "[[backend]]\nname='a'\ndriver='file'\npath='/x'\nthin_pool='a;b'\n",
                "thin_pool name",
            ),
            ("[[backend]]\nname='a'\ndriver='file'\npath='/x'\nbogus=1\n", "bogus"),
            ("default_backend='z'\n", "not a configured backend"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
