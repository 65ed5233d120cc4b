//! What every backend shares, so a backend module holds only what really differs (where the
//! bytes live and how objects are created, snapshotted and removed).
//!
//! ```text
//! VolumeDriver (lib.rs)
//!   file.rs, lvm/      the backend: object store (JSON records / lvm2), create/snapshot/delete
//!   backend.rs         shared layer: per-object locks, JSON record folders, attachment lists,
//!                      exporter lookup, volume clearing size, and the data-path and export
//!                      calls written once over the [`Backend`] trait
//!   image.rs, data.rs  every byte through the engine (layouts, copies, wipes, images)
//!   fsutil.rs          flocks, atomic JSON, fsync, sparse files
//! ```
//!
//! Locking: one flock per object name in the backend's `locks/` folder. Operations naming
//! several objects take them in one global order (sorted names, each once), so two operations
//! naming the same objects in different roles cannot deadlock. Recovery after a crash touches
//! only objects whose lock is free ([`ObjectLocks::try_lock`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{BackendConfig, VolumeClear};
use crate::data::{CopyMode, DataLayout, Layout, Span};
use crate::error::{DriverError, Result};
use crate::export::Exporter;
use crate::fsutil::{lock_path, read_json, remove_if_exists, sync_dir, write_json_atomic, Lock};
use crate::names;
use crate::types::{Attachment, ExistingRef, ImageFile, ModelUpdate, Snapshot, Volume};
use crate::{ConnectionInfo, Connector};

