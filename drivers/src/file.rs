//! The file backend (the embedded default): volumes are sparse raw files in a folder, no root.
//!
//! ```text
//! <root>/.lock                      backend-wide flock: metadata writes and crash recovery
//! <root>/meta/volume-<uuid>.json    one record per volume / snapshot, written atomically
//! <root>/meta/snapshot-<uuid>.json  (temp file, fsync, rename, fsync folder)
//! <root>/data/volume-<uuid>.raw     the bytes (sparse)
//! <root>/data/snapshot-<uuid>.raw
//! <root>/locks/<name>.lock          per-object flock: operations on one volume are serialized,
//!                                   operations on different volumes run in parallel
//! <root>/resume/<name>/             an engine copy creating <name>: job.json (what is copied),
//!                                   progress.json and the engine's piece checkpoints
//! ```
//!
//! Crash safety: a record is written with status `creating` before any data file exists and
//! turned `available` only after the data is complete and synced; a delete first marks the record
//! `deleting`. [`FileDriver::do_setup`] resumes `creating` volumes whose engine copy left a resume
//! folder and whose source is still available (the copy continues from its checkpoints and is
//! byte-identical to an uninterrupted one), rolls back the other `creating` records, finishes
//! `deleting` ones whose per-object lock is free, and removes leftover temp files and the lock
//! files of objects without a record: a crash never leaves a half-registered volume. Snapshots
//! and clones are reflinks (FICLONE) where the filesystem shares blocks, the engine's sparse copy
//! elsewhere.
//!
//! Locks, records, attachment lists and the image, export and connection calls come from the
//! shared layer (`backend.rs`); this module holds what only a folder of files does.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{self, Backend, Common, ObjectLock, ObjectLocks, RecordDir};
use crate::config::BackendConfig;
use crate::data::{self, DataLayout, Layout, Span};
use crate::error::{DriverError, Result};
use crate::export::Exporter;
use crate::fsutil::{
    create_dirs, create_sparse, lock_path, read_json, remove_dir_if_exists, remove_if_exists,
    set_len_sync, sync_dir, write_json_atomic, Lock,
};
use crate::names::{self, GIB};
use crate::stats::{gib, PoolStats, VolumeStats};
use crate::types::*;
use crate::VolumeDriver;
use crate::{ConnectionInfo, Connector};

/// Re-exported for callers that named it here before [`crate::fsutil`] existed.
pub use crate::fsutil::hostname;

/// Driver version reported in stats.
pub const DRIVER_VERSION: &str = "1.0.0";

/// Lifecycle state of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created; rolled back by recovery.
    Creating,
    /// Usable.
    Available,
    /// Being deleted; finished by recovery.
    Deleting,
}

/// A volume's metadata file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// The volume.
    pub volume: Volume,
    /// Its state.
    pub status: Status,
    /// Recorded attachments.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// A snapshot's metadata file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Its state.
    pub status: Status,
}

/// A data copy onto a new object: what an interrupted create was copying is kept as
/// `<root>/resume/<name>/job.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CopyJob {
    /// The source volume or snapshot name.
    src: String,
    /// Bytes copied from it.
    copy_len: u64,
    /// The destination's size in bytes.
    size: u64,
}

/// The file backend.
pub struct FileDriver {
    common: Common,
    root: PathBuf,
    /// `<root>/meta`: one record per volume and snapshot.
    records: RecordDir,
    /// `<root>/locks`: a lock file lives as long as its object's record.
    locks: ObjectLocks,
}

impl FileDriver {
    /// A driver for `cfg` (driver = "file"); nothing is touched until [`VolumeDriver::do_setup`].
    pub fn new(cfg: BackendConfig) -> Result<Self> {
        cfg.validate()?;
        let root = cfg
            .path
            .clone()
            .ok_or_else(|| DriverError::InvalidConfiguration("file backend needs path".into()))?;
        let records = RecordDir::new(root.join("meta"));
        Ok(FileDriver {
            common: Common {
                cfg,
                exporter: None,
            },
            locks: ObjectLocks::new(root.join("locks"), Some(records.clone())),
            records,
            root,
        })
    }

    /// Adds iSCSI exports through `exporter`.
    pub fn with_exporter(mut self, exporter: Arc<Exporter>) -> Self {
        self.common.exporter = Some(exporter);
        self
    }

