//! The LIO (Linux kernel target) implementation of [`TargetHelper`], through configfs
//! (`/sys/kernel/config/target`).
//!
//! **Untested against a kernel.** The development machine's kernel has no configfs and no
//! target_core modules (no module support at all), so nothing here has run against real LIO.
//! What is unit-tested: the configfs operations each call generates (as a list of typed
//! [`Step`]s: paths, values, order), the parsing of an ACL's `info` file, the per-volume state
//! file, and input validation. What is not: [`apply`] (it only performs the steps with std::fs
//! calls), the kernel's reaction to them, and CHAP/ACL behaviour seen by an initiator.
//!
//! Layout generated for a volume (names as the kernel's target_core_fabric_configfs expects):
//! ```text
//! core/fileio_0/<volume name>/control        "fd_dev_name=<path>,fd_dev_size=<bytes>"   (file)
//! core/iblock_0/<volume name>/control        "udev_path=<device>"                        (block dev)
//! core/<hba>/<volume name>/wwn/vpd_unit_serial  <volume id>
//! core/<hba>/<volume name>/enable            1
//! iscsi/<iqn>/tpgt_1/np/<ip>:<port>/          one per portal ([v6]:port)
//! iscsi/<iqn>/tpgt_1/lun/lun_0/ember -> core/<hba>/<volume name>
//! iscsi/<iqn>/tpgt_1/attrib/{authentication=1 (with CHAP), generate_node_acls=0,
//!                            demo_mode_write_protect=0, cache_dynamic_acls=0}
//! iscsi/<iqn>/tpgt_1/acls/<initiator>/auth/{userid,password}    per initiator
//! iscsi/<iqn>/tpgt_1/acls/<initiator>/lun_0/ember -> iscsi/<iqn>/tpgt_1/lun/lun_0
//! iscsi/<iqn>/tpgt_1/enable                  1
//! ```
//! CHAP secrets go only into configfs attribute files and the 0600 state file, never into a
//! command line. LIO numbers the LUN 0 (tgt: 1); the "tid" in provider_location is the TPG tag 1.
//! Like Cinder's LIO helper, access is per initiator ACL (initialize_connection adds one,
//! terminate_connection removes it, which also ends that initiator's sessions in LIO).

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::chap::{write_file_atomic, Chap, Secret};
use crate::error::{io_err, Result, TargetError};
use crate::iqn;
use crate::iscsi::{self, validate_config_path};
use crate::runner::Runner;
use crate::types::{
    ConnectionInfo, Connector, ExportModel, ExportVolume, ProviderLocation, TargetConfig,
};
use crate::window::{self, Window};
use crate::TargetHelper;

/// LIO numbers the first LUN 0.
pub const LIO_LUN: u32 = 0;
/// The TPG every Ember target uses (reported as the "tid").
pub const TPG: u32 = 1;
/// Default configfs mount point of the target subsystem.
pub const CONFIGFS_ROOT: &str = "/sys/kernel/config/target";
const LUN_LINK: &str = "ember";

/// A value written into a configfs attribute; secrets print as `***`.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Plain(String),
    Secret(Secret),
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Plain(s) => write!(f, "{s:?}"),
            Value::Secret(_) => f.write_str("***"),
        }
    }
}

/// One configfs operation; paths are relative to the configfs target root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `mkdir` (configfs creates the object and its attribute files).
    Mkdir(PathBuf),
    /// `mkdir` unless the directory exists (HBAs are shared by all volumes).
    MkdirIfMissing(PathBuf),
    /// Write an attribute.
    Write { path: PathBuf, value: Value },
    /// `symlink(target, link)`; both relative to the root.
    Symlink { target: PathBuf, link: PathBuf },
    /// Remove a symlink (ignored when absent).
    Unlink(PathBuf),
    /// `rmdir` (ignored when absent).
    Rmdir(PathBuf),
}

fn w(path: impl Into<PathBuf>, v: impl Into<String>) -> Step {
    Step::Write {
        path: path.into(),
        value: Value::Plain(v.into()),
    }
}

