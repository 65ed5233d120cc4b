//! Typed volumes, snapshots, model updates and manage references (serde, Cinder's key names).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DriverError, Result};
use crate::names;

/// A volume as Cinder passes it to a driver (the fields drivers use). `size` is in GiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The volume's UUID.
    pub id: Uuid,
    /// `volume-<id>`: the backend object's name.
    pub name: String,
    /// Size in whole GiB.
    pub size: u64,
    /// The user's name for the volume, if any (metadata only; never reaches a command).
    #[serde(default)]
    pub display_name: Option<String>,
    /// Export location (Cinder's `provider_location`).
    #[serde(default)]
    pub provider_location: Option<String>,
    /// Export credentials (Cinder's `provider_auth`, `CHAP <user> <pass>`).
    #[serde(default)]
    pub provider_auth: Option<String>,
    /// May be attached to more than one host.
    #[serde(default)]
    pub multiattach: bool,
}

impl Volume {
    /// A new volume with a fresh UUID; size and display name validated.
    pub fn new(size_gb: u64, display_name: Option<&str>) -> Result<Self> {
        Self::with_id(Uuid::new_v4(), size_gb, display_name)
    }

    /// A volume with a given id; size and display name validated.
    pub fn with_id(id: Uuid, size_gb: u64, display_name: Option<&str>) -> Result<Self> {
        names::check_size_gb(size_gb)?;
        if let Some(n) = display_name {
            names::check_display_name(n)?;
        }
        Ok(Volume {
            id,
            name: names::volume_name(&id),
            size: size_gb,
            display_name: display_name.map(str::to_owned),
            provider_location: None,
            provider_auth: None,
            multiattach: false,
        })
    }

    /// Checks every field a backend uses: the name matches `volume-<id>`, the size is sane and
    /// the display name is allow-listed. Drivers call this before their first command.
    pub fn validate(&self) -> Result<()> {
        let id = names::check_volume_name(&self.name)?;
        if id != self.id {
            return Err(DriverError::invalid(format!(
                "volume name {} does not match its id {}",
                self.name, self.id
            )));
        }
        names::check_size_gb(self.size)?;
        if let Some(n) = &self.display_name {
            names::check_display_name(n)?;
        }
        Ok(())
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size * names::GIB
    }

    /// The display name if set, else the volume name.
    pub fn label(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }
}

/// A snapshot as Cinder passes it to a driver. `volume_size` is the origin's size in GiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The snapshot's UUID.
    pub id: Uuid,
    /// `snapshot-<id>`.
    pub name: String,
    /// The origin volume's UUID.
    pub volume_id: Uuid,
    /// The origin volume's name, `volume-<volume_id>`.
    pub volume_name: String,
    /// The origin's size when the snapshot was taken, in GiB.
    pub volume_size: u64,
    /// The user's name for the snapshot, if any.
    #[serde(default)]
    pub display_name: Option<String>,
}

impl Snapshot {
    /// A new snapshot of `vol` with a fresh UUID.
    pub fn new(vol: &Volume, display_name: Option<&str>) -> Result<Self> {
        Self::with_id(Uuid::new_v4(), vol, display_name)
    }

    /// A snapshot of `vol` with a given id (Cinder's).
    pub fn with_id(id: Uuid, vol: &Volume, display_name: Option<&str>) -> Result<Self> {
        if let Some(n) = display_name {
            names::check_display_name(n)?;
        }
        Ok(Snapshot {
            id,
            name: names::snapshot_name(&id),
            volume_id: vol.id,
            volume_name: vol.name.clone(),
            volume_size: vol.size,
            display_name: display_name.map(str::to_owned),
        })
    }

    /// Checks names and sizes, as [`Volume::validate`].
    pub fn validate(&self) -> Result<()> {
        let id = names::check_snapshot_name(&self.name)?;
        if id != self.id {
            return Err(DriverError::invalid(format!(
                "snapshot name {} does not match its id {}",
                self.name, self.id
            )));
        }
        let vid = names::check_volume_name(&self.volume_name)?;
        if vid != self.volume_id {
            return Err(DriverError::invalid(format!(
                "snapshot's volume name {} does not match volume id {}",
                self.volume_name, self.volume_id
            )));
        }
        names::check_size_gb(self.volume_size)?;
        if let Some(n) = &self.display_name {
            names::check_display_name(n)?;
        }
        Ok(())
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.volume_size * names::GIB
    }

    /// The display name if set, else the snapshot name.
    pub fn label(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }
}

/// The model update a driver returns, as Cinder's dict `{"provider_location": .., "provider_auth": ..}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUpdate {
    /// New `provider_location` (None: unchanged / cleared, as Cinder reads it).
    pub provider_location: Option<String>,
    /// New `provider_auth`.
    pub provider_auth: Option<String>,
}

/// A `manage_existing` reference: Cinder's `{"source-name": "<lv or file>"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExistingRef {
    /// The backend object's name.
    #[serde(rename = "source-name", default)]
    pub source_name: Option<String>,
}

impl ExistingRef {
    /// `{"source-name": name}`.
    pub fn source_name(name: impl Into<String>) -> Self {
        ExistingRef {
            source_name: Some(name.into()),
        }
    }
}

/// One candidate of `get_manageable_volumes`, with Cinder's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManageableVolume {
    /// `{"source-name": ..}` to pass to `manage_existing`.
    pub reference: ExistingRef,
    /// Size in GiB, rounded up.
    pub size: u64,
    /// Whether it can be managed.
    pub safe_to_manage: bool,
    /// Why not ("already managed", "volume in use", ...).
    pub reason_not_safe: Option<String>,
    /// The managing volume's id when already managed.
    pub cinder_id: Option<Uuid>,
    /// Backend details.
    pub extra_info: Option<String>,
}

/// Image metadata (Glance's keys the drivers use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    /// `raw`, `qcow2`, ...
    pub disk_format: String,
    /// `bare` (others are refused).
    #[serde(default = "bare")]
    pub container_format: String,
}

fn bare() -> String {
    "bare".into()
}

impl ImageMeta {
    /// A raw, bare image.
    pub fn raw() -> Self {
        ImageMeta {
            disk_format: "raw".into(),
            container_format: "bare".into(),
        }
    }
}

/// An image on the local filesystem (Ember has no Glance: images are files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    /// Where the image is (or goes).
    pub path: PathBuf,
    /// Its format.
    pub meta: ImageMeta,
}

/// An attachment as recorded by `attach_volume`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The instance the volume is attached to, if any.
    pub instance_uuid: Option<String>,
    /// The host it is attached to.
    pub host_name: Option<String>,
    /// The mount point on that host.
    pub mountpoint: Option<String>,
}

/// What `clone_image` did: Cinder's `(model_update, cloned)` pair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CloneImageResult {
    /// Model update when cloned.
    pub model_update: Option<ModelUpdate>,
    /// False: "did not clone, fall back to copy_image_to_volume".
    pub cloned: bool,
}