    /// The backend folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn meta_dir(&self) -> PathBuf {
        self.records.dir().to_owned()
    }
    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    /// The data file of a volume or snapshot name (names are validated by the caller).
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.data_dir().join(format!("{name}.raw"))
    }

    /// The resume folder of an engine copy creating `name`.
    fn resume_dir(&self, name: &str) -> PathBuf {
        self.root.join("resume").join(name)
    }

    /// Serializes operations on one object (across threads and processes).
    fn lock_object(&self, name: &str) -> Result<ObjectLock> {
        self.locks.lock(name)
    }

    /// The backend-wide lock: metadata writes and crash recovery.
    fn meta_lock(&self) -> Result<Lock> {
        Ok(lock_path(&self.root.join(".lock"), false)?.expect("blocking lock"))
    }

    fn check_ready(&self) -> Result<()> {
        if !self.meta_dir().is_dir() || !self.data_dir().is_dir() {
            return Err(DriverError::InvalidConfiguration(format!(
                "file backend {:?}: {} is not set up (run do_setup)",
                self.common.cfg.name,
                self.root.display()
            )));
        }
        Ok(())
    }

    // ---- metadata ----

    fn write_record<T: Serialize>(&self, name: &str, rec: &T) -> Result<()> {
        let _g = self.meta_lock()?;
        self.records.write(name, rec)
    }

    fn remove_record(&self, name: &str) -> Result<()> {
        let _g = self.meta_lock()?;
        self.records.remove(name)
    }

    fn volume_record(&self, name: &str) -> Result<Option<VolumeRecord>> {
        self.records.read(name)
    }

    fn snapshot_record(&self, name: &str) -> Result<Option<SnapshotRecord>> {
        self.records.read(name)
    }

    /// An available volume's record, or NotFound.
    fn available_volume(&self, vol_name: &str) -> Result<VolumeRecord> {
        match self.volume_record(vol_name)? {
            Some(r) if r.status == Status::Available => Ok(r),
            _ => Err(DriverError::volume_not_found(vol_name)),
        }
    }

    fn available_snapshot(&self, snap_name: &str) -> Result<SnapshotRecord> {
        match self.snapshot_record(snap_name)? {
            Some(r) if r.status == Status::Available => Ok(r),
            _ => Err(DriverError::snapshot_not_found(snap_name)),
        }
    }

    /// The records of the names starting with `prefix` that `check` accepts.
    fn records<T: for<'de> Deserialize<'de>>(
        &self,
        prefix: &str,
        check: fn(&str) -> Result<uuid::Uuid>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for n in self.records.names(prefix)? {
            if check(&n).is_err() {
                continue;
            }
            if let Some(r) = self.records.read(&n)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn snapshot_records(&self) -> Result<Vec<SnapshotRecord>> {
        self.records(names::SNAPSHOT_PREFIX, names::check_snapshot_name)
    }

    fn volume_records(&self) -> Result<Vec<VolumeRecord>> {
        self.records(names::VOLUME_PREFIX, names::check_volume_name)
    }

    // ---- data ----

    fn span(&self, name: &str, len: u64) -> Layout {
        vec![Span {
            path: self.data_path(name),
            offset: 0,
            len,
        }]
    }

    /// Creates `dst_name`'s data file of `size` bytes holding the first `copy_len` bytes of
    /// `src_name`'s data: a reflink when the filesystem can, else a sparse engine copy, which is
    /// resumable by [`VolumeDriver::do_setup`] when `resumable` (its resume folder is written
    /// before the first byte and removed when the copy completes).
    fn make_copy(
        &self,
        src_name: &str,
        dst_name: &str,
        copy_len: u64,
        size: u64,
        resumable: bool,
    ) -> Result<()> {
        let job = CopyJob {
            src: src_name.to_owned(),
            copy_len,
            size,
        };
        let src = self.data_path(src_name);
        let dst = self.data_path(dst_name);
        remove_if_exists(&dst)?;
        let resume = self.resume_dir(dst_name);
        remove_dir_if_exists(&resume)?;
        let src_len = fs::metadata(&src)
            .map_err(|e| DriverError::io("stat", &src, e))?
            .len();
        if src_len == copy_len && data::reflink(&src, &dst)? {
            set_len_sync(&dst, size)?;
            tracing::debug!(src = %src.display(), dst = %dst.display(), "reflinked");
            return Ok(());
        }
        if resumable {
            fs::create_dir_all(&resume)
                .map_err(|e| DriverError::io("create folder", &resume, e))?;
            write_json_atomic(&resume, "job.json", &job)?;
            sync_dir(resume.parent().expect("resume folder has a parent"))?;
        }
        create_sparse(&dst, size)?;
        sync_dir(&self.data_dir())?;
        self.copy_data(&job, dst_name, resumable)
    }

    /// The engine copy of [`Self::make_copy`]; continues from the resume folder's checkpoints
    /// when they exist.
    fn copy_data(&self, job: &CopyJob, dst_name: &str, resumable: bool) -> Result<()> {
        let resume = self.resume_dir(dst_name);
        data::copy_layout_resumable(
            &self.span(&job.src, job.copy_len),
            &self.span(dst_name, job.size),
            job.copy_len,
            self.common.copy_mode(true),
            resumable.then_some(resume.as_path()),
        )?;
        sync_dir(&self.data_dir())
    }

    /// Continues the interrupted engine copy creating volume `name` (status `creating`) and
    /// marks it available. `Ok(Some(false))` when there is nothing to resume (no resume
    /// folder, the source is gone, or the destination file does not match): the caller rolls
    /// back; `Ok(None)` when the source is locked by another operation: left for a later setup.
    fn resume_create(&self, name: &str) -> Result<Option<bool>> {
        let dir = self.resume_dir(name);
        let Some(job) = read_json::<CopyJob>(&dir.join("job.json"))? else {
            return Ok(Some(false));
        };
        let src_ok = if names::check_volume_name(&job.src).is_ok() {
            self.volume_record(&job.src)?
                .is_some_and(|r| r.status == Status::Available)
        } else if names::check_snapshot_name(&job.src).is_ok() {
            self.snapshot_record(&job.src)?
                .is_some_and(|r| r.status == Status::Available)
        } else {
            false
        };
        if !src_ok {
            tracing::warn!(name, src = %job.src, "source of an interrupted create is gone");
            return Ok(Some(false));
        }
        let Some(_src_lock) = self.locks.try_lock(&job.src)? else {
            return Ok(None);
        };
        let Some(mut rec) = self.volume_record(name)? else {
            return Ok(Some(false));
        };
        let dst_len = fs::metadata(self.data_path(name)).map(|m| m.len()).ok();
        if rec.status != Status::Creating
            || dst_len != Some(job.size)
            || job.size != rec.volume.size_bytes()
        {
            return Ok(Some(false));
        }
        tracing::warn!(name, src = %job.src, "resuming an interrupted create");
        self.copy_data(&job, name, true)?;
        rec.status = Status::Available;
        self.write_record(name, &rec)?;
        Ok(Some(true))
    }

    /// Wipes (as configured) and removes a data file.
    fn destroy_data(&self, name: &str) -> Result<()> {
        let p = self.data_path(name);
        let len = match fs::metadata(&p) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(DriverError::io("stat", &p, e)),
        };
        if let Some(clear) = self.common.clear_len(len) {
            data::wipe_layout(
                &self.span(name, len),
                clear,
                self.common.cfg.volume_copy_bps_limit,
            )?;
        }
        remove_if_exists(&p)?;
        sync_dir(&self.data_dir())
    }

    /// Registers a new volume whose data `fill` creates; rolls back on failure.
    fn create_with(&self, vol: &Volume, fill: impl FnOnce() -> Result<()>) -> Result<()> {
        if self.volume_record(&vol.name)?.is_some() {
            return Err(DriverError::AlreadyExists {
                what: "volume",
                name: vol.name.clone(),
            });
        }
        let mut rec = VolumeRecord {
            volume: vol.clone(),
            status: Status::Creating,
            attachments: Vec::new(),
        };
        rec.volume.provider_location = None;
        rec.volume.provider_auth = None;
        self.write_record(&vol.name, &rec)?;
        match fill() {
            Ok(()) => {
                rec.status = Status::Available;
                self.write_record(&vol.name, &rec)
            }
            Err(e) => {
                let _ = remove_if_exists(&self.data_path(&vol.name));
                let _ = remove_dir_if_exists(&self.resume_dir(&vol.name));
                let _ = self.remove_record(&vol.name);
                Err(e)
            }
        }
    }

    /// Creates `vol` holding the first `copy_len` bytes of `src_name` (a clone or a volume from
    /// a snapshot), resumable after a crash.
    fn create_copy_of(
        &self,
        vol: &Volume,
        src_name: &str,
        copy_len: u64,
    ) -> Result<Option<ModelUpdate>> {
        self.create_with(vol, || {
            self.make_copy(src_name, &vol.name, copy_len, vol.size_bytes(), true)
        })?;
        Ok(None)
    }

    /// Finishes or rolls back interrupted operations whose object lock is free, and removes the
    /// lock files of objects that no longer exist.
    fn recover(&self) -> Result<()> {
        let g = self.meta_lock()?;
        self.records.remove_temp_files()?;
        drop(g);
        for n in self.records.names("")? {
            let Some(lock) = self.locks.try_lock(&n)? else {
                continue; // another process is working on it
            };
            let is_volume = names::check_volume_name(&n).is_ok();
            let status = if is_volume {
                self.volume_record(&n)?.map(|r| r.status)
            } else if names::check_snapshot_name(&n).is_ok() {
                self.snapshot_record(&n)?.map(|r| r.status)
            } else {
                None
            };
            match status {
                Some(Status::Creating) => {
                    let resumed = if is_volume {
                        match self.resume_create(&n) {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::warn!(name = %n, error = %e, "cannot resume an interrupted create");
                                Some(false)
                            }
                        }
                    } else {
                        Some(false)
                    };
                    let Some(resumed) = resumed else {
                        tracing::info!(name = %n, "source busy: the interrupted create is resumed later");
                        continue;
                    };
                    if !resumed {
                        tracing::warn!(name = %n, "rolling back an interrupted create");
                        remove_if_exists(&self.data_path(&n))?;
                        self.remove_record(&n)?;
                    }
                    remove_dir_if_exists(&self.resume_dir(&n))?;
                }
                Some(Status::Deleting) => {
                    tracing::warn!(name = %n, "finishing an interrupted delete");
                    self.destroy_data(&n)?;
                    self.remove_record(&n)?;
                }
                _ => {}
            }
            drop(lock);
        }
        self.locks.remove_orphans()?;
        self.remove_interrupted_temp_files()
    }

    /// Removes what a killed process leaves outside the records: the half-built data of a
    /// revert (`data/.revert-<volume>.raw`, when that volume's lock is free) and staged image
    /// conversions of processes that no longer exist (`staging/.stage-<what>-<pid>-<rand>.raw`;
    /// a pid that is alive, or not ours to signal, keeps its file).
    fn remove_interrupted_temp_files(&self) -> Result<()> {
        let dir = self.data_dir();
        for e in fs::read_dir(&dir).map_err(|e| DriverError::io("list", &dir, e))? {
            let e = e.map_err(|e| DriverError::io("list", &dir, e))?;
            let name = e.file_name();
            let Some(vol) = name
                .to_str()
                .and_then(|n| n.strip_prefix(".revert-"))
                .and_then(|n| n.strip_suffix(".raw"))
            else {
                continue;
            };
            if names::check_volume_name(vol).is_err() {
                continue;
            }
            if let Some(_l) = self.locks.try_lock(vol)? {
                tracing::warn!(volume = %vol, "removing the data of an interrupted revert");
                remove_if_exists(&e.path())?;
            }
        }
        let staging = self.root.join("staging");
        let Ok(rd) = fs::read_dir(&staging) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix(".stage-"))
                .and_then(|n| n.split('-').nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            let Some(pid) = pid.filter(|&p| p > 0 && p as u32 != std::process::id()) else {
                continue;
            };
            let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                == Err(nix::errno::Errno::ESRCH);
            if gone {
                tracing::warn!(file = %e.path().display(), "removing a staged image of a process that is gone");
                remove_if_exists(&e.path())?;
            }
        }
        Ok(())
    }

    fn export_volume(&self, vol: &Volume) -> ember_target::ExportVolume {
        ember_target::ExportVolume::whole(
            vol.id.to_string(),
            vol.name.clone(),
            self.data_path(&vol.name),
            vol.size_bytes(),
        )
    }

    fn update_volume(&self, name: &str, f: impl FnOnce(&mut VolumeRecord)) -> Result<Volume> {
        let mut rec = self.available_volume(name)?;
        f(&mut rec);
        self.write_record(name, &rec)?;
        Ok(rec.volume)
    }
}

