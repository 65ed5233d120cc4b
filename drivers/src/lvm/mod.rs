//! The LVM backend: lvm2 through argument vectors and `--reportformat json` reports.
//!
//! Names follow Cinder's templates (`volume-<uuid>`, snapshots `_snapshot-<uuid>`) and are
//! validated before any command. Where device-mapper exists, volumes are used through
//! `/dev/<vg>/<lv>`, snapshots are native (`lvcreate -s`, thin snapshots in thin mode) and
//! revert merges (`lvconvert --merge`). Where it is absent (lvm2 runs metadata-only, activation
//! disabled), the driver maps every LV onto byte ranges of its PVs ([`layout`]) and the engine
//! moves the data there; snapshots are then full copies in their own LV (tagged with their
//! origin), revert copies back, thin is unavailable, and the stats say so.
//!
//! State lives in LVM itself (tags: `ember_name:<display name>`, `ember_origin:<volume uuid>`,
//! `ember_creating`, `ember_unmanaged`) plus a small state folder holding export models and
//! attachments (CHAP secrets cannot be tags) and the per-volume lock files, both through the
//! shared layer (`backend.rs`), which also provides the image, export and connection calls;
//! this module holds what only lvm2 does.

pub mod cmd;
pub mod layout;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::backend::{self, Backend, Common, ObjectLock, ObjectLocks, RecordDir};
use crate::config::{BackendConfig, LvmType};
use crate::data::{self, DataLayout, Layout, Span};
use crate::error::{DriverError, Result};
use crate::export::Exporter;
use crate::fsutil::{create_dirs, hostname, lock_path, Lock};
use crate::names::{self, GIB};
use crate::runner::{self, Runner};
use crate::stats::{gib, round2, PoolStats, VolumeStats};
use crate::types::*;
use crate::VolumeDriver;
use crate::{ConnectionInfo, Connector};

use layout::Geometry;
use report::{Lv, Vg};

/// Cinder's LVM driver version (reported for parity).
pub const DRIVER_VERSION: &str = "3.0.0";
/// Tag prefix holding a display name.
pub const TAG_NAME: &str = "ember_name";
/// Tag prefix naming a copy-snapshot's origin volume id.
pub const TAG_ORIGIN: &str = "ember_origin";
/// Tag of an LV whose data is still being written.
pub const TAG_CREATING: &str = "ember_creating";
/// Tag of an unmanaged volume.
pub const TAG_UNMANAGED: &str = "ember_unmanaged";
/// The lvm2 tools the driver runs.
pub const TOOLS: &[&str] = &[
    "lvs",
    "vgs",
    "pvs",
    "lvcreate",
    "lvremove",
    "lvrename",
    "lvextend",
    "lvchange",
    "lvconvert",
];

/// Export model and attachments of one volume (the part LVM tags cannot hold).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct VolumeState {
    provider_location: Option<String>,
    provider_auth: Option<String>,
    #[serde(default)]
    attachments: Vec<Attachment>,
}

/// The LVM driver.
pub struct LvmDriver {
    common: Common,
    vg: String,
    runner: Runner,
    /// device-mapper present: LVs can be activated and used as devices.
    dm: bool,
    state_dir: PathBuf,
    /// `<state>/state`: export model and attachments per volume.
    records: RecordDir,
    /// `<state>/locks`: per-LV locks (the LVs are the records, so lock files stay).
    locks: ObjectLocks,
    resolved_type: Mutex<Option<LvmType>>,
    /// Where the VG's extents lie, read once per driver ([`LvmDriver::layout`]).
    geometry: Mutex<Option<Geometry>>,
    /// A `vgs` or `lvs` of this driver found the VG ([`VolumeDriver::check_for_setup_error`]
    /// right after [`VolumeDriver::do_setup`] does not ask again).
    vg_found: AtomicBool,
}

/// True when the kernel offers device-mapper (LVs can be activated).
pub fn device_mapper_available() -> bool {
    Path::new("/dev/mapper/control").exists()
        && std::fs::read_to_string("/proc/misc").is_ok_and(|m| m.contains("device-mapper"))
}

impl LvmDriver {
    /// A driver for `cfg` (driver = "lvm"). `path` in the config is the state folder (default
    /// `/var/lib/ember/<backend>`); `lvm_conf_file`'s folder becomes `LVM_SYSTEM_DIR`.
    pub fn new(cfg: BackendConfig) -> Result<Self> {
        cfg.validate()?;
        let vg = cfg
            .volume_group
            .clone()
            .ok_or_else(|| DriverError::InvalidConfiguration("lvm needs volume_group".into()))?;
        let mut runner = Runner::new()
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .retry_on(139);
        if let Some(conf) = &cfg.lvm_conf_file {
            if conf.is_file() {
                if let Some(dir) = conf.parent() {
                    runner = runner.env("LVM_SYSTEM_DIR", dir);
                }
            }
        }
        let state_dir = cfg
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/ember").join(&cfg.name));
        Ok(LvmDriver {
            vg,
            runner,
            dm: device_mapper_available(),
            records: RecordDir::new(state_dir.join("state")),
            locks: ObjectLocks::new(state_dir.join("locks"), None),
            state_dir,
            resolved_type: Mutex::new(None),
            geometry: Mutex::new(None),
            vg_found: AtomicBool::new(false),
            common: Common {
                cfg,
                exporter: None,
            },
        })
    }

    /// Adds iSCSI exports.
    pub fn with_exporter(mut self, exporter: Arc<Exporter>) -> Self {
        self.common.exporter = Some(exporter);
        self
    }

    /// Overrides device-mapper detection (tests of the metadata-only path on a dm host).
    pub fn with_device_mapper(mut self, dm: bool) -> Self {
        self.dm = dm;
        self
    }

    /// The command runner (its call counter shows whether bad input reached lvm2).
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Whether LVs are used through device-mapper.
    pub fn uses_device_mapper(&self) -> bool {
        self.dm
    }