/// Backstore kind, chosen from the backing path's file type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backstore {
    /// A regular file: `fileio`, with an explicit size.
    FileIo,
    /// A block device: `iblock` (size read from the device).
    IBlock,
}

impl Backstore {
    fn hba(self) -> &'static str {
        match self {
            Backstore::FileIo => "core/fileio_0",
            Backstore::IBlock => "core/iblock_0",
        }
    }
}

/// Everything needed to generate the configfs steps of one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LioExport {
    pub iqn: String,
    pub volume_name: String,
    pub volume_id: String,
    pub device: PathBuf,
    pub backstore: Backstore,
    pub size_bytes: u64,
    pub portals: Vec<String>,
    pub chap: Option<Chap>,
}

impl LioExport {
    fn validate(&self) -> Result<()> {
        iqn::validate_iqn(&self.iqn)?;
        iqn::validate_volume_name(&self.volume_name)?;
        validate_config_path(&self.device, "backing store")?;
        if let Some(c) = &self.chap {
            Chap::new(&c.username, c.secret.clone())?;
        }
        for p in &self.portals {
            // Parsed through provider_location's portal grammar.
            crate::types::parse_provider_location(&format!("{p},1 {} 0", self.iqn))?;
        }
        Ok(())
    }

    fn storage_object(&self) -> PathBuf {
        Path::new(self.backstore.hba()).join(&self.volume_name)
    }

    fn tpg(&self) -> PathBuf {
        Path::new("iscsi")
            .join(&self.iqn)
            .join(format!("tpgt_{TPG}"))
    }

    fn lun_dir(&self) -> PathBuf {
        self.tpg().join(format!("lun/lun_{LIO_LUN}"))
    }

    /// The ACL of `initiator` in the TPG.
    fn acl(&self, initiator: &str) -> PathBuf {
        self.tpg().join("acls").join(initiator)
    }

    /// The LUN mapped into `initiator`'s ACL.
    fn acl_lun(&self, initiator: &str) -> PathBuf {
        self.acl(initiator).join(format!("lun_{LIO_LUN}"))
    }
}

/// Steps creating the backstore, target, TPG, portals and LUN (no ACL yet).
pub fn create_steps(e: &LioExport) -> Result<Vec<Step>> {
    e.validate()?;
    let so = e.storage_object();
    let mut s = vec![
        Step::MkdirIfMissing(e.backstore.hba().into()),
        Step::Mkdir(so.clone()),
    ];
    s.extend(backstore_config(e));
    let tpg = e.tpg();
    s.push(Step::Mkdir(Path::new("iscsi").join(&e.iqn)));
    s.push(Step::Mkdir(tpg.clone()));
    for p in &e.portals {
        s.push(Step::Mkdir(tpg.join("np").join(p)));
    }
    s.extend(lun_steps(e));
    s.push(w(
        tpg.join("attrib/authentication"),
        if e.chap.is_some() { "1" } else { "0" },
    ));
    s.push(w(tpg.join("attrib/generate_node_acls"), "0"));
    s.push(w(tpg.join("attrib/demo_mode_write_protect"), "0"));
    s.push(w(tpg.join("attrib/cache_dynamic_acls"), "0"));
    s.push(w(tpg.join("enable"), "1"));
    Ok(s)
}

fn backstore_config(e: &LioExport) -> Vec<Step> {
    let so = e.storage_object();
    let dev = e.device.display().to_string();
    let mut s = match e.backstore {
        Backstore::FileIo => vec![w(
            so.join("control"),
            format!("fd_dev_name={dev},fd_dev_size={}", e.size_bytes),
        )],
        Backstore::IBlock => vec![
            w(so.join("control"), format!("udev_path={dev}")),
            w(so.join("udev_path"), dev),
        ],
    };
    s.push(w(so.join("wwn/vpd_unit_serial"), e.volume_id.clone()));
    s.push(w(so.join("enable"), "1"));
    s
}