impl VolumeDriver for FileDriver {
    backend::shared_driver_methods!();

    fn do_setup(&self) -> Result<()> {
        create_dirs(&[
            self.root.clone(),
            self.meta_dir(),
            self.data_dir(),
            self.locks.dir().to_owned(),
        ])?;
        self.recover()
    }

    fn check_for_setup_error(&self) -> Result<()> {
        let root = &self.root;
        let m = fs::metadata(root).map_err(|e| {
            DriverError::InvalidConfiguration(format!(
                "file backend {:?}: folder {} is not usable: {e}",
                self.common.cfg.name,
                root.display()
            ))
        })?;
        if !m.is_dir() {
            return Err(DriverError::InvalidConfiguration(format!(
                "file backend {:?}: {} is not a folder",
                self.common.cfg.name,
                root.display()
            )));
        }
        self.check_ready()?;
        // Usable means writable: create and remove a probe file.
        let probe = self.root.join(format!(".probe-{}", std::process::id()));
        File::create(&probe).map_err(|e| {
            DriverError::InvalidConfiguration(format!(
                "file backend {:?}: folder {} is not writable: {e}",
                self.common.cfg.name,
                root.display()
            ))
        })?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }

    fn get_volume_stats(&self, _refresh: bool) -> Result<VolumeStats> {
        self.check_ready()?;
        let st = nix::sys::statvfs::statvfs(&self.root).map_err(|e| {
            DriverError::io(
                "statvfs",
                &self.root,
                std::io::Error::from_raw_os_error(e as i32),
            )
        })?;
        let frsize = st.fragment_size();
        let total = st.blocks() * frsize;
        let free = st.blocks_available() * frsize;
        let vols = self.list_volumes()?;
        let snaps = self.list_snapshots()?;
        let provisioned: u64 = vols.iter().map(|v| v.size_bytes()).sum::<u64>()
            + snaps.iter().map(|s| s.size_bytes()).sum::<u64>();
        let host = hostname();
        let pool = PoolStats {
            pool_name: self.common.cfg.name.clone(),
            total_capacity_gb: gib(total),
            free_capacity_gb: gib(free),
            reserved_percentage: self.common.cfg.reserved_percentage,
            location_info: format!("FileDriver:{host}:{}", self.root.display()),
            qos_support: false,
            provisioned_capacity_gb: gib(provisioned),
            max_over_subscription_ratio: self.common.cfg.max_over_subscription_ratio.clone(),
            thin_provisioning_support: true,
            thick_provisioning_support: false,
            total_volumes: (vols.len() + snaps.len()) as u64,
            filter_function: self.common.cfg.filter_function.clone(),
            goodness_function: self.common.cfg.goodness_function.clone(),
            multiattach: true,
            backend_state: "up".into(),
        };
        Ok(VolumeStats::single_pool(
            &self.common.cfg.name,
            DRIVER_VERSION,
            "iSCSI",
            true,
            true,
            pool,
        ))
    }