    fn lvm(&self, op: &'static str, args: &[&str]) -> Result<runner::Output> {
        let _g = self.lvm_lock()?;
        self.runner.run(op, args)
    }

    fn lvm_v(&self, op: &'static str, argv: Vec<String>) -> Result<runner::Output> {
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.lvm(op, &a)
    }

    /// An lvm2 JSON report: `tool_args`, then `--reportformat json --units b --nosuffix -o
    /// <fields> [target]`. `checked`: a failing command is an error; else the caller reads the
    /// failure (e.g. "not found").
    fn report(
        &self,
        op: &'static str,
        tool_args: &[&str],
        fields: &str,
        target: Option<&str>,
        checked: bool,
    ) -> Result<runner::Output> {
        let mut argv = tool_args.to_vec();
        argv.extend([
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            fields,
        ]);
        argv.extend(target);
        if checked {
            self.lvm(op, &argv)
        } else {
            self.lvm_output(op, &argv)
        }
    }

    fn lvm_output(&self, op: &'static str, args: &[&str]) -> Result<runner::Output> {
        let _g = self.lvm_lock()?;
        self.runner.output(op, args)
    }

    /// One lvm2 command of this backend at a time (threads and processes): lvm2's own VG lock
    /// does not stop a concurrent report from missing a VG whose metadata is being rewritten
    /// when activation is disabled. Commands are short; data copies run outside this lock.
    fn lvm_lock(&self) -> Result<Option<Lock>> {
        let dir = self.locks.dir();
        if !dir.is_dir() {
            return Ok(None);
        }
        lock_path(&dir.join(format!(".lvm-{}.lock", self.vg)), false)
    }

    /// Without device-mapper, writers of one PV are serialized: the engine opens a block device
    /// destination with O_EXCL, so two copies onto windows of the same PV cannot overlap in time.
    fn pv_locks(&self, dst: &[Span]) -> Result<Vec<Lock>> {
        if self.dm {
            return Ok(Vec::new());
        }
        let mut pvs: Vec<String> = dst
            .iter()
            .map(|s| s.path.display().to_string().replace('/', "_"))
            .collect();
        pvs.sort();
        pvs.dedup();
        let dir = self.locks.dir();
        pvs.iter()
            .map(|p| Ok(lock_path(&dir.join(format!(".pv{p}.lock")), false)?.expect("blocking")))
            .collect()
    }

    fn copy_data(&self, src: &[Span], dst: &[Span], len: u64, dest_zeroed: bool) -> Result<()> {
        let _g = self.pv_locks(dst)?;
        retry_busy(|| data::copy_layout(src, dst, len, self.common.copy_mode(dest_zeroed)))
    }

    fn wipe_data(&self, dst: &[Span], len: u64) -> Result<()> {
        let _g = self.pv_locks(dst)?;
        retry_busy(|| data::wipe_layout(dst, len, self.common.cfg.volume_copy_bps_limit))
    }

    /// Wipes `dst` past its first `from` bytes (see [`data::wipe_tail`]).
    fn wipe_tail(&self, dst: &[Span], from: u64) -> Result<()> {
        let _g = self.pv_locks(dst)?;
        retry_busy(|| data::wipe_tail(dst, from, self.common.cfg.volume_copy_bps_limit))
    }

    fn pool_name(&self) -> String {
        self.common
            .cfg
            .thin_pool
            .clone()
            .unwrap_or_else(|| format!("{}-pool", self.vg))
    }

    fn lv_path(&self, lv: &str) -> String {
        format!("{}/{lv}", self.vg)
    }

    fn lvm_type(&self) -> Result<LvmType> {
        if let Some(t) = *self.resolved_type.lock().expect("lock poisoned") {
            return Ok(t);
        }
        let t = match self.common.cfg.lvm_type {
            // Thin needs device-mapper: without it, no pool to look for.
            LvmType::Auto => {
                if self.dm
                    && (self.lv(&self.pool_name())?.is_some() || self.vg_info()?.lv_count == 0)
                {
                    LvmType::Thin
                } else {
                    LvmType::Default
                }
            }
            t => t,
        };
        *self.resolved_type.lock().expect("lock poisoned") = Some(t);
        Ok(t)
    }

    fn thin(&self) -> Result<bool> {
        Ok(self.lvm_type()? == LvmType::Thin)
    }

    // ---- reports ----

    fn vg_not_found(&self) -> DriverError {
        DriverError::NotFound {
            what: "volume group",
            name: self.vg.clone(),
        }
    }

    /// A report over the whole VG (`args` then the VG's name): lvm2 saying the VG is not
    /// found is [`Self::vg_not_found`], any other failure a command error.
    fn vg_report(&self, op: &'static str, args: &[&str], fields: &str) -> Result<runner::Output> {
        let out = self.report(op, args, fields, Some(&self.vg), false)?;
        if !out.success() {
            if out.stderr.contains("not found") {
                return Err(self.vg_not_found());
            }
            return Err(runner::command_error(
                op,
                &[args, &[&self.vg]].concat(),
                &out,
            ));
        }
        Ok(out)
    }

    fn vg_info(&self) -> Result<Vg> {
        let out = self.vg_report("vgs", &["vgs"], report::VGS_FIELDS)?;
        let vg = report::parse_vgs(&out.stdout)?
            .into_iter()
            .find(|v| v.name == self.vg)
            .ok_or_else(|| self.vg_not_found())?;
        self.vg_found.store(true, Ordering::Relaxed);
        Ok(vg)
    }

    /// Every LV of the VG, hidden ones too, with its segments; a missing VG is
    /// [`DriverError::NotFound`], as from [`Self::vg_info`].
    fn lvs(&self) -> Result<Vec<Lv>> {
        let args = ["lvs", "-a", "--segments", "-O", report::LVS_ORDER];
        let out = self.vg_report("lvs", &args, report::LVS_FIELDS)?;
        let lvs = report::parse_lvs(&out.stdout)?;
        self.vg_found.store(true, Ordering::Relaxed);
        Ok(lvs)
    }

