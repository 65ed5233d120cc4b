//! [`TargetHelper`] for tgt: each export call validates its inputs, takes the lock, reads the
//! volume's config file, changes it, writes it back and reconciles tgtd with it ([`super::adm`]).
//! Also the volume checks, the backing store (a loop device for a byte window) and
//! [`TgtAdm::ensure_all`].

use std::fs;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use super::adm::{is_busy, is_not_found};
use super::conf::TgtConf;
use super::show::Nexus;
use super::{TgtAdm, TGT_LUN};
use crate::chap::{write_file_atomic, Chap};
use crate::error::{io_err, Result, TargetError};
use crate::iqn;
use crate::iscsi::{self, validate_config_path};
use crate::runner::Arg;
use crate::types::{ConnectionInfo, Connector, ExportModel, ExportVolume, ProviderLocation};
use crate::window::{self, Window};
use crate::TargetHelper;

impl TgtAdm {
    pub(super) fn read_conf(&self, vol: &ExportVolume) -> Result<Option<TgtConf>> {
        let path = self.conf_path(vol);
        match fs::read_to_string(&path) {
            Ok(text) => TgtConf::parse(&text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    pub(super) fn write_conf(&self, vol: &ExportVolume, conf: &TgtConf) -> Result<()> {
        let text = conf.render()?;
        write_file_atomic(&self.conf_path(vol), text.as_bytes(), 0o600)
    }

    pub(super) fn remove_conf(&self, vol: &ExportVolume) -> Result<()> {
        let path = self.conf_path(vol);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &path)(e)),
        }
    }

    /// Validates `vol` before anything is written: name, id, backing path (absolute, existing,
    /// large enough for the window or the volume).
    pub(super) fn validate_volume(&self, vol: &ExportVolume) -> Result<()> {
        iqn::validate_volume_name(&vol.name)?;
        iscsi::validate_volume_id(&vol.id)?;
        validate_config_path(&vol.backing_path, "backing path")?;
        if vol.size_bytes == 0 || vol.size_bytes & 511 != 0 {
            return Err(TargetError::InvalidValue {
                field: "volume size",
                value: vol.size_bytes.to_string(),
                reason: "must be a non-zero multiple of 512",
            });
        }
        let mut f = fs::File::open(&vol.backing_path)
            .map_err(io_err("cannot open backing store", &vol.backing_path))?;
        let backing_size = f
            .seek(SeekFrom::End(0))
            .map_err(io_err("cannot size backing store", &vol.backing_path))?;
        let len = vol
            .backing_len
            .unwrap_or(backing_size.saturating_sub(vol.backing_offset));
        if vol.is_windowed() {
            if vol.backing_offset & 511 != 0 || len & 511 != 0 {
                return Err(TargetError::InvalidValue {
                    field: "backing window",
                    value: format!("{}+{}", vol.backing_offset, len),
                    reason: "offset and length must be multiples of 512",
                });
            }
            if len != vol.size_bytes {
                return Err(TargetError::InvalidValue {
                    field: "backing window",
                    value: format!("{}+{}", vol.backing_offset, len),
                    reason: "window length must equal the volume size",
                });
            }
        }
        let end = vol.backing_offset.checked_add(len);
        if !matches!(end, Some(end) if end <= backing_size) || len < vol.size_bytes {
            return Err(TargetError::InvalidValue {
                field: "backing store",
                value: vol.backing_path.display().to_string(),
                reason: "smaller than the volume (or window) it should hold",
            });
        }
        Ok(())
    }

    /// The device tgt must open for `vol` (setting up the loop device for a window).
    pub(super) fn backing_store(&self, vol: &ExportVolume) -> Result<(PathBuf, Option<Window>)> {
        match iscsi::window_of(vol) {
            Some(w) => Ok((window::ensure(&self.runner, &w)?, Some(w))),
            None => Ok((vol.backing_path.clone(), None)),
        }
    }

    pub(super) fn base_conf(
        &self,
        vol: &ExportVolume,
        iqn: String,
        tid: u32,
        chap: Option<Chap>,
    ) -> Result<TgtConf> {
        let (backing_store, window) = self.backing_store(vol)?;
        Ok(TgtConf {
            tid,
            volume_id: vol.id.clone(),
            iqn,
            backing_store,
            window,
            driver: self.cfg.target_protocol.clone(),
            chap,
            initiator_names: Vec::new(),
            initiator_addresses: Vec::new(),
            write_cache: self.cfg.iscsi_write_cache,
            bsoflags: (!self.cfg.iscsi_target_flags.is_empty())
                .then(|| self.cfg.iscsi_target_flags.clone()),
            scsi_name: vol.name.clone(),
        })
    }

    pub(super) fn model_of(&self, conf: &TgtConf) -> ExportModel {
        iscsi::export_model(
            &self.cfg,
            conf.tid,
            &conf.iqn,
            TGT_LUN,
            conf.chap.as_ref().map(Chap::to_provider_auth),
        )
    }