    fn create_volume(&self, vol: &Volume) -> Result<Option<ModelUpdate>> {
        vol.validate()?;
        self.check_ready()?;
        let _l = self.lock_object(&vol.name)?;
        self.create_with(vol, || {
            create_sparse(&self.data_path(&vol.name), vol.size_bytes())?;
            sync_dir(&self.data_dir())
        })?;
        Ok(None)
    }

    fn delete_volume(&self, vol: &Volume) -> Result<()> {
        vol.validate()?;
        self.check_ready()?;
        let _l = self.lock_object(&vol.name)?;
        let Some(mut rec) = self.volume_record(&vol.name)? else {
            tracing::info!(volume = %vol.name, "already gone");
            return Ok(());
        };
        let snaps: Vec<_> = self
            .snapshot_records()?
            .into_iter()
            .filter(|s| s.snapshot.volume_id == vol.id)
            .map(|s| s.snapshot.name)
            .collect();
        if !snaps.is_empty() {
            return Err(DriverError::VolumeIsBusy {
                name: vol.name.clone(),
                reason: format!("it has snapshots: {}", snaps.join(", ")),
            });
        }
        if !rec.attachments.is_empty() {
            return Err(DriverError::VolumeIsBusy {
                name: vol.name.clone(),
                reason: "it is attached".into(),
            });
        }
        if rec.volume.provider_location.is_some() {
            if let Some(x) = &self.common.exporter {
                x.remove(&self.export_volume(&rec.volume), true)?;
            }
        }
        rec.status = Status::Deleting;
        self.write_record(&vol.name, &rec)?;
        self.destroy_data(&vol.name)?;
        self.remove_record(&vol.name)
    }