fn lun_steps(e: &LioExport) -> Vec<Step> {
    vec![
        Step::Mkdir(e.lun_dir()),
        Step::Symlink {
            target: e.storage_object(),
            link: e.lun_dir().join(LUN_LINK),
        },
    ]
}

/// Steps granting `initiator` access (with the export's CHAP credentials) to LUN 0.
pub fn add_initiator_steps(e: &LioExport, initiator: &str) -> Result<Vec<Step>> {
    e.validate()?;
    iqn::validate_initiator_name(initiator)?;
    let acl = e.acl(initiator);
    let mut s = vec![Step::Mkdir(acl.clone())];
    if let Some(c) = &e.chap {
        s.push(w(acl.join("auth/userid"), c.username.clone()));
        s.push(Step::Write {
            path: acl.join("auth/password"),
            value: Value::Secret(c.secret.clone()),
        });
    }
    s.extend(acl_lun_steps(e, initiator));
    Ok(s)
}

fn acl_lun_steps(e: &LioExport, initiator: &str) -> Vec<Step> {
    let mapped = e.acl_lun(initiator);
    vec![
        Step::Mkdir(mapped.clone()),
        Step::Symlink {
            target: e.lun_dir(),
            link: mapped.join(LUN_LINK),
        },
    ]
}

fn acl_lun_remove_steps(e: &LioExport, initiator: &str) -> Vec<Step> {
    let mapped = e.acl_lun(initiator);
    vec![Step::Unlink(mapped.join(LUN_LINK)), Step::Rmdir(mapped)]
}

/// Steps removing `initiator`'s ACL (LIO ends its sessions when the ACL goes).
pub fn remove_initiator_steps(e: &LioExport, initiator: &str) -> Result<Vec<Step>> {
    iqn::validate_initiator_name(initiator)?;
    let mut s = acl_lun_remove_steps(e, initiator);
    s.push(Step::Rmdir(e.acl(initiator)));
    Ok(s)
}

/// Steps tearing the whole export down, children before parents.
pub fn delete_steps(e: &LioExport, initiators: &[String]) -> Result<Vec<Step>> {
    e.validate()?;
    let tpg = e.tpg();
    let mut s = vec![w(tpg.join("enable"), "0")];
    for i in initiators {
        s.extend(remove_initiator_steps(e, i)?);
    }
    s.push(Step::Unlink(e.lun_dir().join(LUN_LINK)));
    s.push(Step::Rmdir(e.lun_dir()));
    for p in &e.portals {
        s.push(Step::Rmdir(tpg.join("np").join(p)));
    }
    s.push(Step::Rmdir(tpg));
    s.push(Step::Rmdir(Path::new("iscsi").join(&e.iqn)));
    s.push(Step::Rmdir(e.storage_object()));
    Ok(s)
}

/// Steps making LIO see a new size: the LUN and its ACL mappings are re-created over a new
/// storage object (fileio's size is fixed at configuration; iblock re-reads the device, but the
/// same sequence is used so both behave alike). `old` is the export before the resize.
pub fn extend_steps(old: &LioExport, new: &LioExport, initiators: &[String]) -> Result<Vec<Step>> {
    new.validate()?;
    let mut s = Vec::new();
    for i in initiators {
        s.extend(acl_lun_remove_steps(old, i));
    }
    s.push(Step::Unlink(old.lun_dir().join(LUN_LINK)));
    s.push(Step::Rmdir(old.lun_dir()));
    s.push(Step::Rmdir(old.storage_object()));
    s.push(Step::MkdirIfMissing(new.backstore.hba().into()));
    s.push(Step::Mkdir(new.storage_object()));
    s.extend(backstore_config(new));
    s.extend(lun_steps(new));
    for i in initiators {
        s.extend(acl_lun_steps(new, i));
    }
    Ok(s)
}