    /// Parses a stored model and checks it names this volume's IQN and tgt's LUN.
    pub(super) fn check_model(
        &self,
        vol: &ExportVolume,
        model: &ExportModel,
    ) -> Result<(ProviderLocation, Option<Chap>)> {
        let loc = iscsi::check_model_iqn(&self.cfg, vol, model)?;
        if loc.lun != TGT_LUN {
            return Err(TargetError::ProviderLocation {
                location: model.provider_location.clone(),
                reason: "tgt exports use LUN 1",
            });
        }
        let chap = iscsi::chap_of(model.provider_auth.as_deref())?;
        Ok((loc, chap))
    }

    /// Re-applies every export recorded in `volumes_dir` (service start, tgtd restart).
    /// Returns each volume name with its result.
    pub fn ensure_all(&self) -> Result<Vec<(String, Result<()>)>> {
        let dir = &self.cfg.volumes_dir;
        let mut names: Vec<String> = fs::read_dir(dir)
            .map_err(io_err("cannot list", dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| {
                let r = self.locked(|| {
                    let path = dir.join(&name);
                    let text = fs::read_to_string(&path).map_err(io_err("cannot read", &path))?;
                    let mut conf = TgtConf::parse(&text)?;
                    if let Some(w) = &conf.window {
                        conf.backing_store = window::ensure(&self.runner, w)?;
                        write_file_atomic(&path, conf.render()?.as_bytes(), 0o600)?;
                    }
                    self.apply(&conf).map(|_| ())
                });
                (name, r)
            })
            .collect())
    }
}

impl TargetHelper for TgtAdm {
    fn create_export(&self, vol: &ExportVolume) -> Result<ExportModel> {
        self.validate_volume(vol)?;
        let iqn = self.iqn_for(vol)?;
        self.locked(|| {
            if let Some(conf) = self.read_conf(vol)? {
                if conf.volume_id != vol.id || conf.iqn != iqn {
                    return Err(TargetError::ModelMismatch {
                        volume: vol.name.clone(),
                        iqn: conf.iqn,
                        expected: iqn,
                    });
                }
                // Already exported: make sure tgtd has it and hand back the same model.
                self.apply(&conf)?;
                return Ok(self.model_of(&conf));
            }
            let tid = self.allocate_tid(&iqn, &vol.id)?;
            let chap = self.cfg.use_chap.then(Chap::generate);
            let conf = self.base_conf(vol, iqn.clone(), tid, chap)?;
            let rollback = |conf: &TgtConf| {
                let _ = self.remove_conf(vol);
                if let Some(w) = &conf.window {
                    let _ = window::detach(&self.runner, w);
                }
            };
            if let Err(e) = self.write_conf(vol, &conf) {
                rollback(&conf);
                return Err(e);
            }
            if let Err(e) = self.apply(&conf) {
                rollback(&conf);
                return Err(e);
            }
            tracing::info!(volume = %vol.name, iqn = %iqn, tid, "export created");
            Ok(self.model_of(&conf))
        })
    }

    fn ensure_export(&self, vol: &ExportVolume, model: &ExportModel) -> Result<()> {
        self.validate_volume(vol)?;
        let (loc, chap) = self.check_model(vol, model)?;
        self.locked(|| {
            self.record_tid(loc.tid, &loc.iqn, &vol.id)?;
            let existing = self.read_conf(vol)?;
            if let Some(c) = &existing {
                if c.volume_id != vol.id || c.tid != loc.tid {
                    return Err(TargetError::ModelMismatch {
                        volume: vol.name.clone(),
                        iqn: format!("{} (tid {})", c.iqn, c.tid),
                        expected: format!("{} (tid {})", loc.iqn, loc.tid),
                    });
                }
            }
            let mut conf = self.base_conf(vol, loc.iqn.clone(), loc.tid, chap.clone())?;
            if let Some(old) = existing {
                conf.initiator_names = old.initiator_names;
                conf.initiator_addresses = old.initiator_addresses;
            }
            self.write_conf(vol, &conf)?;
            self.apply(&conf)?;
            Ok(())
        })
    }

