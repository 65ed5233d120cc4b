//! ember-drivers: Cinder-shaped volume drivers (file backend, LVM backend) on the Ember engine.
//!
//! ```text
//! CLI / Cinder shim -> VolumeDriver (this crate) -> names validated -> backend metadata (file JSON, lvm2)
//!                                                 -> data movement: ember_engine copy / wipe (data.rs)
//!                                                 -> exports: ember_target::TargetHelper
//! ```
//!
//! Layers, each using only those below it:
//!
//! ```text
//! lib.rs                VolumeDriver, driver_for
//! file.rs, lvm/         backends: where the bytes live; create, snapshot, clone, delete, extend,
//!                       revert, manage, stats, setup and crash recovery
//! backend.rs            shared by the backends: per-object locks (one sorted order), JSON record
//!                       folders, attachment lists, exporter lookup, volume_clear size, argument
//!                       checks, and the data-path and export calls written once over `Backend`
//! local.rs, migrate.rs  over any VolumeDriver: loop-device attachments, moves between backends
//! image.rs, export.rs   images <-> layouts; exports through ember_target
//! data.rs               layouts through the engine: copy, resumable copy, wipe, reflink
//! fsutil.rs             flocks, atomic JSON, fsync, sparse files, hostname
//! ```
//!
//! Leaves used everywhere: [`types`] (volumes, snapshots, model updates), [`error`] (one enum,
//! Cinder's categories), [`stats`] (Cinder's stats dict), [`config`] (TOML), [`names`]
//! (allow-list validation), [`runner`] (the one command wrapper). The backends: [`file`](mod@file)
//! (sparse files in a folder), [`lvm`] (lvm2). A new backend implements the crate-private
//! `backend::Backend` trait and the [`VolumeDriver`] methods that differ, and expands
//! `backend::shared_driver_methods!()` for the rest.

pub(crate) mod backend;
pub mod config;
pub mod data;
pub mod error;
pub mod export;
pub mod file;
pub mod fsutil;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fuzz_harness;
pub mod image;
pub mod local;
pub mod lvm;
pub mod migrate;
pub mod names;
pub mod runner;
pub mod stats;
pub mod types;

pub use config::{BackendConfig, Config, DriverKind, LvmType, VolumeClear};
pub use data::DataLayout;
pub use error::{Category, DriverError, Result};
pub use stats::{PoolStats, VolumeStats};
pub use types::{
    Attachment, CloneImageResult, ExistingRef, ImageFile, ImageMeta, ManageableVolume, ModelUpdate,
    Snapshot, Volume,
};

pub use ember_target::{ConnectionInfo, Connector};

/// A volume driver, with Cinder's `VolumeDriverCore` meaning for every method.
///
/// The caller passes the volume/snapshot objects (Cinder keeps them in its database); Ember's CLI
/// has no database, so [`VolumeDriver::list_volumes`] and [`VolumeDriver::list_snapshots`] read
/// them back from the backend. Every method validates names and sizes before its first command.
pub trait VolumeDriver: Send + Sync {
    /// The backend's name.
    fn backend_name(&self) -> &str;

    /// Prepares the backend (creates folders, loads state, finishes interrupted operations).
    fn do_setup(&self) -> Result<()>;

    /// Checks that the backend can work: tools present, VG/folder exists and is usable.
    fn check_for_setup_error(&self) -> Result<()>;

    /// Cinder's stats dict; `refresh` re-reads capacities.
    fn get_volume_stats(&self, refresh: bool) -> Result<VolumeStats>;

    /// Creates an empty (all-zero) volume of `vol.size` GiB.
    fn create_volume(&self, vol: &Volume) -> Result<Option<ModelUpdate>>;

    /// Deletes a volume (wiping it as configured). Absent: success. Has snapshots: VolumeIsBusy.
    fn delete_volume(&self, vol: &Volume) -> Result<()>;

    /// Snapshots `snap.volume_name`.
    fn create_snapshot(&self, snap: &Snapshot) -> Result<Option<ModelUpdate>>;

    /// Deletes a snapshot. Absent: success.
    fn delete_snapshot(&self, snap: &Snapshot) -> Result<()>;