/// Performs `steps` under `root` with plain std::fs calls. Untested on a real configfs (absent on
/// the development machine).
pub fn apply(root: &Path, steps: &[Step]) -> Result<()> {
    let absent = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    for step in steps {
        match step {
            Step::Mkdir(p) => {
                let p = root.join(p);
                fs::create_dir(&p).map_err(io_err("cannot create configfs object", &p))?;
            }
            Step::MkdirIfMissing(p) => {
                let p = root.join(p);
                if !p.is_dir() {
                    fs::create_dir(&p).map_err(io_err("cannot create configfs object", &p))?;
                }
            }
            Step::Write { path, value } => {
                let p = root.join(path);
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(io_err("cannot open configfs attribute", &p))?;
                let bytes = match value {
                    Value::Plain(s) => s.as_bytes(),
                    Value::Secret(s) => s.expose().as_bytes(),
                };
                f.write_all(bytes)
                    .map_err(io_err("cannot write configfs attribute", &p))?;
            }
            Step::Symlink { target, link } => {
                let (t, l) = (root.join(target), root.join(link));
                std::os::unix::fs::symlink(&t, &l).map_err(io_err("cannot link", &l))?;
            }
            Step::Unlink(p) => {
                let p = root.join(p);
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if absent(&e) => {}
                    Err(e) => return Err(io_err("cannot unlink", &p)(e)),
                }
            }
            Step::Rmdir(p) => {
                let p = root.join(p);
                match fs::remove_dir(&p) {
                    Ok(()) => {}
                    Err(e) if absent(&e) => {}
                    Err(e) => return Err(io_err("cannot remove configfs object", &p)(e)),
                }
            }
        }
    }
    Ok(())
}

/// Parses an ACL's `info` attribute: `None` when no session is active, else the session state
/// (e.g. `TARG_SESS_STATE_LOGGED_IN`).
pub fn parse_acl_info(text: &str) -> Option<String> {
    if text.contains("No active iSCSI Session") {
        return None;
    }
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Session State:"))
        .map(|s| s.trim().to_owned())
        .or_else(|| (!text.trim().is_empty()).then(|| "unknown".to_owned()))
}

/// What Ember keeps per LIO export in `volumes_dir/<name>.lio.json` (0600: holds the secret).
/// `Debug` hides `provider_auth`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LioState {
    pub volume_id: String,
    pub iqn: String,
    pub device: PathBuf,
    pub backstore: Backstore,
    pub size_bytes: u64,
    pub window: Option<(PathBuf, u64, u64)>,
    pub provider_auth: Option<String>,
    pub initiators: Vec<String>,
}

impl std::fmt::Debug for LioState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LioState")
            .field("volume_id", &self.volume_id)
            .field("iqn", &self.iqn)
            .field("device", &self.device)
            .field("backstore", &self.backstore)
            .field("size_bytes", &self.size_bytes)
            .field("window", &self.window)
            .field(
                "provider_auth",
                &self.provider_auth.as_ref().map(|_| "CHAP *** ***"),
            )
            .field("initiators", &self.initiators)
            .finish()
    }
}

/// LIO target helper over configfs.
pub struct LioAdm {
    cfg: TargetConfig,
    root: PathBuf,
    runner: Runner,
    lock: Mutex<()>,
}

impl std::fmt::Debug for LioAdm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LioAdm")
            .field("cfg", &self.cfg)
            .field("root", &self.root)
            .finish()
    }
}

impl LioAdm {
    /// A helper over the configfs tree at `root` (normally [`CONFIGFS_ROOT`]). Fails with
    /// [`TargetError::Unsupported`] when `root/iscsi` is missing (configfs not mounted or
    /// iscsi_target_mod not loaded), as on the development machine.
    pub fn new(cfg: TargetConfig, root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        iqn::validate_prefix(&cfg.target_prefix)?;
        validate_config_path(&cfg.volumes_dir, "volumes_dir")?;
        if !root.join("iscsi").is_dir() {
            return Err(TargetError::Unsupported {
                what: "LIO",
                reason: "configfs target/iscsi is not available (configfs not mounted or iscsi_target_mod missing)",
            });
        }
        iscsi::create_state_dir(&cfg.volumes_dir)?;
        Ok(Self {
            runner: Runner::new(cfg.command_timeout),
            cfg,
            root,
            lock: Mutex::new(()),
        })
    }