    fn remove_export(&self, vol: &ExportVolume, force: bool) -> Result<()> {
        iqn::validate_volume_name(&vol.name)?;
        let iqn = self.iqn_for(vol)?;
        self.locked(|| {
            let conf = self.read_conf(vol)?;
            let window = conf
                .as_ref()
                .and_then(|c| c.window.clone())
                .or_else(|| iscsi::window_of(vol));
            // Accounts to delete: ours from the config file, and (if the file was lost) the
            // incoming accounts bound to this target (per-volume random names).
            let mut accounts: Vec<String> = conf
                .as_ref()
                .and_then(|c| c.chap.as_ref())
                .map(|c| c.username.clone())
                .into_iter()
                .collect();
            if let Some(mut t) = self.find_target(&iqn)? {
                for a in t.accounts.iter().filter(|a| !a.outgoing) {
                    if !accounts.contains(&a.user) {
                        accounts.push(a.user.clone());
                    }
                }
                // A session whose initiator just disconnected stays listed for a moment.
                let mut polls = 0;
                while !t.nexuses.is_empty() && !force && polls < self.session_polls {
                    std::thread::sleep(Duration::from_millis(200));
                    polls += 1;
                    match self.find_target(&iqn)? {
                        Some(now) => t = now,
                        None => break,
                    }
                }
                if !t.nexuses.is_empty() && !force {
                    let initiators: Vec<&str> =
                        t.nexuses.iter().map(|n| n.initiator.as_str()).collect();
                    return Err(iscsi::in_use(&iqn, &initiators));
                }
                let delete = |force: bool| {
                    let args: Vec<Arg> = if force { vec!["--force".into()] } else { vec![] };
                    match self.op("delete", "target", t.tid, &args) {
                        Ok(_) => Ok(()),
                        Err(e) if is_not_found(&e) => Ok(()),
                        Err(e) if is_busy(&e) && !force => Err(TargetError::TargetInUse {
                            iqn: iqn.clone(),
                            sessions: 0,
                            initiators: "a login raced the removal".into(),
                        }),
                        Err(e) => Err(e),
                    }
                };
                let first = delete(force);
                if let Err(e) = &first {
                    if !force {
                        return first;
                    }
                    tracing::warn!(iqn = %iqn, error = %e, "forced target delete failed");
                }
                if let Some(still) = self.find_target(&iqn)? {
                    // tgt's silent failure: with live sessions the forced delete can return
                    // without removing the target. Close every connection, then retry.
                    tracing::warn!(iqn = %iqn, "target still present after delete, closing sessions");
                    let all: Vec<&Nexus> = still.nexuses.iter().collect();
                    self.close_sessions(still.tid, &all)?;
                    let _ = delete(true);
                    if self.find_target(&iqn)?.is_some() {
                        return Err(TargetError::RemoveFailed { iqn });
                    }
                }
            }
            for user in &accounts {
                self.delete_account(user)?;
            }
            if let Some(w) = &window {
                window::detach(&self.runner, w)?;
            }
            self.remove_conf(vol)?;
            tracing::info!(volume = %vol.name, iqn = %iqn, "export removed");
            Ok(())
        })
    }

    fn initialize_connection(
        &self,
        vol: &ExportVolume,
        model: &ExportModel,
        connector: &Connector,
    ) -> Result<ConnectionInfo> {
        let initiator = connector.initiator_name()?;
        self.validate_volume(vol)?;
        let (loc, chap) = self.check_model(vol, model)?;
        self.locked(|| {
            let mut conf = match self.read_conf(vol)? {
                Some(c) if c.volume_id == vol.id && c.tid == loc.tid => c,
                Some(c) => {
                    return Err(TargetError::ModelMismatch {
                        volume: vol.name.clone(),
                        iqn: format!("{} (tid {})", c.iqn, c.tid),
                        expected: format!("{} (tid {})", loc.iqn, loc.tid),
                    })
                }
                None => {
                    self.record_tid(loc.tid, &loc.iqn, &vol.id)?;
                    self.base_conf(vol, loc.iqn.clone(), loc.tid, chap.clone())?
                }
            };
            if !conf.initiator_names.iter().any(|n| n == initiator) {
                conf.initiator_names.push(initiator.to_owned());
            }
            self.write_conf(vol, &conf)?;
            self.apply(&conf)?;
            Ok(())
        })?;
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
        let (loc, _) = self.check_model(vol, model)?;
        self.locked(|| {
            if let Some(mut conf) = self.read_conf(vol)? {
                conf.initiator_names.retain(|n| n != initiator);
                self.write_conf(vol, &conf)?;
            }
            let Some(t) = self.find_target(&loc.iqn)? else {
                return Ok(());
            };
            if t.acls.iter().any(|a| a == initiator) {
                match self.op(
                    "unbind",
                    "target",
                    t.tid,
                    &["--initiator-name".into(), initiator.into()],
                ) {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            let theirs: Vec<&Nexus> = t
                .nexuses
                .iter()
                .filter(|n| n.initiator == initiator)
                .collect();
            self.close_sessions(t.tid, &theirs)
        })
    }

    fn extend_target(&self, vol: &ExportVolume, model: &ExportModel) -> Result<()> {
        self.validate_volume(vol)?;
        let (loc, _) = self.check_model(vol, model)?;
        self.locked(|| {
            let Some(mut conf) = self.read_conf(vol)? else {
                return Err(TargetError::TargetNotFound {
                    iqn: loc.iqn.clone(),
                });
            };
            // tgt reads the size of a backing store only when the LUN is added, so LUN 1 is
            // re-added (same tid, IQN and device): I/O in flight during the swap fails and is
            // retried by the initiator (Cinder does the same with `tgt-admin --update -f`).
            self.delete_lun(conf.tid)?;
            if let Some(old) = conf.window.take() {
                window::detach(&self.runner, &old)?;
            }
            let (backing, window) = self.backing_store(vol)?;
            conf.backing_store = backing;
            conf.window = window;
            self.write_conf(vol, &conf)?;
            self.apply(&conf).map(|_| ())
        })
    }
}