    /// The LV `name` with its segments, `None` when there is none.
    fn lv(&self, name: &str) -> Result<Option<Lv>> {
        let target = self.lv_path(name);
        let out = self.report(
            "lvs",
            &["lvs", "--segments", "-O", report::LVS_ORDER],
            report::LVS_FIELDS,
            Some(&target),
            false,
        )?;
        if !out.success() {
            if out.stderr.contains("Failed to find") || out.stderr.contains("not found") {
                return Ok(None);
            }
            return Err(runner::command_error("lvs", &["lvs", &target], &out));
        }
        Ok(report::parse_lvs(&out.stdout)?
            .into_iter()
            .find(|l| l.name == name))
    }

    /// Refuses a volume whose LV exists already; the tags a new LV for it carries.
    fn new_volume_tags(&self, vol: &Volume) -> Result<Vec<String>> {
        if self.lv(&vol.name)?.is_some() {
            return Err(DriverError::AlreadyExists {
                what: "volume",
                name: vol.name.clone(),
            });
        }
        Ok(name_tag(vol.display_name.as_deref()).into_iter().collect())
    }

    fn must_lv(&self, what: &'static str, name: &str) -> Result<Lv> {
        match self.lv(name)? {
            Some(l) if !l.has_tag(TAG_CREATING) => Ok(l),
            _ => Err(DriverError::NotFound {
                what,
                name: name.to_owned(),
            }),
        }
    }

    /// The bytes of an LV: its device node with device-mapper, else its PV byte ranges, from
    /// the segments its report carries and the VG's geometry.
    ///
    /// The geometry is read once per driver (one `pvs`): LV commands cannot change it, and a
    /// driver serves one CLI command. A PV added to the VG since is not in it: the mapping
    /// fails and the geometry is read again once. A changed extent size shows as segments
    /// whose extents do not add up to their size, and is refused. What it cannot see is a PV
    /// taken out of the VG and another one made under the same device path and added back
    /// while the driver lives (vgreduce, pvcreate, vgextend): its `pe_start` may differ. That
    /// needs an administrator to rebuild the VG's devices under a running command, which
    /// before this cache would have gone wrong the same way during the command's copy (a
    /// copy maps its LV once, then moves data for seconds); a driver kept for longer than one
    /// command should be made anew after such work.
    pub fn layout(&self, lv: &Lv) -> Result<Vec<Span>> {
        if self.dm {
            return Ok(vec![Span {
                path: PathBuf::from(format!("/dev/{}/{}", self.vg, lv.name)),
                offset: 0,
                len: lv.size,
            }]);
        }
        let map = |geo: &Geometry| -> Result<Vec<Span>> {
            let spans = layout::lv_spans(lv, geo)?;
            if data::layout_len(&spans) != lv.size {
                return Err(DriverError::BadOutput {
                    op: "map LV onto PVs",
                    command: "lvs --segments".into(),
                    reason: format!(
                        "segments of {} cover {} bytes, LV is {}",
                        lv.name,
                        data::layout_len(&spans),
                        lv.size
                    ),
                });
            }
            Ok(spans)
        };
        let (geo, cached) = self.geometry(false)?;
        match map(&geo) {
            Err(_) if cached => map(&self.geometry(true)?.0),
            r => r,
        }
    }

    /// The VG's geometry and whether it was read earlier; `fresh` reads it again.
    fn geometry(&self, fresh: bool) -> Result<(Geometry, bool)> {
        let mut known = self.geometry.lock().expect("lock poisoned");
        if let Some(g) = known.as_ref().filter(|_| !fresh) {
            return Ok((g.clone(), true));
        }
        let out = self.report("pvs", &["pvs"], report::PVS_FIELDS, None, true)?;
        let geo = Geometry::of_vg(&self.vg, report::parse_pvs(&out.stdout)?)?;
        *known = Some(geo.clone());
        Ok((geo, false))
    }

    // ---- commands ----

    /// Creates an LV of `size_gb` GiB with `tags`; thick or thin per lvm_type. Without
    /// device-mapper its bytes are whatever the PVs held there: callers write all of it (a
    /// copy) or wipe its start ([`Self::create_volume`]).
    fn create_lv(&self, name: &str, size_gb: u64, tags: &[String]) -> Result<()> {
        let argv = if self.thin()? {
            cmd::create_thin(&self.vg, &self.pool_name(), name, size_gb, tags)
        } else {
            cmd::create_thick(&self.vg, name, size_gb, tags, !self.dm)
        };
        self.lvm_v("lvcreate", argv)?;
        Ok(())
    }

    /// Creates `vol` holding the first `copy_len` bytes of `src` (a clone, or a volume from a
    /// snapshot LV, which `activate_src` activates): a thin snapshot grown to `vol.size` with
    /// device-mapper and thin LVs, else an engine copy into a new LV.
    fn create_from_lv(
        &self,
        vol: &Volume,
        src: &Lv,
        copy_len: u64,
        activate_src: bool,
    ) -> Result<Option<ModelUpdate>> {
        let tags = self.new_volume_tags(vol)?;
        if self.dm && self.thin()? {
            self.lvm_v(
                "lvcreate --snapshot",
                cmd::snapshot(&self.vg, &src.name, &vol.name, None, &tags),
            )?;
            if vol.size_bytes() > src.size {
                self.extend_lv(&vol.name, vol.size)?;
            }
            if activate_src {
                self.activate(&src.name, true)?;
            }
            self.activate(&vol.name, true)?;
            return Ok(None);
        }
        if activate_src {
            self.activate(&src.name, false)?;
        }
        self.create_copy(&vol.name, vol.size, tags, src, copy_len)?;
        Ok(None)
    }

