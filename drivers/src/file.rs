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
//! `deleting` ones whose per-object lock is free, and removes leftover temp files: a crash never
//! leaves a half-registered volume. Snapshots and clones are reflinks (FICLONE) where the filesystem
//! shares blocks, the engine's sparse copy elsewhere.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::{BackendConfig, VolumeClear};
use crate::data::{self, CopyMode, DataLayout, Span};
use crate::error::{DriverError, Result};
use crate::export::Exporter;
use crate::fsutil::{
    create_sparse, lock_path, read_json, remove_dir_if_exists, remove_if_exists, set_len_sync,
    sync_dir, write_json_atomic, Lock,
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

/// What an interrupted create was copying (`<root>/resume/<name>/job.json`).
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
    cfg: BackendConfig,
    root: PathBuf,
    exporter: Option<Arc<Exporter>>,
}

/// A held per-object lock. On release, when the object has no record (deleted, rolled back or
/// never created), its lock file is removed first, so `locks/` holds only live objects instead
/// of one file per object ever named. Safe because every record write for a name happens under
/// that name's lock, and [`lock_path`] checks after locking that the file it locked is still the
/// one at the path (a waiter on a removed file retries on the new one).
pub(crate) struct ObjectLock {
    path: PathBuf,
    record: PathBuf,
    _lock: Lock,
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        // Runs before the fields drop: the flock is still held here.
        if matches!(fs::symlink_metadata(&self.record), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl FileDriver {
    /// A driver for `cfg` (driver = "file"); nothing is touched until [`VolumeDriver::do_setup`].
    pub fn new(cfg: BackendConfig) -> Result<Self> {
        cfg.validate()?;
        let root = cfg
            .path
            .clone()
            .ok_or_else(|| DriverError::InvalidConfiguration("file backend needs path".into()))?;
        Ok(FileDriver {
            cfg,
            root,
            exporter: None,
        })
    }

    /// Adds iSCSI exports through `exporter`.
    pub fn with_exporter(mut self, exporter: Arc<Exporter>) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// The backend folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn meta_dir(&self) -> PathBuf {
        self.root.join("meta")
    }
    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    fn meta_path(&self, name: &str) -> PathBuf {
        self.meta_dir().join(format!("{name}.json"))
    }
    /// The data file of a volume or snapshot name (names are validated by the caller).
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.data_dir().join(format!("{name}.raw"))
    }

    /// The resume folder of an engine copy creating `name`.
    fn resume_dir(&self, name: &str) -> PathBuf {
        self.root.join("resume").join(name)
    }

    fn lock_file(&self, path: &Path, nonblock: bool) -> Result<Option<Lock>> {
        lock_path(path, nonblock)
    }

    /// Serializes operations on one object (across threads and processes).
    fn lock_object(&self, name: &str) -> Result<ObjectLock> {
        Ok(self.try_lock_object(name, false)?.expect("blocking lock"))
    }