    fn create_snapshot(&self, snap: &Snapshot) -> Result<Option<ModelUpdate>> {
        snap.validate()?;
        self.check_ready()?;
        let _l = self.locks.lock_all(&[&snap.volume_name, &snap.name])?;
        let origin = self.available_volume(&snap.volume_name)?;
        if self.snapshot_record(&snap.name)?.is_some() {
            return Err(DriverError::AlreadyExists {
                what: "snapshot",
                name: snap.name.clone(),
            });
        }
        let mut rec = SnapshotRecord {
            snapshot: Snapshot {
                volume_size: origin.volume.size,
                ..snap.clone()
            },
            status: Status::Creating,
        };
        self.write_record(&snap.name, &rec)?;
        let size = origin.volume.size_bytes();
        if let Err(e) = self.make_copy(&snap.volume_name, &snap.name, size, size, false) {
            let _ = remove_if_exists(&self.data_path(&snap.name));
            let _ = self.remove_record(&snap.name);
            return Err(e);
        }
        rec.status = Status::Available;
        self.write_record(&snap.name, &rec)?;
        Ok(None)
    }

    fn delete_snapshot(&self, snap: &Snapshot) -> Result<()> {
        snap.validate()?;
        self.check_ready()?;
        let _l = self.locks.lock_all(&[&snap.volume_name, &snap.name])?;
        let Some(mut rec) = self.snapshot_record(&snap.name)? else {
            tracing::info!(snapshot = %snap.name, "already gone");
            return Ok(());
        };
        rec.status = Status::Deleting;
        self.write_record(&snap.name, &rec)?;
        self.destroy_data(&snap.name)?;
        self.remove_record(&snap.name)
    }