    fn remove_lv(&self, name: &str) -> Result<()> {
        self.lvm_v("lvremove", cmd::remove(&self.vg, name))?;
        Ok(())
    }

    fn del_tag(&self, name: &str, tag: &str) -> Result<()> {
        let target = self.lv_path(name);
        self.lvm("lvchange --deltag", &["lvchange", "--deltag", tag, &target])?;
        Ok(())
    }

    fn add_tag(&self, name: &str, tag: &str) -> Result<()> {
        let target = self.lv_path(name);
        self.lvm("lvchange --addtag", &["lvchange", "--addtag", tag, &target])?;
        Ok(())
    }

    fn extend_lv(&self, name: &str, size_gb: u64) -> Result<()> {
        self.lvm_v("lvextend", cmd::extend(&self.vg, name, size_gb))?;
        Ok(())
    }

    fn activate(&self, name: &str, permanent: bool) -> Result<()> {
        if !self.dm {
            return Ok(());
        }
        self.lvm_v("lvchange -a y", cmd::activate(&self.vg, name, permanent))?;
        Ok(())
    }

    /// Wipes the first `volume_clear_size` MiB (or all) of a thick LV's bytes, as configured.
    fn clear(&self, lay: &[Span], len: u64) -> Result<()> {
        let Some(n) = self.common.clear_len(len) else {
            return Ok(());
        };
        tracing::info!(bytes = n, "performing secure delete");
        self.wipe_data(lay, n)
    }

    /// Creates `name` (`size_gb`) holding the first `len` bytes of `src`, marked `creating`
    /// until the copy is complete; removed again on failure.
    fn create_copy(
        &self,
        name: &str,
        size_gb: u64,
        mut tags: Vec<String>,
        src: &Lv,
        len: u64,
    ) -> Result<()> {
        let src_lay = self.layout(src)?;
        tags.push(TAG_CREATING.into());
        self.create_lv(name, size_gb, &tags)?;
        let res = (|| {
            let lv = self
                .lv(name)?
                .ok_or_else(|| DriverError::volume_not_found(name))?;
            let dst = self.layout(&lv)?;
            // A thin LV reads as zeros; a thick one is not known to be zero: holes get written,
            // and so does the tail past the source (a bigger clone or volume from snapshot).
            let zeroed = self.thin()?;
            let len = len.min(src.size);
            self.copy_data(&src_lay, &dst, len, zeroed)?;
            if !zeroed {
                self.wipe_tail(&dst, len)?;
            }
            self.del_tag(name, TAG_CREATING)
        })();
        if let Err(e) = res {
            let _ = self.remove_lv(name);
            return Err(e);
        }
        Ok(())
    }

    fn lock(&self, name: &str) -> Result<ObjectLock> {
        self.locks.lock(name)
    }

    fn state(&self, name: &str) -> Result<VolumeState> {
        Ok(self.records.read(name)?.unwrap_or_default())
    }

    fn set_state(&self, name: &str, st: &VolumeState) -> Result<()> {
        self.records.write(name, st)
    }

    fn drop_state(&self, name: &str) -> Result<()> {
        self.records.remove(name)
    }

    fn check_vg_ready(&self) -> Result<()> {
        if !self.state_dir.join("locks").is_dir() {
            return Err(DriverError::InvalidConfiguration(format!(
                "LVM backend {:?} is not set up (run do_setup)",
                self.common.cfg.name
            )));
        }
        Ok(())
    }

    /// Snapshots of `vol_id` (native ones by origin, copy-snapshots by tag).
    fn snapshots_of(&self, lvs: &[Lv], vol: &Volume) -> Vec<String> {
        let id = vol.id.to_string();
        lvs.iter()
            .filter(|l| l.name.starts_with("_snapshot-"))
            .filter(|l| l.origin == vol.name || l.tag_value(TAG_ORIGIN) == Some(&id))
            .map(|l| l.name.clone())
            .collect()
    }

    fn export_volume(&self, vol: &Volume, lv: &Lv) -> Result<ember_target::ExportVolume> {
        if self.dm {
            return Ok(ember_target::ExportVolume::whole(
                vol.id.to_string(),
                vol.name.clone(),
                format!("/dev/{}/{}", self.vg, vol.name),
                lv.size,
            ));
        }
        let lay = self.layout(lv)?;
        if lay.len() != 1 {
            return Err(DriverError::NotSupported {
                op: "export",
                reason: format!(
                    "{} spans {} PV ranges; without device-mapper only a single-range LV can be exported",
                    vol.name,
                    lay.len()
                ),
            });
        }
        Ok(ember_target::ExportVolume {
            id: vol.id.to_string(),
            name: vol.name.clone(),
            backing_path: lay[0].path.clone(),
            size_bytes: lv.size,
            backing_offset: lay[0].offset,
            backing_len: Some(lay[0].len),
        })
    }

    fn with_state(&self, vol: &Volume) -> Result<Volume> {
        let st = self.state(&vol.name)?;
        Ok(Volume {
            provider_location: st.provider_location,
            provider_auth: st.provider_auth,
            ..vol.clone()
        })
    }

    fn volume_from_lv(&self, lv: &Lv) -> Option<Volume> {
        let id = names::check_volume_name(&lv.name).ok()?;
        if lv.has_tag(TAG_CREATING) || lv.has_tag(TAG_UNMANAGED) {
            return None;
        }
        Some(Volume {
            id,
            name: lv.name.clone(),
            size: lv.size.div_ceil(GIB).max(1),
            display_name: lv.tag_value(TAG_NAME).map(str::to_owned),
            provider_location: None,
            provider_auth: None,
            multiattach: false,
        })
    }