/// A held per-object lock. With a record folder ([`ObjectLocks::new`] `records`), the lock file
/// is removed on release when the object has no record (deleted, rolled back or never created),
/// so `locks/` holds only live objects instead of one file per object ever named. Safe because
/// every record write for a name happens under that name's lock, and
/// [`lock_path`](crate::fsutil) checks after locking that the file it locked is still the one
/// at the path (a waiter on a removed file retries on the new one).
pub(crate) struct ObjectLock {
    path: PathBuf,
    record: Option<PathBuf>,
    _lock: Lock,
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        // Runs before the fields drop: the flock is still held here.
        let Some(record) = &self.record else { return };
        if matches!(fs::symlink_metadata(record), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The per-object flocks of a backend: `<dir>/<name>.lock`; they serialize operations on one
/// object across threads and processes, operations on different objects run in parallel.
pub(crate) struct ObjectLocks {
    dir: PathBuf,
    records: Option<RecordDir>,
}

impl ObjectLocks {
    /// Locks in `dir`; with `records`, a lock file whose object has no record there is removed
    /// on release.
    pub(crate) fn new(dir: PathBuf, records: Option<RecordDir>) -> Self {
        ObjectLocks { dir, records }
    }

    /// The folder of the lock files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for `name`'s lock.
    pub(crate) fn lock(&self, name: &str) -> Result<ObjectLock> {
        Ok(self.take(name, false)?.expect("blocking lock"))
    }

    /// `name`'s lock, or `None` when another operation holds it.
    pub(crate) fn try_lock(&self, name: &str) -> Result<Option<ObjectLock>> {
        self.take(name, true)
    }

    fn take(&self, name: &str, nonblock: bool) -> Result<Option<ObjectLock>> {
        let path = self.dir.join(format!("{name}.lock"));
        Ok(lock_path(&path, nonblock)?.map(|l| ObjectLock {
            path,
            record: self.records.as_ref().map(|r| r.path(name)),
            _lock: l,
        }))
    }

    /// Removes the lock files of objects without a record: a process killed after removing a
    /// record but before releasing its lock leaves one, and nothing else would ever lock that
    /// name again. A lock another process holds is left alone (its object may be on its way
    /// in); without a record folder this does nothing.
    pub(crate) fn remove_orphans(&self) -> Result<()> {
        let Some(records) = &self.records else {
            return Ok(());
        };
        for n in entry_names(&self.dir)? {
            let Some(name) = n.strip_suffix(".lock") else {
                continue;
            };
            if fs::symlink_metadata(records.path(name)).is_err() {
                // Released at once: the drop removes the file, as the name has no record.
                drop(self.try_lock(name)?);
            }
        }
        Ok(())
    }

    /// Locks several objects in one global order (sorted names, each once): no deadlock between
    /// operations naming the same objects in different roles, and no self-deadlock when a
    /// caller names one object twice (e.g. a volume from a snapshot onto the snapshot's origin).
    pub(crate) fn lock_all(&self, names: &[&str]) -> Result<Vec<ObjectLock>> {
        let mut names = names.to_vec();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(|n| self.lock(n)).collect()
    }
}

/// A folder of JSON records, one `<name>.json` per object, each written atomically.
#[derive(Debug, Clone)]
pub(crate) struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    /// Records in `dir`.
    pub(crate) fn new(dir: PathBuf) -> Self {
        RecordDir { dir }
    }

    /// The folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `name`'s record file.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// `name`'s record; `None` when it has none.
    pub(crate) fn read<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>> {
        read_json(&self.path(name))
    }

    /// Writes `name`'s record atomically.
    pub(crate) fn write<T: Serialize>(&self, name: &str, rec: &T) -> Result<()> {
        write_json_atomic(&self.dir, &format!("{name}.json"), rec)
    }

    /// Removes `name`'s record (synced); absent is success.
    pub(crate) fn remove(&self, name: &str) -> Result<()> {
        let p = self.path(name);
        match fs::remove_file(&p) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DriverError::io("remove", &p, e)),
        }
    }

    /// The names with a record starting with `prefix`, sorted.
    pub(crate) fn names(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = entry_names(&self.dir)?
            .iter()
            .filter_map(|n| n.strip_suffix(".json"))
            .filter(|stem| stem.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes the temp files of record writes that never reached their rename (a crash
    /// between create and rename): they were never registered.
    pub(crate) fn remove_temp_files(&self) -> Result<()> {
        for n in entry_names(&self.dir)? {
            if n.starts_with(".tmp-") {
                let _ = remove_if_exists(&self.dir.join(n));
            }
        }
        Ok(())
    }
}

/// The names of `dir`'s entries that are UTF-8 (no object's name is anything else).
fn entry_names(dir: &Path) -> Result<Vec<String>> {
    let list = |e| DriverError::io("list", dir, e);
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(list)? {
        if let Ok(n) = e.map_err(list)?.file_name().into_string() {
            out.push(n);
        }
    }
    Ok(out)
}

/// The checks of a revert: both names valid, and `snap` a snapshot of `vol`.
pub(crate) fn check_revert(vol: &Volume, snap: &Snapshot) -> Result<()> {
    vol.validate()?;
    snap.validate()?;
    if snap.volume_id != vol.id {
        return Err(DriverError::invalid(format!(
            "snapshot {} is not a snapshot of {}",
            snap.name, vol.name
        )));
    }
    Ok(())
}

/// The checks of a clone: both names valid, and not a volume onto itself.
pub(crate) fn check_clone(vol: &Volume, src: &Volume) -> Result<()> {
    vol.validate()?;
    src.validate()?;
    if vol.id == src.id {
        return Err(DriverError::invalid(
            "a volume cannot be cloned onto itself",
        ));
    }
    Ok(())
}

/// The object a `manage_existing` reference names: `source-name`, present and a plain name.
pub(crate) fn manage_source_name(r: &ExistingRef) -> Result<&str> {
    let n =
        r.source_name
            .as_deref()
            .ok_or_else(|| DriverError::ManageExistingInvalidReference {
                reason: "missing \"source-name\"".into(),
            })?;
    names::check_lvm_name("source-name", n).map_err(|e| {
        DriverError::ManageExistingInvalidReference {
            reason: e.to_string(),
        }
    })?;
    Ok(n)
}

/// Records `attachment` in a volume's list: the same attachment again (Cinder retries,
/// os-brick reconnects) changes nothing (`false`); a second host on an `exclusive` volume (not
/// multiattach) is refused as busy.
pub(crate) fn attach(
    list: &mut Vec<Attachment>,
    attachment: &Attachment,
    name: &str,
    exclusive: bool,
) -> Result<bool> {
    if list.contains(attachment) {
        return Ok(false);
    }
    if exclusive && !list.is_empty() {
        return Err(DriverError::VolumeIsBusy {
            name: name.to_owned(),
            reason: "already attached and not multiattach".into(),
        });
    }
    list.push(attachment.clone());
    Ok(true)
}

/// Clears `attachment` from a volume's list; the empty attachment clears them all.
pub(crate) fn detach(list: &mut Vec<Attachment>, attachment: &Attachment) {
    if let Some(i) = list.iter().position(|a| a == attachment) {
        list.remove(i);
    } else if attachment == &Attachment::default() {
        list.clear();
    }
}

/// What a backend holds besides its objects: its configuration and its exports.
pub(crate) struct Common {
    pub(crate) cfg: BackendConfig,
    pub(crate) exporter: Option<Arc<Exporter>>,
}

impl Common {
    /// The configured exporter; `NotSupported` for `op` without a `[backend.target]`.
    pub(crate) fn exporter(&self, op: &'static str) -> Result<&Exporter> {
        self.exporter
            .as_deref()
            .ok_or_else(|| DriverError::NotSupported {
                op,
                reason: format!(
                    "backend {:?} has no iSCSI target configured ([backend.target])",
                    self.cfg.name
                ),
            })
    }

    /// How the engine copies onto this backend.
    pub(crate) fn copy_mode(&self, dest_zeroed: bool) -> CopyMode {
        CopyMode {
            dest_zeroed,
            bps_limit: self.cfg.volume_copy_bps_limit,
        }
    }

    /// Bytes to wipe of a `len`-byte object before it is removed, as configured
    /// (`volume_clear`, `volume_clear_size` MiB, 0 = all); `None`: no wipe.
    pub(crate) fn clear_len(&self, len: u64) -> Option<u64> {
        if self.cfg.volume_clear == VolumeClear::None || len == 0 {
            return None;
        }
        Some(match self.cfg.volume_clear_size {
            0 => len,
            mib => (mib << 20).min(len),
        })
    }
}

/// What a backend supplies for the calls written once in this module.
pub(crate) trait Backend {
    /// Configuration and exporter.
    fn common(&self) -> &Common;

    /// Fails when the backend is not set up.
    fn check_ready(&self) -> Result<()>;

    /// Waits for `name`'s object lock.
    fn lock_volume(&self, name: &str) -> Result<ObjectLock>;

    /// The volume as the backend knows it and where its bytes are (NotFound when it has no
    /// usable volume `vol.name`).
    fn volume_layout(&self, vol: &Volume) -> Result<(Volume, Layout)>;

    /// A volume created on this backend reads as zeros.
    fn fresh_reads_zeros(&self) -> Result<bool>;

    /// The folder where images are staged (Cinder's `image_conversion_dir`).
    fn staging_dir(&self) -> PathBuf;

    /// Runs an engine write onto `dst` (the LVM backend serializes writers of one PV).
    fn write_to(&self, dst: &[Span], f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let _ = dst;
        f()
    }

    /// The volume with its stored export model, and what the target exports for it.
    fn export_target(&self, vol: &Volume) -> Result<(Volume, ember_target::ExportVolume)>;

    /// Makes the volume's device usable by the target (LVM activates it).
    fn prepare_export(&self, name: &str) -> Result<()> {
        let _ = name;
        Ok(())
    }

    /// Stores the export model (provider_location, provider_auth) of volume `name`.
    fn set_provider(&self, name: &str, model: &ModelUpdate) -> Result<()>;
}

/// [`VolumeDriver::data_layout`](crate::VolumeDriver::data_layout) of any backend.
pub(crate) fn data_layout(b: &impl Backend, vol: &Volume) -> Result<DataLayout> {
    vol.validate()?;
    b.check_ready()?;
    let (_, spans) = b.volume_layout(vol)?;
    Ok(DataLayout {
        spans,
        fresh_reads_zeros: b.fresh_reads_zeros()?,
    })
}

/// [`VolumeDriver::copy_image_to_volume`](crate::VolumeDriver::copy_image_to_volume): the image
/// is inspected before the volume's first byte is written.
pub(crate) fn copy_image_to_volume(
    b: &impl Backend,
    vol: &Volume,
    image: &ImageFile,
) -> Result<()> {
    let (_l, v, dst) = locked_for_image(b, vol, image)?;
    let staging = b.staging_dir();
    let mode = b.common().copy_mode(b.fresh_reads_zeros()?);
    b.write_to(&dst, &mut || {
        crate::image::image_into_layout(image, &v, &dst, &staging, mode)
    })
}

/// [`VolumeDriver::copy_volume_to_image`](crate::VolumeDriver::copy_volume_to_image).
pub(crate) fn copy_volume_to_image(
    b: &impl Backend,
    vol: &Volume,
    image: &ImageFile,
) -> Result<()> {
    let (_l, _, src) = locked_for_image(b, vol, image)?;
    crate::image::layout_into_image(
        &src,
        image,
        &b.staging_dir(),
        b.common().cfg.volume_copy_bps_limit,
    )
}

/// The checks of an image transfer (names, declared image format, backend set up), then the
/// volume's lock, the volume and its bytes.
fn locked_for_image(
    b: &impl Backend,
    vol: &Volume,
    image: &ImageFile,
) -> Result<(ObjectLock, Volume, Layout)> {
    vol.validate()?;
    crate::image::declared_format(image)?;
    b.check_ready()?;
    let l = b.lock_volume(&vol.name)?;
    let (v, spans) = b.volume_layout(vol)?;
    Ok((l, v, spans))
}

/// [`VolumeDriver::create_export`](crate::VolumeDriver::create_export): exports the volume and
/// stores the model the target returns.
pub(crate) fn create_export(b: &impl Backend, vol: &Volume) -> Result<Option<ModelUpdate>> {
    vol.validate()?;
    let x = b.common().exporter("create_export")?;
    let _l = b.lock_volume(&vol.name)?;
    let (v, ev) = b.export_target(vol)?;
    b.prepare_export(&vol.name)?;
    let mu = x.create(&ev, &v)?;
    b.set_provider(&vol.name, &mu)?;
    Ok(Some(mu))
}

/// [`VolumeDriver::ensure_export`](crate::VolumeDriver::ensure_export).
pub(crate) fn ensure_export(b: &impl Backend, vol: &Volume) -> Result<()> {
    vol.validate()?;
    let x = b.common().exporter("ensure_export")?;
    let (v, ev) = b.export_target(vol)?;
    b.prepare_export(&vol.name)?;
    x.ensure(&ev, &v)
}

/// [`VolumeDriver::remove_export`](crate::VolumeDriver::remove_export).
pub(crate) fn remove_export(b: &impl Backend, vol: &Volume) -> Result<()> {
    vol.validate()?;
    let x = b.common().exporter("remove_export")?;
    let _l = b.lock_volume(&vol.name)?;
    let (_, ev) = b.export_target(vol)?;
    x.remove(&ev, false)?;
    b.set_provider(&vol.name, &ModelUpdate::default())
}

/// [`VolumeDriver::initialize_connection`](crate::VolumeDriver::initialize_connection).
pub(crate) fn initialize_connection(
    b: &impl Backend,
    vol: &Volume,
    connector: &Connector,
) -> Result<ConnectionInfo> {
    vol.validate()?;
    let x = b.common().exporter("initialize_connection")?;
    let (v, ev) = b.export_target(vol)?;
    x.connect(&ev, &v, connector)
}

/// [`VolumeDriver::terminate_connection`](crate::VolumeDriver::terminate_connection).
pub(crate) fn terminate_connection(
    b: &impl Backend,
    vol: &Volume,
    connector: &Connector,
) -> Result<()> {
    vol.validate()?;
    let x = b.common().exporter("terminate_connection")?;
    let (v, ev) = b.export_target(vol)?;
    x.disconnect(&ev, &v, connector)
}

/// The [`VolumeDriver`](crate::VolumeDriver) methods this module implements for every
/// [`Backend`], expanded inside a backend's `impl VolumeDriver`.
macro_rules! shared_driver_methods {
    () => {
        fn backend_name(&self) -> &str {
            &$crate::backend::Backend::common(self).cfg.name
        }

        fn copy_image_to_volume(&self, vol: &Volume, image: &ImageFile) -> Result<()> {
            $crate::backend::copy_image_to_volume(self, vol, image)
        }

        fn copy_volume_to_image(&self, vol: &Volume, image: &ImageFile) -> Result<()> {
            $crate::backend::copy_volume_to_image(self, vol, image)
        }

        fn create_export(&self, vol: &Volume) -> Result<Option<ModelUpdate>> {
            $crate::backend::create_export(self, vol)
        }

        fn ensure_export(&self, vol: &Volume) -> Result<()> {
            $crate::backend::ensure_export(self, vol)
        }

        fn remove_export(&self, vol: &Volume) -> Result<()> {
            $crate::backend::remove_export(self, vol)
        }

        fn initialize_connection(
            &self,
            vol: &Volume,
            connector: &Connector,
        ) -> Result<ConnectionInfo> {
            $crate::backend::initialize_connection(self, vol, connector)
        }

        fn terminate_connection(&self, vol: &Volume, connector: &Connector) -> Result<()> {
            $crate::backend::terminate_connection(self, vol, connector)
        }

        fn data_layout(&self, vol: &Volume) -> Result<DataLayout> {
            $crate::backend::data_layout(self, vol)
        }
    };
}
pub(crate) use shared_driver_methods;