    fn create_volume_from_snapshot(
        &self,
        vol: &Volume,
        snap: &Snapshot,
    ) -> Result<Option<ModelUpdate>> {
        vol.validate()?;
        snap.validate()?;
        self.check_ready()?;
        let _l = self
            .locks
            .lock_all(&[&snap.volume_name, &snap.name, &vol.name])?;
        let s = self.available_snapshot(&snap.name)?;
        if vol.size < s.snapshot.volume_size {
            return Err(DriverError::invalid(format!(
                "volume size {} GiB is smaller than the snapshot's {} GiB",
                vol.size, s.snapshot.volume_size
            )));
        }
        self.create_copy_of(vol, &snap.name, s.snapshot.size_bytes())
    }

    fn create_cloned_volume(&self, vol: &Volume, src: &Volume) -> Result<Option<ModelUpdate>> {
        backend::check_clone(vol, src)?;
        self.check_ready()?;
        let _l = self.locks.lock_all(&[&src.name, &vol.name])?;
        let s = self.available_volume(&src.name)?;
        if vol.size < s.volume.size {
            return Err(DriverError::invalid(format!(
                "volume size {} GiB is smaller than the source's {} GiB",
                vol.size, s.volume.size
            )));
        }
        self.create_copy_of(vol, &src.name, s.volume.size_bytes())
    }

    fn extend_volume(&self, vol: &Volume, new_size: u64) -> Result<()> {
        vol.validate()?;
        let new_bytes = names::check_size_gb(new_size)?;
        self.check_ready()?;
        let _l = self.lock_object(&vol.name)?;
        let rec = self.available_volume(&vol.name)?;
        if new_size < rec.volume.size {
            return Err(DriverError::invalid(format!(
                "new size {new_size} GiB is smaller than the current {} GiB",
                rec.volume.size
            )));
        }
        set_len_sync(&self.data_path(&vol.name), new_bytes)?;
        let v = self.update_volume(&vol.name, |r| r.volume.size = new_size)?;
        if v.provider_location.is_some() {
            if let Some(x) = &self.common.exporter {
                x.extend(&self.export_volume(&v), &v)?;
            }
        }
        Ok(())
    }