    fn manage_lv(&self, r: &ExistingRef) -> Result<Lv> {
        let n = backend::manage_source_name(r)?;
        let lv = self
            .lv(n)?
            .ok_or_else(|| DriverError::ManageExistingInvalidReference {
                reason: format!("no LV {n:?} in volume group {}", self.vg),
            })?;
        if let Ok(id) = names::check_volume_name(n) {
            if !lv.has_tag(TAG_UNMANAGED) {
                return Err(DriverError::ManageExistingAlreadyManaged {
                    name: n.to_owned(),
                    id: id.to_string(),
                });
            }
        }
        if n.starts_with("_snapshot-") || lv.has_tag(TAG_CREATING) {
            return Err(DriverError::ManageExistingAlreadyManaged {
                name: n.to_owned(),
                id: n.trim_start_matches('_').to_owned(),
            });
        }
        if lv.is_thin_pool() || lv.is_internal() || lv.is_snapshot() || n == self.pool_name() {
            return Err(DriverError::ManageExistingInvalidReference {
                reason: format!("{n} is a pool, snapshot or internal LV"),
            });
        }
        Ok(lv)
    }
}

impl VolumeDriver for LvmDriver {
    backend::shared_driver_methods!();

    fn do_setup(&self) -> Result<()> {
        create_dirs(&[
            self.state_dir.clone(),
            self.locks.dir().to_owned(),
            self.records.dir().to_owned(),
        ])?;
        // The rollback scan's listing below finds the VG (or fails on its absence): no vgs.
        let lvs = self.lvs()?;
        if self.thin()? && self.dm && self.lv(&self.pool_name())?.is_none() {
            // Cinder: pool sized 95% of the VG's free space, the rest for pool metadata.
            let free = self.vg_info()?.free as f64 / GIB as f64;
            let size = (free * 0.95 * 100.0).floor() / 100.0;
            self.lvm_v(
                "lvcreate -T",
                cmd::create_pool(&self.vg, &self.pool_name(), size),
            )?;
        }
        // Roll back creates interrupted by a crash (their lock is free). The listing was taken
        // before the lock: the create may have finished or rolled itself back since, so the LV
        // is looked up again under the lock, and only that answer is wiped.
        for listed in lvs.iter().filter(|l| l.has_tag(TAG_CREATING)) {
            let Some(_l) = self.locks.try_lock(&listed.name)? else {
                continue;
            };
            let Some(lv) = self.lv(&listed.name)?.filter(|l| l.has_tag(TAG_CREATING)) else {
                continue;
            };
            tracing::warn!(lv = %lv.name, "removing an LV whose create was interrupted");
            if !self.thin()? {
                let lay = self.layout(&lv)?;
                self.clear(&lay, lv.size)?;
            }
            self.remove_lv(&lv.name)?;
        }
        Ok(())
    }

    fn check_for_setup_error(&self) -> Result<()> {
        for t in TOOLS {
            if runner::find_tool(t).is_none() {
                return Err(DriverError::InvalidConfiguration(format!(
                    "LVM backend {:?}: lvm2 tool {t} is not installed",
                    self.common.cfg.name
                )));
            }
        }
        // do_setup of this driver has just found it, or this asks.
        let found = if self.vg_found.load(Ordering::Relaxed) {
            Ok(())
        } else {
            self.vg_info().map(drop)
        };
        match found {
            Ok(()) => {}
            Err(DriverError::NotFound { .. }) => {
                return Err(DriverError::InvalidConfiguration(format!(
                    "LVM backend {:?}: volume group {:?} does not exist (vgs cannot find it)",
                    self.common.cfg.name, self.vg
                )))
            }
            Err(e) => return Err(e),
        }
        if self.common.cfg.lvm_type == LvmType::Thin && !self.dm {
            return Err(DriverError::InvalidConfiguration(format!(
                "LVM backend {:?}: lvm_type = thin needs device-mapper, which this kernel lacks \
                 (use lvm_type = default: thick volumes work metadata-only)",
                self.common.cfg.name
            )));
        }
        if self.thin()? && self.lv(&self.pool_name())?.is_none() {
            return Err(DriverError::InvalidConfiguration(format!(
                "LVM backend {:?}: thin pool {}/{} does not exist",
                self.common.cfg.name,
                self.vg,
                self.pool_name()
            )));
        }
        self.check_vg_ready()
    }

    fn get_volume_stats(&self, _refresh: bool) -> Result<VolumeStats> {
        let vg = self.vg_info()?;
        let lvs = self.lvs()?;
        let thin = self.thin()?;
        let pool_name = self.pool_name();
        let visible: Vec<&Lv> = lvs
            .iter()
            .filter(|l| !l.is_internal() && !l.is_thin_pool() && l.name != pool_name)
            .collect();
        let (total, free, provisioned) = if thin {
            let pool =
                lvs.iter()
                    .find(|l| l.name == pool_name)
                    .ok_or_else(|| DriverError::NotFound {
                        what: "thin pool",
                        name: pool_name.clone(),
                    })?;
            let total = gib(pool.size);
            let used = total * pool.data_percent.unwrap_or(0.0) / 100.0;
            let prov: u64 = visible.iter().map(|l| l.size).sum();
            (total, round2(total - used), gib(prov))
        } else {
            let total = gib(vg.size);
            let free = gib(vg.free);
            (total, free, round2(total - free))
        };
        let lvm_type = self.lvm_type()?;
        let pool = PoolStats {
            pool_name: self.common.cfg.name.clone(),
            total_capacity_gb: total,
            free_capacity_gb: free,
            reserved_percentage: self.common.cfg.reserved_percentage,
            location_info: format!(
                "LVMVolumeDriver:{}:{}:{}:0",
                hostname(),
                self.vg,
                lvm_type.as_str()
            ),
            qos_support: false,
            provisioned_capacity_gb: provisioned,
            max_over_subscription_ratio: self.common.cfg.max_over_subscription_ratio.clone(),
            thin_provisioning_support: thin,
            thick_provisioning_support: !thin,
            total_volumes: visible.len() as u64,
            filter_function: self.common.cfg.filter_function.clone(),
            goodness_function: self.common.cfg.goodness_function.clone(),
            multiattach: true,
            backend_state: "up".into(),
        };
        let mut s = VolumeStats::single_pool(
            &self.common.cfg.name,
            DRIVER_VERSION,
            "iSCSI",
            thin,
            true,
            pool,
        );
        let mut extra = BTreeMap::new();
        extra.insert("ember_device_mapper".into(), self.dm.into());
        extra.insert(
            "ember_snapshot_type".into(),
            (if self.dm { "native" } else { "full-copy" }).into(),
        );
        extra.insert(
            "ember_data_path".into(),
            (if self.dm { "device" } else { "pv-extents" }).into(),
        );
        s.extra = extra;
        Ok(s)
    }