    fn state_path(&self, vol: &ExportVolume) -> PathBuf {
        self.cfg.volumes_dir.join(format!("{}.lio.json", vol.name))
    }

    fn read_state(&self, vol: &ExportVolume) -> Result<Option<LioState>> {
        let p = self.state_path(vol);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|_| TargetError::Parse {
                    what: "LIO state file",
                    line: p.display().to_string(),
                    reason: "not Ember's JSON",
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &p)(e)),
        }
    }

    fn write_state(&self, vol: &ExportVolume, st: &LioState) -> Result<()> {
        let json = serde_json::to_vec_pretty(st).map_err(|_| TargetError::Parse {
            what: "LIO state",
            line: String::new(),
            reason: "cannot serialise",
        })?;
        write_file_atomic(&self.state_path(vol), &json, 0o600)
    }

    fn export_of(&self, st: &LioState, name: &str) -> Result<LioExport> {
        let chap = iscsi::chap_of(st.provider_auth.as_deref())?;
        Ok(LioExport {
            iqn: st.iqn.clone(),
            volume_name: name.to_owned(),
            volume_id: st.volume_id.clone(),
            device: st.device.clone(),
            backstore: st.backstore,
            size_bytes: st.size_bytes,
            portals: self.cfg.portals(),
            chap,
        })
    }

    fn device_of(&self, vol: &ExportVolume) -> Result<(PathBuf, Backstore, Option<Window>)> {
        validate_config_path(&vol.backing_path, "backing path")?;
        let (dev, win) = match iscsi::window_of(vol) {
            Some(w) => (window::ensure(&self.runner, &w)?, Some(w)),
            None => (vol.backing_path.clone(), None),
        };
        let meta = fs::metadata(&dev).map_err(io_err("cannot stat backing store", &dev))?;
        let kind = if meta.file_type().is_block_device() {
            Backstore::IBlock
        } else {
            Backstore::FileIo
        };
        Ok((dev, kind, win))
    }

    fn new_state(&self, vol: &ExportVolume, auth: Option<String>) -> Result<LioState> {
        iqn::validate_volume_name(&vol.name)?;
        let (device, backstore, win) = self.device_of(vol)?;
        Ok(LioState {
            volume_id: vol.id.clone(),
            iqn: iscsi::volume_iqn(&self.cfg, vol)?,
            device,
            backstore,
            size_bytes: vol.size_bytes,
            window: win.map(|w| (w.source, w.offset, w.len)),
            provider_auth: auth,
            initiators: Vec::new(),
        })
    }

    fn model_of(&self, st: &LioState) -> ExportModel {
        iscsi::export_model(&self.cfg, TPG, &st.iqn, LIO_LUN, st.provider_auth.clone())
    }

    fn live(&self, iqn: &str) -> bool {
        self.root.join("iscsi").join(iqn).is_dir()
    }

    fn build(&self, vol: &ExportVolume, st: &LioState) -> Result<()> {
        let e = self.export_of(st, &vol.name)?;
        let mut steps = create_steps(&e)?;
        for i in &st.initiators {
            steps.extend(add_initiator_steps(&e, i)?);
        }
        if let Err(err) = apply(&self.root, &steps) {
            let _ = apply(&self.root, &delete_steps(&e, &st.initiators)?);
            return Err(err);
        }
        Ok(())
    }

    fn check_model(&self, vol: &ExportVolume, model: &ExportModel) -> Result<ProviderLocation> {
        iscsi::check_model_iqn(&self.cfg, vol, model)
    }
}