    fn revert_to_snapshot(&self, vol: &Volume, snap: &Snapshot) -> Result<()> {
        backend::check_revert(vol, snap)?;
        self.check_ready()?;
        let _l = self.locks.lock_all(&[&vol.name, &snap.name])?;
        let v = self.available_volume(&vol.name)?;
        let s = self.available_snapshot(&snap.name)?;
        // Build the reverted data beside the volume, then swap it in with one rename.
        let tmp_name = format!(".revert-{}", vol.name);
        let tmp = self.data_path(&tmp_name);
        let res = self.make_copy(
            &snap.name,
            &tmp_name,
            s.snapshot.size_bytes(),
            v.volume.size_bytes(),
            false,
        );
        if let Err(e) = res {
            let _ = remove_if_exists(&tmp);
            return Err(e);
        }
        let dst = self.data_path(&vol.name);
        fs::rename(&tmp, &dst).map_err(|e| DriverError::io("rename into place", &dst, e))?;
        sync_dir(&self.data_dir())
    }

    fn clone_image(&self, vol: &Volume, image: &ImageFile) -> Result<CloneImageResult> {
        vol.validate()?;
        self.check_ready()?;
        let Some(len) = crate::image::inspect_raw_fitting(image, vol)? else {
            // Not raw: nothing to share blocks with; fall back to copy_image_to_volume.
            return Ok(CloneImageResult::default());
        };
        let _l = self.lock_object(&vol.name)?;
        let mut cloned = false;
        let res = self.create_with(vol, || {
            let dst = self.data_path(&vol.name);
            if len
                == fs::metadata(&image.path)
                    .map(|m| m.len())
                    .unwrap_or(u64::MAX)
                && data::reflink(&image.path, &dst)?
            {
                set_len_sync(&dst, vol.size_bytes())?;
                cloned = true;
                Ok(())
            } else {
                Err(DriverError::NotSupported {
                    op: "clone_image",
                    reason: "no reflink here".into(),
                })
            }
        });
        match res {
            Ok(()) => Ok(CloneImageResult {
                model_update: None,
                cloned,
            }),
            Err(DriverError::NotSupported { .. }) => Ok(CloneImageResult::default()),
            Err(e) => Err(e),
        }
    }

    fn manage_existing(
        &self,
        vol: &Volume,
        existing_ref: &ExistingRef,
    ) -> Result<Option<ModelUpdate>> {
        vol.validate()?;
        self.check_ready()?;
        let (src, size) = self.manage_target(existing_ref)?;
        let size_gb = size.div_ceil(GIB).max(1);
        let _l = self.lock_object(&vol.name)?;
        let v = Volume {
            size: size_gb,
            ..vol.clone()
        };
        self.create_with(&v, || {
            let dst = self.data_path(&vol.name);
            if dst.exists() && dst != src {
                return Err(DriverError::AlreadyExists {
                    what: "data file",
                    name: dst.display().to_string(),
                });
            }
            fs::rename(&src, &dst).map_err(|e| DriverError::io("rename", &src, e))?;
            set_len_sync(&dst, size_gb * GIB)?;
            sync_dir(&self.data_dir())
        })?;
        Ok(None)
    }

    fn manage_existing_get_size(&self, _vol: &Volume, existing_ref: &ExistingRef) -> Result<u64> {
        self.check_ready()?;
        let (_, size) = self.manage_target(existing_ref)?;
        Ok(size.div_ceil(GIB).max(1))
    }

    fn get_manageable_volumes(&self) -> Result<Vec<ManageableVolume>> {
        self.check_ready()?;
        let dir = self.data_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(|e| DriverError::io("list", &dir, e))? {
            let e = e.map_err(|e| DriverError::io("list", &dir, e))?;
            let Some(n) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if n.starts_with('.') || names::check_lvm_name("file", &n).is_err() {
                continue;
            }
            let m = e
                .metadata()
                .map_err(|x| DriverError::io("stat", e.path(), x))?;
            if !m.is_file() {
                continue;
            }
            let stem = n.strip_suffix(".raw").unwrap_or(&n);
            let managed = if let Ok(id) = names::check_volume_name(stem) {
                self.volume_record(stem)?.map(|_| id)
            } else if names::check_snapshot_name(stem).is_ok() {
                self.snapshot_record(stem)?.map(|r| r.snapshot.id)
            } else {
                None
            };
            out.push(ManageableVolume {
                reference: ExistingRef::source_name(&n),
                size: m.len().div_ceil(GIB).max(1),
                safe_to_manage: managed.is_none(),
                reason_not_safe: managed.map(|_| "already managed".into()),
                cinder_id: managed,
                extra_info: None,
            });
        }
        out.sort_by(|a, b| a.reference.source_name.cmp(&b.reference.source_name));
        Ok(out)
    }