    fn create_volume(&self, vol: &Volume) -> Result<Option<ModelUpdate>> {
        vol.validate()?;
        self.check_vg_ready()?;
        let _l = self.lock(&vol.name)?;
        let mut tags = self.new_volume_tags(vol)?;
        tags.insert(0, TAG_CREATING.to_owned());
        self.create_lv(&vol.name, vol.size, &tags)?;
        let res = (|| {
            if !self.dm {
                // lvcreate zeroes the start of a new LV where it can (-Zy); do the same here
                // so no old filesystem signature shows through a new volume.
                let lv = self
                    .lv(&vol.name)?
                    .ok_or_else(|| DriverError::volume_not_found(&vol.name))?;
                self.wipe_data(&self.layout(&lv)?, 4096.min(lv.size))?;
            }
            self.del_tag(&vol.name, TAG_CREATING)
        })();
        if let Err(e) = res {
            let _ = self.remove_lv(&vol.name);
            return Err(e);
        }
        Ok(None)
    }

    fn delete_volume(&self, vol: &Volume) -> Result<()> {
        vol.validate()?;
        self.check_vg_ready()?;
        let _l = self.lock(&vol.name)?;
        let lvs = self.lvs()?;
        let Some(lv) = lvs.iter().find(|l| l.name == vol.name) else {
            tracing::info!(volume = %vol.name, "already gone");
            return Ok(());
        };
        let snaps = self.snapshots_of(&lvs, vol);
        if !snaps.is_empty() || lv.has_snapshots() {
            return Err(DriverError::VolumeIsBusy {
                name: vol.name.clone(),
                reason: format!("it has snapshots: {}", snaps.join(", ")),
            });
        }
        let st = self.state(&vol.name)?;
        if !st.attachments.is_empty() || lv.is_open() {
            return Err(DriverError::VolumeIsBusy {
                name: vol.name.clone(),
                reason: "it is attached or open".into(),
            });
        }
        if st.provider_location.is_some() {
            if let Some(x) = &self.common.exporter {
                x.remove(&self.export_volume(vol, lv)?, true)?;
            }
        }
        // Thin volumes are not wiped: the pool zeroes new blocks.
        if !self.thin()? {
            let lay = self.layout(lv)?;
            self.clear(&lay, lv.size)?;
        }
        self.remove_lv(&vol.name)?;
        self.drop_state(&vol.name)
    }

    fn create_snapshot(&self, snap: &Snapshot) -> Result<Option<ModelUpdate>> {
        snap.validate()?;
        self.check_vg_ready()?;
        let lv_name = names::lvm_snapshot_name(&snap.name)?;
        let _l = self.locks.lock_all(&[&snap.volume_name, &lv_name])?;
        let origin = self.must_lv("volume", &snap.volume_name)?;
        if self.lv(&lv_name)?.is_some() {
            return Err(DriverError::AlreadyExists {
                what: "snapshot",
                name: snap.name.clone(),
            });
        }
        let mut tags = vec![format!("{TAG_ORIGIN}:{}", snap.volume_id)];
        tags.extend(name_tag(snap.display_name.as_deref()));
        let size_gb = origin.size.div_ceil(GIB).max(1);
        if self.dm {
            let cow = (!self.thin()?).then_some(size_gb);
            self.lvm_v(
                "lvcreate --snapshot",
                cmd::snapshot(&self.vg, &snap.volume_name, &lv_name, cow, &tags),
            )?;
        } else {
            // No device-mapper: a snapshot is a full, sparse-aware copy in its own LV.
            self.create_copy(&lv_name, size_gb, tags, &origin, origin.size)?;
        }
        Ok(None)
    }

    fn delete_snapshot(&self, snap: &Snapshot) -> Result<()> {
        snap.validate()?;
        self.check_vg_ready()?;
        let lv_name = names::lvm_snapshot_name(&snap.name)?;
        let _l = self.locks.lock_all(&[&snap.volume_name, &lv_name])?;
        let Some(lv) = self.lv(&lv_name)? else {
            tracing::warn!(snapshot = %snap.name, "snapshot not found, treating as deleted");
            return Ok(());
        };
        if !self.thin()? {
            if lv.is_snapshot() {
                // A native thick snapshot: wipe its COW area, never the origin view.
                let cow = PathBuf::from(format!(
                    "/dev/mapper/{}-{}-cow",
                    self.vg.replace('-', "--"),
                    lv_name.replace('-', "--")
                ));
                if cow.exists() {
                    let len = std::fs::metadata(&cow).map(|m| m.len()).unwrap_or(0);
                    let lay = vec![Span {
                        path: cow,
                        offset: 0,
                        len: if len > 0 { len } else { lv.size },
                    }];
                    self.clear(&lay, lv.size)?;
                }
            } else {
                let lay = self.layout(&lv)?;
                self.clear(&lay, lv.size)?;
            }
        }
        self.remove_lv(&lv_name)
    }