impl TargetHelper for LioAdm {
    fn create_export(&self, vol: &ExportVolume) -> Result<ExportModel> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(st) = self.read_state(vol)? {
            if st.volume_id != vol.id {
                return Err(TargetError::ModelMismatch {
                    volume: vol.name.clone(),
                    iqn: st.iqn,
                    expected: "an IQN not used by another volume".into(),
                });
            }
            if !self.live(&st.iqn) {
                self.build(vol, &st)?;
            }
            return Ok(self.model_of(&st));
        }
        let auth = self
            .cfg
            .use_chap
            .then(|| Chap::generate().to_provider_auth());
        let st = self.new_state(vol, auth)?;
        self.write_state(vol, &st)?;
        if let Err(e) = self.build(vol, &st) {
            let _ = fs::remove_file(self.state_path(vol));
            return Err(e);
        }
        Ok(self.model_of(&st))
    }

    fn ensure_export(&self, vol: &ExportVolume, model: &ExportModel) -> Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.check_model(vol, model)?;
        let mut st = match self.read_state(vol)? {
            Some(st) => st,
            None => self.new_state(vol, model.provider_auth.clone())?,
        };
        st.provider_auth = model.provider_auth.clone();
        let (device, backstore, _) = self.device_of(vol)?;
        st.device = device;
        st.backstore = backstore;
        self.write_state(vol, &st)?;
        if !self.live(&st.iqn) {
            self.build(vol, &st)?;
        }
        Ok(())
    }

    fn remove_export(&self, vol: &ExportVolume, force: bool) -> Result<()> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(st) = self.read_state(vol)? else {
            return Ok(());
        };
        let e = self.export_of(&st, &vol.name)?;
        if !force {
            let active: Vec<&str> = st
                .initiators
                .iter()
                .filter(|i| {
                    let info = e.acl(i).join("info");
                    fs::read_to_string(self.root.join(info))
                        .ok()
                        .and_then(|t| parse_acl_info(&t))
                        .is_some()
                })
                .map(String::as_str)
                .collect();
            if !active.is_empty() {
                return Err(iscsi::in_use(&st.iqn, &active));
            }
        }
        apply(&self.root, &delete_steps(&e, &st.initiators)?)?;
        if self.live(&st.iqn) {
            return Err(TargetError::RemoveFailed { iqn: st.iqn });
        }
        if let Some((source, offset, len)) = &st.window {
            window::detach(
                &self.runner,
                &Window {
                    source: source.clone(),
                    offset: *offset,
                    len: *len,
                },
            )?;
        }
        let p = self.state_path(vol);
        fs::remove_file(&p).map_err(io_err("cannot remove", &p))
    }

    fn initialize_connection(
        &self,
        vol: &ExportVolume,
        model: &ExportModel,
        connector: &Connector,
    ) -> Result<ConnectionInfo> {
        let initiator = connector.initiator_name()?;
        let loc = self.check_model(vol, model)?;
        let chap = iscsi::chap_of(model.provider_auth.as_deref())?;
        {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut st = self
                .read_state(vol)?
                .ok_or_else(|| TargetError::TargetNotFound {
                    iqn: loc.iqn.clone(),
                })?;
            if !st.initiators.iter().any(|i| i == initiator) {
                let e = self.export_of(&st, &vol.name)?;
                apply(&self.root, &add_initiator_steps(&e, initiator)?)?;
                st.initiators.push(initiator.to_owned());
                self.write_state(vol, &st)?;
            }
        }
        let info = iscsi::connection_info(&self.cfg, vol, &loc, connector, chap);
        Ok(info)
    }

    fn terminate_connection(
        &self,
        vol: &ExportVolume,
        model: &ExportModel,
        connector: &Connector,
    ) -> Result<()> {
        let initiator = connector.initiator_name()?;
        self.check_model(vol, model)?;
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut st) = self.read_state(vol)? else {
            return Ok(());
        };
        let e = self.export_of(&st, &vol.name)?;
        apply(&self.root, &remove_initiator_steps(&e, initiator)?)?;
        st.initiators.retain(|i| i != initiator);
        self.write_state(vol, &st)
    }

    fn extend_target(&self, vol: &ExportVolume, model: &ExportModel) -> Result<()> {
        self.check_model(vol, model)?;
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self
            .read_state(vol)?
            .ok_or_else(|| TargetError::TargetNotFound {
                iqn: vol.name.clone(),
            })?;
        let old = self.export_of(&st, &vol.name)?;
        st.size_bytes = vol.size_bytes;
        let new = self.export_of(&st, &vol.name)?;
        apply(&self.root, &extend_steps(&old, &new, &st.initiators)?)?;
        self.write_state(vol, &st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(kind: Backstore) -> LioExport {
        LioExport {
            iqn: "iqn.2010-10.org.openstack:volume-1".into(),
            volume_name: "volume-1".into(),
            volume_id: "1".into(),
            device: "/dev/vg/volume-1".into(),
            backstore: kind,
            size_bytes: 1 << 30,
            portals: vec!["10.0.0.1:3260".into(), "[fd00::1]:3260".into()],
            chap: Some(Chap::new("user0123456789abcdef", Secret::new("S3cretCHAPpw1234")).unwrap()),
        }
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn create_generates_configfs_tree_in_order() {
        let steps = create_steps(&export(Backstore::FileIo)).unwrap();
        let tpg = "iscsi/iqn.2010-10.org.openstack:volume-1/tpgt_1";
        assert_eq!(steps[0], Step::MkdirIfMissing(p("core/fileio_0")));
        assert_eq!(steps[1], Step::Mkdir(p("core/fileio_0/volume-1")));
        assert_eq!(
            steps[2],
            w(
                "core/fileio_0/volume-1/control",
                "fd_dev_name=/dev/vg/volume-1,fd_dev_size=1073741824"
            )
        );
        assert!(steps.contains(&Step::Mkdir(p(&format!("{tpg}/np/10.0.0.1:3260")))));
        assert!(steps.contains(&Step::Mkdir(p(&format!("{tpg}/np/[fd00::1]:3260")))));
        assert!(steps.contains(&Step::Symlink {
            target: p("core/fileio_0/volume-1"),
            link: p(&format!("{tpg}/lun/lun_0/ember")),
        }));
        assert!(steps.contains(&w(format!("{tpg}/attrib/authentication"), "1")));
        assert!(steps.contains(&w(format!("{tpg}/attrib/generate_node_acls"), "0")));
        // Backstore enabled before the LUN links to it; the TPG enabled last.
        let pos = |s: &Step| steps.iter().position(|x| x == s).unwrap();
        assert!(
            pos(&w("core/fileio_0/volume-1/enable", "1"))
                < pos(&Step::Mkdir(p(&format!("{tpg}/lun/lun_0"))))
        );
        assert_eq!(steps.last().unwrap(), &w(format!("{tpg}/enable"), "1"));
    }

    #[test]
    fn iblock_for_block_devices() {
        let steps = create_steps(&export(Backstore::IBlock)).unwrap();
        assert!(steps.contains(&w(
            "core/iblock_0/volume-1/control",
            "udev_path=/dev/vg/volume-1"
        )));
        assert!(steps.contains(&w("core/iblock_0/volume-1/udev_path", "/dev/vg/volume-1")));
    }

    #[test]
    fn acl_steps_carry_chap_without_printing_it() {
        let e = export(Backstore::FileIo);
        let steps = add_initiator_steps(&e, "iqn.1993-08.org.debian:01:abc").unwrap();
        let acl =
            "iscsi/iqn.2010-10.org.openstack:volume-1/tpgt_1/acls/iqn.1993-08.org.debian:01:abc";
        assert_eq!(steps[0], Step::Mkdir(p(acl)));
        assert_eq!(
            steps[1],
            w(format!("{acl}/auth/userid"), "user0123456789abcdef")
        );
        assert_eq!(
            steps[2],
            Step::Write {
                path: p(&format!("{acl}/auth/password")),
                value: Value::Secret(Secret::new("S3cretCHAPpw1234")),
            }
        );
        assert!(steps.contains(&Step::Symlink {
            target: p("iscsi/iqn.2010-10.org.openstack:volume-1/tpgt_1/lun/lun_0"),
            link: p(&format!("{acl}/lun_0/ember")),
        }));
        assert!(!format!("{steps:?}").contains("S3cret"));
        assert!(add_initiator_steps(&e, "../../core").is_err());
        assert!(add_initiator_steps(&e, "iqn.2010-10.org.x:a/../../b").is_err());
    }

    #[test]
    fn delete_reverses_create() {
        let e = export(Backstore::FileIo);
        let inits = vec!["iqn.1993-08.org.debian:01:abc".to_string()];
        let steps = delete_steps(&e, &inits).unwrap();
        let tpg = "iscsi/iqn.2010-10.org.openstack:volume-1/tpgt_1";
        assert_eq!(steps[0], w(format!("{tpg}/enable"), "0"));
        let pos = |s: &Step| steps.iter().position(|x| x == s).unwrap();
        assert!(
            pos(&Step::Unlink(p(&format!(
                "{tpg}/acls/iqn.1993-08.org.debian:01:abc/lun_0/ember"
            )))) < pos(&Step::Rmdir(p(&format!("{tpg}/lun/lun_0"))))
        );
        assert!(
            pos(&Step::Rmdir(p(tpg)))
                < pos(&Step::Rmdir(p("iscsi/iqn.2010-10.org.openstack:volume-1")))
        );
        assert_eq!(
            steps.last().unwrap(),
            &Step::Rmdir(p("core/fileio_0/volume-1"))
        );
    }

    #[test]
    fn extend_recreates_lun_with_new_size() {
        let old = export(Backstore::FileIo);
        let mut new = old.clone();
        new.size_bytes = 2 << 30;
        let inits = vec!["iqn.1993-08.org.debian:01:abc".to_string()];
        let steps = extend_steps(&old, &new, &inits).unwrap();
        assert!(steps.contains(&w(
            "core/fileio_0/volume-1/control",
            "fd_dev_name=/dev/vg/volume-1,fd_dev_size=2147483648"
        )));
        // The ACL mapping is restored after the LUN is re-created.
        let acl_link = Step::Symlink {
            target: p("iscsi/iqn.2010-10.org.openstack:volume-1/tpgt_1/lun/lun_0"),
            link: p("iscsi/iqn.2010-10.org.openstack:volume-1/tpgt_1/acls/iqn.1993-08.org.debian:01:abc/lun_0/ember"),
        };
        assert_eq!(steps.last().unwrap(), &acl_link);
    }

    #[test]
    fn rejects_hostile_exports() {
        let mut e = export(Backstore::FileIo);
        e.device = "/dev/x,fd_dev_size=1".into();
        // A comma would add a key to the control string: refused.
        assert!(create_steps(&e).is_err());
        let mut e = export(Backstore::FileIo);
        e.iqn = "iqn.2010-10.org.openstack:../../x".into();
        assert!(create_steps(&e).is_err());
        let mut e = export(Backstore::FileIo);
        e.portals = vec!["10.0.0.1:3260/../../x".into()];
        assert!(create_steps(&e).is_err());
    }

    #[test]
    fn parses_acl_info() {
        assert_eq!(
            parse_acl_info("No active iSCSI Session for Initiator Endpoint: iqn.x\n"),
            None
        );
        let live = "InitiatorName: iqn.1993-08.org.debian:01:abc\nInitiatorAlias: host\nLIO Session ID: 1   ISID: 0x00 0x02 0x3d 0x00 0x00 0x00  TSIH: 1  SessionType: Normal\nSession State: TARG_SESS_STATE_LOGGED_IN\n";
        assert_eq!(
            parse_acl_info(live).as_deref(),
            Some("TARG_SESS_STATE_LOGGED_IN")
        );
    }

    #[test]
    fn new_fails_without_configfs() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TargetConfig {
            volumes_dir: dir.path().join("v"),
            ..TargetConfig::default()
        };
        let e = LioAdm::new(cfg, dir.path().join("no-configfs")).unwrap_err();
        assert!(matches!(e, TargetError::Unsupported { .. }));
    }
}