    /// Creates `vol` (size >= the snapshot's) with the snapshot's data.
    fn create_volume_from_snapshot(
        &self,
        vol: &Volume,
        snap: &Snapshot,
    ) -> Result<Option<ModelUpdate>>;

    /// Creates `vol` (size >= the source's) with `src`'s data.
    fn create_cloned_volume(&self, vol: &Volume, src: &Volume) -> Result<Option<ModelUpdate>>;

    /// Grows `vol` to `new_size` GiB (never shrinks).
    fn extend_volume(&self, vol: &Volume, new_size: u64) -> Result<()>;

    /// Makes `vol`'s data equal to the snapshot's again.
    fn revert_to_snapshot(&self, vol: &Volume, snap: &Snapshot) -> Result<()>;

    /// Writes an image (raw today) into the volume.
    fn copy_image_to_volume(&self, vol: &Volume, image: &ImageFile) -> Result<()>;

    /// Writes the volume's data out as an image (raw today).
    fn copy_volume_to_image(&self, vol: &Volume, image: &ImageFile) -> Result<()>;

    /// Creates the volume from an image efficiently, or says "did not clone, fall back".
    fn clone_image(&self, vol: &Volume, image: &ImageFile) -> Result<CloneImageResult>;

    /// Takes over a backend object named by `existing_ref` as `vol` (renaming it).
    fn manage_existing(
        &self,
        vol: &Volume,
        existing_ref: &ExistingRef,
    ) -> Result<Option<ModelUpdate>>;

    /// Size in GiB (rounded up) of the object `existing_ref` names.
    fn manage_existing_get_size(&self, vol: &Volume, existing_ref: &ExistingRef) -> Result<u64>;

    /// Backend objects that could be managed.
    fn get_manageable_volumes(&self) -> Result<Vec<ManageableVolume>>;

    /// Stops managing `vol` (the backend object stays).
    fn unmanage(&self, vol: &Volume) -> Result<()>;

    /// Exports the volume; returns provider_location/provider_auth to persist.
    fn create_export(&self, vol: &Volume) -> Result<Option<ModelUpdate>>;

    /// Re-creates a lost export from the stored model (service start).
    fn ensure_export(&self, vol: &Volume) -> Result<()>;

    /// Removes the export.
    fn remove_export(&self, vol: &Volume) -> Result<()>;

    /// Grants a connector access; returns Cinder's connection_info.
    fn initialize_connection(&self, vol: &Volume, connector: &Connector) -> Result<ConnectionInfo>;

    /// Revokes a connector's access.
    fn terminate_connection(&self, vol: &Volume, connector: &Connector) -> Result<()>;

    /// Records an attachment (Cinder's callback after attach).
    fn attach_volume(&self, vol: &Volume, attachment: &Attachment) -> Result<()>;

    /// Clears an attachment.
    fn detach_volume(&self, vol: &Volume, attachment: &Attachment) -> Result<()>;

    /// The volumes this backend holds.
    fn list_volumes(&self) -> Result<Vec<Volume>>;

    /// The snapshots this backend holds.
    fn list_snapshots(&self) -> Result<Vec<Snapshot>>;

    /// Where `vol`'s bytes are: what local attachments ([`local`]) and migrations between
    /// backends ([`migrate`]) read and write.
    fn data_layout(&self, vol: &Volume) -> Result<DataLayout>;
}

/// Builds the driver a backend section asks for; with a `[backend.target]` table its exports
/// go through tgt (`ember_target::TgtAdm`).
pub fn driver_for(cfg: &BackendConfig) -> Result<Box<dyn VolumeDriver>> {
    cfg.validate()?;
    let exporter = match cfg.target_config()? {
        Some(t) => Some(std::sync::Arc::new(export::Exporter::new(
            std::sync::Arc::new(ember_target::TgtAdm::new(t)?),
        ))),
        None => None,
    };
    Ok(match cfg.driver {
        DriverKind::File => {
            let mut d = file::FileDriver::new(cfg.clone())?;
            if let Some(x) = exporter {
                d = d.with_exporter(x);
            }
            Box::new(d)
        }
        DriverKind::Lvm => {
            let mut d = lvm::LvmDriver::new(cfg.clone())?;
            if let Some(x) = exporter {
                d = d.with_exporter(x);
            }
            Box::new(d)
        }
    })
}