    fn create_volume_from_snapshot(
        &self,
        vol: &Volume,
        snap: &Snapshot,
    ) -> Result<Option<ModelUpdate>> {
        vol.validate()?;
        snap.validate()?;
        self.check_vg_ready()?;
        let snap_lv = names::lvm_snapshot_name(&snap.name)?;
        let _l = self.locks.lock_all(&[&snap_lv, &vol.name])?;
        let s = self.must_lv("snapshot", &snap_lv)?;
        if vol.size_bytes() < s.size.min(snap.size_bytes()) {
            return Err(DriverError::invalid(format!(
                "volume size {} GiB is smaller than the snapshot's {} GiB",
                vol.size, snap.volume_size
            )));
        }
        self.create_from_lv(vol, &s, snap.size_bytes(), true)
    }

    fn create_cloned_volume(&self, vol: &Volume, src: &Volume) -> Result<Option<ModelUpdate>> {
        backend::check_clone(vol, src)?;
        self.check_vg_ready()?;
        let _l = self.locks.lock_all(&[&src.name, &vol.name])?;
        let s = self.must_lv("volume", &src.name)?;
        if vol.size_bytes() < s.size {
            return Err(DriverError::invalid(format!(
                "volume size {} GiB is smaller than the source's {} bytes",
                vol.size, s.size
            )));
        }
        self.create_from_lv(vol, &s, s.size, false)
    }

    fn extend_volume(&self, vol: &Volume, new_size: u64) -> Result<()> {
        vol.validate()?;
        names::check_size_gb(new_size)?;
        self.check_vg_ready()?;
        let _l = self.lock(&vol.name)?;
        let lv = self.must_lv("volume", &vol.name)?;
        if new_size * GIB < lv.size {
            return Err(DriverError::invalid(format!(
                "new size {new_size} GiB is smaller than the current {} bytes",
                lv.size
            )));
        }
        if new_size * GIB == lv.size {
            return Ok(());
        }
        self.extend_lv(&vol.name, new_size)?;
        let v = self.with_state(vol)?;
        if v.provider_location.is_some() {
            if let Some(x) = &self.common.exporter {
                let lv = self.must_lv("volume", &vol.name)?;
                let v = Volume {
                    size: new_size,
                    ..v
                };
                x.extend(&self.export_volume(&v, &lv)?, &v)?;
            }
        }
        Ok(())
    }

    fn revert_to_snapshot(&self, vol: &Volume, snap: &Snapshot) -> Result<()> {
        backend::check_revert(vol, snap)?;
        self.check_vg_ready()?;
        let snap_lv = names::lvm_snapshot_name(&snap.name)?;
        let _l = self.locks.lock_all(&[&vol.name, &snap_lv])?;
        let v = self.must_lv("volume", &vol.name)?;
        let s = self.must_lv("snapshot", &snap_lv)?;
        if self.dm && !self.thin()? && s.is_snapshot() {
            // Native thick: merge (destroys the snapshot), re-activate, re-create the snapshot.
            self.lvm_v("lvconvert --merge", cmd::merge(&self.vg, &snap_lv))?;
            let vp = self.lv_path(&vol.name);
            self.lvm("lvchange -a n", &["lvchange", "-a", "n", &vp])?;
            self.activate(&vol.name, false)?;
            let tags = [format!("{TAG_ORIGIN}:{}", snap.volume_id)];
            self.lvm_v(
                "lvcreate --snapshot",
                cmd::snapshot(&self.vg, &vol.name, &snap_lv, Some(snap.volume_size), &tags),
            )?;
            return Ok(());
        }
        // No native revert here: copy the snapshot back through the engine. The volume is
        // thick (or thin, not known to hold zeros): holes are written as zeros.
        let src = self.layout(&s)?;
        let dst = self.layout(&v)?;
        let len = s.size.min(v.size);
        self.copy_data(&src, &dst, len, false)?;
        // Bytes past the snapshot's size did not exist in it: they read as zeros after revert.
        self.wipe_tail(&dst, len)
    }

    fn clone_image(&self, vol: &Volume, _image: &ImageFile) -> Result<CloneImageResult> {
        vol.validate()?;
        // As Cinder's LVM driver: no efficient path, fall back to copy_image_to_volume.
        Ok(CloneImageResult::default())
    }

    fn manage_existing(
        &self,
        vol: &Volume,
        existing_ref: &ExistingRef,
    ) -> Result<Option<ModelUpdate>> {
        vol.validate()?;
        self.check_vg_ready()?;
        let lv = self.manage_lv(existing_ref)?;
        let _l = self.lock(&vol.name)?;
        if lv.name != vol.name {
            if self.lv(&vol.name)?.is_some() {
                return Err(DriverError::AlreadyExists {
                    what: "volume",
                    name: vol.name.clone(),
                });
            }
            self.lvm_v("lvrename", cmd::rename(&self.vg, &lv.name, &vol.name))?;
        }
        if lv.has_tag(TAG_UNMANAGED) {
            self.del_tag(&vol.name, TAG_UNMANAGED)?;
        }
        if let Some(old) = lv.tags.iter().find(|t| t.starts_with(TAG_NAME)) {
            self.del_tag(&vol.name, old)?;
        }
        if let Some(n) = &vol.display_name {
            self.add_tag(&vol.name, &name_tag(Some(n)).expect("a name"))?;
        }
        Ok(None)
    }

    fn manage_existing_get_size(&self, _vol: &Volume, existing_ref: &ExistingRef) -> Result<u64> {
        let lv = self.manage_lv(existing_ref)?;
        Ok(lv.size.div_ceil(GIB).max(1))
    }