    fn try_lock_object(&self, name: &str, nonblock: bool) -> Result<Option<ObjectLock>> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        Ok(self.lock_file(&path, nonblock)?.map(|l| ObjectLock {
            path,
            record: self.meta_path(name),
            _lock: l,
        }))
    }

    /// Locks several objects in one global order (sorted names, each once): no deadlock between
    /// operations naming the same objects in different roles, and no self-deadlock when a
    /// caller names one object twice (e.g. a volume from a snapshot onto the snapshot's origin).
    fn lock_objects(&self, names: &[&str]) -> Result<Vec<ObjectLock>> {
        let mut names = names.to_vec();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(|n| self.lock_object(n)).collect()
    }

    fn meta_lock(&self) -> Result<Lock> {
        Ok(self
            .lock_file(&self.root.join(".lock"), false)?
            .expect("blocking lock"))
    }

    fn check_ready(&self) -> Result<()> {
        if !self.meta_dir().is_dir() || !self.data_dir().is_dir() {
            return Err(DriverError::InvalidConfiguration(format!(
                "file backend {:?}: {} is not set up (run do_setup)",
                self.cfg.name,
                self.root.display()
            )));
        }
        Ok(())
    }

    // ---- metadata ----

    fn write_record<T: Serialize>(&self, name: &str, rec: &T) -> Result<()> {
        let _g = self.meta_lock()?;
        write_json_atomic(&self.meta_dir(), &format!("{name}.json"), rec)
    }

    fn remove_record(&self, name: &str) -> Result<()> {
        let _g = self.meta_lock()?;
        let p = self.meta_path(name);
        match fs::remove_file(&p) {
            Ok(()) => sync_dir(&self.meta_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DriverError::io("remove", &p, e)),
        }
    }

    fn volume_record(&self, name: &str) -> Result<Option<VolumeRecord>> {
        read_json(&self.meta_path(name))
    }

    fn snapshot_record(&self, name: &str) -> Result<Option<SnapshotRecord>> {
        read_json(&self.meta_path(name))
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

    fn meta_names(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.meta_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(|e| DriverError::io("list", &dir, e))? {
            let e = e.map_err(|e| DriverError::io("list", &dir, e))?;
            let n = e.file_name();
            let Some(n) = n.to_str() else { continue };
            if let Some(stem) = n.strip_suffix(".json") {
                if stem.starts_with(prefix) {
                    out.push(stem.to_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn snapshot_records(&self) -> Result<Vec<SnapshotRecord>> {
        let mut out = Vec::new();
        for n in self.meta_names(names::SNAPSHOT_PREFIX)? {
            if names::check_snapshot_name(&n).is_err() {
                continue;
            }
            if let Some(r) = self.snapshot_record(&n)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn volume_records(&self) -> Result<Vec<VolumeRecord>> {
        let mut out = Vec::new();
        for n in self.meta_names(names::VOLUME_PREFIX)? {
            if names::check_volume_name(&n).is_err() {
                continue;
            }
            if let Some(r) = self.volume_record(&n)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    // ---- data ----

    fn span(&self, name: &str, len: u64) -> Vec<Span> {
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
            let job = CopyJob {
                src: src_name.to_owned(),
                copy_len,
                size,
            };
            write_json_atomic(&resume, "job.json", &job)?;
            sync_dir(resume.parent().expect("resume folder has a parent"))?;
        }
        create_sparse(&dst, size)?;
        sync_dir(&self.data_dir())?;
        self.copy_data(src_name, dst_name, copy_len, size, resumable)
    }

    /// The engine copy of [`Self::make_copy`]; continues from the resume folder's checkpoints
    /// when they exist.
    fn copy_data(
        &self,
        src_name: &str,
        dst_name: &str,
        copy_len: u64,
        size: u64,
        resumable: bool,
    ) -> Result<()> {
        let resume = self.resume_dir(dst_name);
        data::copy_layout_resumable(
            &self.span(src_name, copy_len),
            &self.span(dst_name, size),
            copy_len,
            CopyMode {
                dest_zeroed: true,
                bps_limit: self.cfg.volume_copy_bps_limit,
            },
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
        let Some(_src_lock) = self.lock_file(
            &self.root.join("locks").join(format!("{}.lock", job.src)),
            true,
        )?
        else {
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
        self.copy_data(&job.src, name, job.copy_len, job.size, true)?;
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
        if self.cfg.volume_clear == VolumeClear::Zero && len > 0 {
            let clear = match self.cfg.volume_clear_size {
                0 => len,
                mib => (mib << 20).min(len),
            };
            data::wipe_layout(&self.span(name, len), clear, self.cfg.volume_copy_bps_limit)?;
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

    /// Finishes or rolls back interrupted operations whose object lock is free.
    fn recover(&self) -> Result<()> {
        let _g = self.meta_lock()?;
        let dir = self.meta_dir();
        for e in fs::read_dir(&dir).map_err(|e| DriverError::io("list", &dir, e))? {
            let e = e.map_err(|e| DriverError::io("list", &dir, e))?;
            let name = e.file_name();
            if name.to_str().is_some_and(|n| n.starts_with(".tmp-")) {
                // A metadata write that never reached its rename: not registered, drop it.
                let _ = fs::remove_file(e.path());
            }
        }
        drop(_g);
        for n in self.meta_names("")? {
            let Some(lock) = self.try_lock_object(&n, true)? else {
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
            if let Some(_l) = self.try_lock_object(vol, true)? {
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

    fn exporter(&self, op: &'static str) -> Result<&Exporter> {
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

    fn update_volume(&self, name: &str, f: impl FnOnce(&mut VolumeRecord)) -> Result<Volume> {
        let mut rec = self.available_volume(name)?;
        f(&mut rec);
        self.write_record(name, &rec)?;
        Ok(rec.volume)
    }
}

impl VolumeDriver for FileDriver {
    fn backend_name(&self) -> &str {
        &self.cfg.name
    }

    fn do_setup(&self) -> Result<()> {
        for d in [
            self.root.clone(),
            self.meta_dir(),
            self.data_dir(),
            self.root.join("locks"),
        ] {
            fs::create_dir_all(&d).map_err(|e| DriverError::io("create folder", &d, e))?;
        }
        self.recover()
    }

    fn check_for_setup_error(&self) -> Result<()> {
        let root = &self.root;
        let m = fs::metadata(root).map_err(|e| {
            DriverError::InvalidConfiguration(format!(
                "file backend {:?}: folder {} is not usable: {e}",
                self.cfg.name,
                root.display()
            ))
        })?;
        if !m.is_dir() {
            return Err(DriverError::InvalidConfiguration(format!(
                "file backend {:?}: {} is not a folder",
                self.cfg.name,
                root.display()
            )));
        }
        self.check_ready()?;
        // Usable means writable: create and remove a probe file.
        let probe = self.root.join(format!(".probe-{}", std::process::id()));
        File::create(&probe).map_err(|e| {
            DriverError::InvalidConfiguration(format!(
                "file backend {:?}: folder {} is not writable: {e}",
                self.cfg.name,
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
            pool_name: self.cfg.name.clone(),
            total_capacity_gb: gib(total),
            free_capacity_gb: gib(free),
            reserved_percentage: self.cfg.reserved_percentage,
            location_info: format!("FileDriver:{host}:{}", self.root.display()),
            qos_support: false,
            provisioned_capacity_gb: gib(provisioned),
            max_over_subscription_ratio: self.cfg.max_over_subscription_ratio.clone(),
            thin_provisioning_support: true,
            thick_provisioning_support: false,
            total_volumes: (vols.len() + snaps.len()) as u64,
            filter_function: self.cfg.filter_function.clone(),
            goodness_function: self.cfg.goodness_function.clone(),
            multiattach: true,
            backend_state: "up".into(),
        };
        Ok(VolumeStats::single_pool(
            &self.cfg.name,
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
            if let Some(x) = &self.exporter {
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
        let _l = self.lock_objects(&[&snap.volume_name, &snap.name])?;
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
        let _l = self.lock_objects(&[&snap.volume_name, &snap.name])?;
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
        let _l = self.lock_objects(&[&snap.volume_name, &snap.name, &vol.name])?;
        let s = self.available_snapshot(&snap.name)?;
        if vol.size < s.snapshot.volume_size {
            return Err(DriverError::invalid(format!(
                "volume size {} GiB is smaller than the snapshot's {} GiB",
                vol.size, s.snapshot.volume_size
            )));
        }
        self.create_with(vol, || {
            self.make_copy(
                &snap.name,
                &vol.name,
                s.snapshot.size_bytes(),
                vol.size_bytes(),
                true,
            )
        })?;
        Ok(None)
    }

    fn create_cloned_volume(&self, vol: &Volume, src: &Volume) -> Result<Option<ModelUpdate>> {
        vol.validate()?;
        src.validate()?;
        self.check_ready()?;
        if vol.id == src.id {
            return Err(DriverError::invalid(
                "a volume cannot be cloned onto itself",
            ));
        }
        let _l = self.lock_objects(&[&src.name, &vol.name])?;
        let s = self.available_volume(&src.name)?;
        if vol.size < s.volume.size {
            return Err(DriverError::invalid(format!(
                "volume size {} GiB is smaller than the source's {} GiB",
                vol.size, s.volume.size
            )));
        }
        self.create_with(vol, || {
            self.make_copy(
                &src.name,
                &vol.name,
                s.volume.size_bytes(),
                vol.size_bytes(),
                true,
            )
        })?;
        Ok(None)
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
            if let Some(x) = &self.exporter {
                x.extend(&self.export_volume(&v), &v)?;
            }
        }
        Ok(())
    }

    fn revert_to_snapshot(&self, vol: &Volume, snap: &Snapshot) -> Result<()> {
        vol.validate()?;
        snap.validate()?;
        self.check_ready()?;
        if snap.volume_id != vol.id {
            return Err(DriverError::invalid(format!(
                "snapshot {} is not a snapshot of {}",
                snap.name, vol.name
            )));
        }
        let _l = self.lock_objects(&[&vol.name, &snap.name])?;
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

    fn copy_image_to_volume(&self, vol: &Volume, image: &ImageFile) -> Result<()> {
        vol.validate()?;
        self.check_ready()?;
        crate::image::declared_format(image)?;
        let _l = self.lock_object(&vol.name)?;
        let v = self.available_volume(&vol.name)?;
        crate::image::image_into_layout(
            image,
            &v.volume,
            &self.span(&vol.name, v.volume.size_bytes()),
            &self.root.join("staging"),
            self.cfg.volume_copy_bps_limit,
        )
    }

    fn copy_volume_to_image(&self, vol: &Volume, image: &ImageFile) -> Result<()> {
        vol.validate()?;
        self.check_ready()?;
        crate::image::declared_format(image)?;
        let _l = self.lock_object(&vol.name)?;
        let v = self.available_volume(&vol.name)?;
        crate::image::layout_into_image(
            &self.span(&vol.name, v.volume.size_bytes()),
            image,
            &self.root.join("staging"),
            self.cfg.volume_copy_bps_limit,
        )
    }

    fn clone_image(&self, vol: &Volume, image: &ImageFile) -> Result<CloneImageResult> {
        vol.validate()?;
        self.check_ready()?;
        let Some(len) = check_raw_image(image, vol)? else {
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

    fn create_export(&self, vol: &Volume) -> Result<Option<ModelUpdate>> {
        vol.validate()?;
        let x = self.exporter("create_export")?;
        let _l = self.lock_object(&vol.name)?;
        let v = self.available_volume(&vol.name)?.volume;
        let mu = x.create(&self.export_volume(&v), &v)?;
        self.update_volume(&vol.name, |r| {
            r.volume.provider_location = mu.provider_location.clone();
            r.volume.provider_auth = mu.provider_auth.clone();
        })?;
        Ok(Some(mu))
    }

    fn ensure_export(&self, vol: &Volume) -> Result<()> {
        vol.validate()?;
        let x = self.exporter("ensure_export")?;
        let v = self.available_volume(&vol.name)?.volume;
        x.ensure(&self.export_volume(&v), &v)
    }

    fn remove_export(&self, vol: &Volume) -> Result<()> {
        vol.validate()?;
        let x = self.exporter("remove_export")?;
        let _l = self.lock_object(&vol.name)?;
        let v = self.available_volume(&vol.name)?.volume;
        x.remove(&self.export_volume(&v), false)?;
        self.update_volume(&vol.name, |r| {
            r.volume.provider_location = None;
            r.volume.provider_auth = None;
        })?;
        Ok(())
    }

    fn initialize_connection(&self, vol: &Volume, connector: &Connector) -> Result<ConnectionInfo> {
        vol.validate()?;
        let x = self.exporter("initialize_connection")?;
        let v = self.available_volume(&vol.name)?.volume;
        x.connect(&self.export_volume(&v), &v, connector)
    }

    fn terminate_connection(&self, vol: &Volume, connector: &Connector) -> Result<()> {
        vol.validate()?;
        let x = self.exporter("terminate_connection")?;
        let v = self.available_volume(&vol.name)?.volume;
        x.disconnect(&self.export_volume(&v), &v, connector)
    }

    fn attach_volume(&self, vol: &Volume, attachment: &Attachment) -> Result<()> {
        vol.validate()?;
        let _l = self.lock_object(&vol.name)?;
        let rec = self.available_volume(&vol.name)?;
        if rec.attachments.contains(attachment) {
            // The same host connecting again (Cinder retries, os-brick reconnects).
            return Ok(());
        }
        if !rec.volume.multiattach && !rec.attachments.is_empty() {
            return Err(DriverError::VolumeIsBusy {
                name: vol.name.clone(),
                reason: "already attached and not multiattach".into(),
            });
        }
        self.update_volume(&vol.name, |r| r.attachments.push(attachment.clone()))?;
        Ok(())
    }

    fn detach_volume(&self, vol: &Volume, attachment: &Attachment) -> Result<()> {
        vol.validate()?;
        let _l = self.lock_object(&vol.name)?;
        self.update_volume(&vol.name, |r| {
            if let Some(i) = r.attachments.iter().position(|a| a == attachment) {
                r.attachments.remove(i);
            } else if attachment == &Attachment::default() {
                r.attachments.clear();
            }
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

    fn data_layout(&self, vol: &Volume) -> Result<DataLayout> {
        vol.validate()?;
        self.check_ready()?;
        let v = self.available_volume(&vol.name)?.volume;
        Ok(DataLayout {
            spans: self.span(&v.name, v.size_bytes()),
            fresh_reads_zeros: true,
        })
    }
}

impl FileDriver {
    /// The data file a manage reference names and its size. Only plain file names inside the
    /// backend's data folder are accepted; managed volumes are refused.
    fn manage_target(&self, r: &ExistingRef) -> Result<(PathBuf, u64)> {
        let n = r.source_name.as_deref().ok_or_else(|| {
            DriverError::ManageExistingInvalidReference {
                reason: "missing \"source-name\"".into(),
            }
        })?;
        names::check_lvm_name("source-name", n).map_err(|e| {
            DriverError::ManageExistingInvalidReference {
                reason: e.to_string(),
            }
        })?;
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

/// Inspects an image for `clone_image`: raw (as inspected) and fitting `vol`; its length.
fn check_raw_image(image: &ImageFile, vol: &Volume) -> Result<Option<u64>> {
    let a = crate::image::inspect(image)?;
    if !matches!(a.reader, ember_engine::format::Reader::Raw) {
        return Ok(None);
    }
    if a.virtual_size.div_ceil(GIB) > vol.size {
        return Err(DriverError::ImageUnacceptable {
            path: image.path.clone(),
            reason: format!(
                "Image virtual size is {}GB and doesn't fit in a volume of size {}GB.",
                a.virtual_size.div_ceil(GIB),
                vol.size
            ),
        });
    }
    Ok(Some(a.virtual_size))
}