    fn unmanage(&self, vol: &Volume) -> Result<()> {
        vol.validate()?;
        self.check_ready()?;
        let _l = self.lock_object(&vol.name)?;
        self.available_volume(&vol.name)?;
        // The data file stays as `volume-<uuid>.raw`; it shows up as manageable again.
        self.remove_record(&vol.name)
    }

    fn attach_volume(&self, vol: &Volume, attachment: &Attachment) -> Result<()> {
        vol.validate()?;
        let _l = self.lock_object(&vol.name)?;
        let mut rec = self.available_volume(&vol.name)?;
        let exclusive = !rec.volume.multiattach;
        if backend::attach(&mut rec.attachments, attachment, &vol.name, exclusive)? {
            self.write_record(&vol.name, &rec)?;
        }
        Ok(())
    }

    fn detach_volume(&self, vol: &Volume, attachment: &Attachment) -> Result<()> {
        vol.validate()?;
        let _l = self.lock_object(&vol.name)?;
        self.update_volume(&vol.name, |r| {
            backend::detach(&mut r.attachments, attachment)
        })?;
        Ok(())
    }

    fn list_volumes(&self) -> Result<Vec<Volume>> {
        self.check_ready()?;
        Ok(self
            .volume_records()?
            .into_iter()
            .filter(|r| r.status == Status::Available)
            .map(|r| r.volume)
            .collect())
    }

    fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        self.check_ready()?;
        Ok(self
            .snapshot_records()?
            .into_iter()
            .filter(|r| r.status == Status::Available)
            .map(|r| r.snapshot)
            .collect())
    }
}

impl Backend for FileDriver {
    fn common(&self) -> &Common {
        &self.common
    }

    fn check_ready(&self) -> Result<()> {
        FileDriver::check_ready(self)
    }

    fn lock_volume(&self, name: &str) -> Result<ObjectLock> {
        self.lock_object(name)
    }

    fn volume_layout(&self, vol: &Volume) -> Result<(Volume, Layout)> {
        let v = self.available_volume(&vol.name)?.volume;
        let spans = self.span(&v.name, v.size_bytes());
        Ok((v, spans))
    }

    fn fresh_reads_zeros(&self) -> Result<bool> {
        Ok(true)
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    fn export_target(&self, vol: &Volume) -> Result<(Volume, ember_target::ExportVolume)> {
        let v = self.available_volume(&vol.name)?.volume;
        let x = self.export_volume(&v);
        Ok((v, x))
    }

    fn set_provider(&self, name: &str, model: &ModelUpdate) -> Result<()> {
        self.update_volume(name, |r| {
            r.volume.provider_location = model.provider_location.clone();
            r.volume.provider_auth = model.provider_auth.clone();
        })?;
        Ok(())
    }
}

impl FileDriver {
    /// The data file a manage reference names and its size. Only plain file names inside the
    /// backend's data folder are accepted; managed volumes are refused.
    fn manage_target(&self, r: &ExistingRef) -> Result<(PathBuf, u64)> {
        let n = backend::manage_source_name(r)?;
        let stem = n.strip_suffix(".raw").unwrap_or(n);
        if let Ok(id) = names::check_volume_name(stem) {
            if self.volume_record(stem)?.is_some() {
                return Err(DriverError::ManageExistingAlreadyManaged {
                    name: n.to_owned(),
                    id: id.to_string(),
                });
            }
        }
        if names::check_snapshot_name(stem).is_ok() && self.snapshot_record(stem)?.is_some() {
            return Err(DriverError::ManageExistingAlreadyManaged {
                name: n.to_owned(),
                id: stem.to_owned(),
            });
        }
        let p = self.data_dir().join(n);
        let m =
            fs::symlink_metadata(&p).map_err(|_| DriverError::ManageExistingInvalidReference {
                reason: format!("no file {n:?} in {}", self.data_dir().display()),
            })?;
        if !m.is_file() {
            return Err(DriverError::ManageExistingInvalidReference {
                reason: format!("{n:?} is not a regular file"),
            });
        }
        Ok((p, m.len()))
    }
}