    fn get_manageable_volumes(&self) -> Result<Vec<ManageableVolume>> {
        let pool = self.pool_name();
        let mut out = Vec::new();
        for lv in self.lvs()? {
            if lv.is_internal() || lv.is_thin_pool() || lv.name == pool {
                continue;
            }
            if lv.name.starts_with("_snapshot-") {
                continue;
            }
            let managed = names::check_volume_name(&lv.name)
                .ok()
                .filter(|_| !lv.has_tag(TAG_UNMANAGED));
            let reason = if managed.is_some() {
                Some("already managed".to_owned())
            } else if lv.is_open() {
                Some("volume in use".to_owned())
            } else if lv.is_snapshot() {
                Some("snapshot".to_owned())
            } else {
                None
            };
            out.push(ManageableVolume {
                reference: ExistingRef::source_name(&lv.name),
                size: lv.size.div_ceil(GIB).max(1),
                safe_to_manage: reason.is_none(),
                reason_not_safe: reason,
                cinder_id: managed,
                extra_info: None,
            });
        }
        Ok(out)
    }

    fn unmanage(&self, vol: &Volume) -> Result<()> {
        vol.validate()?;
        self.check_vg_ready()?;
        let _l = self.lock(&vol.name)?;
        self.must_lv("volume", &vol.name)?;
        self.add_tag(&vol.name, TAG_UNMANAGED)?;
        self.drop_state(&vol.name)
    }

    fn attach_volume(&self, vol: &Volume, attachment: &Attachment) -> Result<()> {
        vol.validate()?;
        self.check_vg_ready()?;
        let _l = self.lock(&vol.name)?;
        self.must_lv("volume", &vol.name)?;
        let mut st = self.state(&vol.name)?;
        // LVs carry no multiattach flag: any number of attachments is recorded.
        if backend::attach(&mut st.attachments, attachment, &vol.name, false)? {
            self.set_state(&vol.name, &st)?;
        }
        Ok(())
    }

    fn detach_volume(&self, vol: &Volume, attachment: &Attachment) -> Result<()> {
        vol.validate()?;
        self.check_vg_ready()?;
        let _l = self.lock(&vol.name)?;
        let mut st = self.state(&vol.name)?;
        backend::detach(&mut st.attachments, attachment);
        self.set_state(&vol.name, &st)
    }

    fn list_volumes(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for lv in self.lvs()? {
            if let Some(v) = self.volume_from_lv(&lv) {
                out.push(self.with_state(&v)?);
            }
        }
        Ok(out)
    }

    fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        let lvs = self.lvs()?;
        let mut out = Vec::new();
        for lv in &lvs {
            let Some(rest) = lv.name.strip_prefix('_') else {
                continue;
            };
            let Ok(id) = names::check_snapshot_name(rest) else {
                continue;
            };
            if lv.has_tag(TAG_CREATING) {
                continue;
            }
            let vid = if let Ok(v) = names::check_volume_name(&lv.origin) {
                v
            } else if let Some(v) = lv
                .tag_value(TAG_ORIGIN)
                .and_then(|s| Uuid::try_parse(s).ok())
            {
                v
            } else {
                continue;
            };
            let origin_size = lvs
                .iter()
                .find(|l| l.name == names::volume_name(&vid))
                .map(|l| l.size)
                .unwrap_or(lv.size);
            let size = if lv.is_snapshot() {
                origin_size
            } else {
                lv.size
            };
            out.push(Snapshot {
                id,
                name: rest.to_owned(),
                volume_id: vid,
                volume_name: names::volume_name(&vid),
                volume_size: size.div_ceil(GIB).max(1),
                display_name: lv.tag_value(TAG_NAME).map(str::to_owned),
            });
        }
        Ok(out)
    }
}

impl Backend for LvmDriver {
    fn common(&self) -> &Common {
        &self.common
    }

    fn check_ready(&self) -> Result<()> {
        self.check_vg_ready()
    }

    fn lock_volume(&self, name: &str) -> Result<ObjectLock> {
        self.lock(name)
    }

    /// The caller's volume (LVM keeps only the LV's size) and the LV's bytes.
    fn volume_layout(&self, vol: &Volume) -> Result<(Volume, Layout)> {
        let lv = self.must_lv("volume", &vol.name)?;
        Ok((vol.clone(), self.layout(&lv)?))
    }

    /// A thin LV reads as zeros; a thick one may hold what its extents held before.
    fn fresh_reads_zeros(&self) -> Result<bool> {
        self.thin()
    }

    fn staging_dir(&self) -> PathBuf {
        self.state_dir.join("staging")
    }

    /// Writers of one PV take turns; a destination still claimed by the previous copy is
    /// retried ([`retry_busy`]).
    fn write_to(&self, dst: &[Span], f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let _g = self.pv_locks(dst)?;
        retry_busy(f)
    }

    fn export_target(&self, vol: &Volume) -> Result<(Volume, ember_target::ExportVolume)> {
        let lv = self.must_lv("volume", &vol.name)?;
        let v = self.with_state(vol)?;
        let x = self.export_volume(&v, &lv)?;
        Ok((v, x))
    }

    fn prepare_export(&self, name: &str) -> Result<()> {
        self.activate(name, false)
    }

    fn set_provider(&self, name: &str, model: &ModelUpdate) -> Result<()> {
        let mut st = self.state(name)?;
        st.provider_location = model.provider_location.clone();
        st.provider_auth = model.provider_auth.clone();
        self.set_state(name, &st)
    }
}

/// The LV tag recording a display name.
fn name_tag(display_name: Option<&str>) -> Option<String> {
    display_name.map(|n| format!("{TAG_NAME}:{n}"))
}

/// Retries an engine call refused because its block device destination is still claimed: the
/// O_EXCL claim of a previous copy onto the same PV is released asynchronously (io_uring drops
/// its file references after the ring is gone), so a next writer can see EBUSY for a moment.
/// Nothing was written when the open is refused, so the retry is safe.
fn retry_busy(mut f: impl FnMut() -> Result<()>) -> Result<()> {
    let mut tries = 0;
    loop {
        match f() {
            Err(DriverError::Engine(e)) if tries < 100 && e.to_string().contains("is in use") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}
