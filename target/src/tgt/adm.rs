//! Driving tgtd: the `tgtadm` argument vectors (through the crate's one [`Runner`]), tgt's
//! error strings classified once, and the reconciliation of a live target with its config file
//! (LUN 1, the incoming CHAP account over the management socket, the ACLs, sessions).

use std::collections::BTreeSet;

use super::conf::TgtConf;
use super::show::{parse_show_targets, Nexus, ShowTarget};
use super::{TgtAdm, TGT_LUN};
use crate::chap::Chap;
use crate::error::{Result, TargetError};
use crate::runner::{Arg, Output};

pub(super) fn is_not_found(e: &TargetError) -> bool {
    matches!(e, TargetError::Command { stderr, .. }
        if stderr.contains("can't find the target")
            || stderr.contains("can't find the account")
            || stderr.contains("access control rule does not exist")
            || stderr.contains("can't find the logical unit"))
}

pub(super) fn is_already_exists(e: &TargetError) -> bool {
    matches!(e, TargetError::Command { stderr, .. } if stderr.contains("already exists"))
}

pub(super) fn is_busy(e: &TargetError) -> bool {
    matches!(e, TargetError::Command { stderr, .. } if stderr.contains("still active"))
}

impl TgtAdm {
    pub(super) fn tgtadm(&self, args: &[Arg]) -> Result<Output> {
        let mut argv: Vec<Arg> = Vec::with_capacity(args.len() + 4);
        if let Some(port) = self.cfg.control_port {
            argv.push("-C".into());
            argv.push(port.to_string().into());
        }
        argv.push("--lld".into());
        argv.push((&self.cfg.target_protocol).into());
        argv.extend_from_slice(args);
        self.runner.run("tgtadm", &argv)
    }

    /// Every target tgtd has, parsed.
    pub fn show_targets(&self) -> Result<Vec<ShowTarget>> {
        let out = self.tgtadm(&[
            "--op".into(),
            "show".into(),
            "--mode".into(),
            "target".into(),
        ])?;
        parse_show_targets(&out.stdout)
    }

    /// The target with exactly this IQN.
    pub fn find_target(&self, iqn: &str) -> Result<Option<ShowTarget>> {
        Ok(self.show_targets()?.into_iter().find(|t| t.iqn == iqn))
    }

    pub(super) fn op(&self, op: &str, mode: &str, tid: u32, rest: &[Arg]) -> Result<Output> {
        let mut v: Vec<Arg> = vec![
            "--op".into(),
            op.into(),
            "--mode".into(),
            mode.into(),
            "--tid".into(),
            tid.to_string().into(),
        ];
        v.extend_from_slice(rest);
        self.tgtadm(&v)
    }

    pub(super) fn new_lun(&self, conf: &TgtConf) -> Result<()> {
        let mut args: Vec<Arg> = vec![
            "--lun".into(),
            TGT_LUN.to_string().into(),
            "--backing-store".into(),
            conf.backing_store.as_path().into(),
        ];
        if let Some(f) = &conf.bsoflags {
            args.push("--bsoflags".into());
            args.push(f.into());
        }
        match self.op("new", "logicalunit", conf.tid, &args) {
            Ok(_) => {}
            Err(e) if is_already_exists(&e) => {}
            Err(e) => return Err(e),
        }
        self.update_lun(
            conf.tid,
            &format!("scsi_sn={0},scsi_id={0}", conf.scsi_name),
        )?;
        if !conf.write_cache {
            // What tgt-admin sends for `write-cache off`: caching mode page with WCE cleared.
            self.update_lun(
                conf.tid,
                "mode_page=8:0:18:0x10:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80:0x14:0:0:0:0:0:0",
            )?;
        }
        Ok(())
    }

    /// `--op update --mode logicalunit` of LUN 1 with `params`.
    fn update_lun(&self, tid: u32, params: &str) -> Result<()> {
        self.op(
            "update",
            "logicalunit",
            tid,
            &[
                "--lun".into(),
                TGT_LUN.to_string().into(),
                "--params".into(),
                params.into(),
            ],
        )
        .map(|_| ())
    }

    pub(super) fn delete_lun(&self, tid: u32) -> Result<()> {
        match self.op(
            "delete",
            "logicalunit",
            tid,
            &["--lun".into(), TGT_LUN.to_string().into()],
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn ensure_account(&self, tid: u32, chap: &Chap, bound: bool) -> Result<()> {
        if bound {
            return Ok(());
        }
        // Accounts are global in tgtd. A stale account with our (random, per-volume) user name
        // could carry another password: replace it.
        let del = self.tgtadm(&[
            "--op".into(),
            "delete".into(),
            "--mode".into(),
            "account".into(),
            "--user".into(),
            (&chap.username).into(),
        ]);
        match del {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        // Over tgtd's socket, not `tgtadm --password` (which would show the secret in argv).
        crate::tgtd_ipc::new_account(
            self.cfg.control_port,
            &self.cfg.target_protocol,
            &chap.username,
            &chap.secret,
            self.cfg.command_timeout,
        )?;
        self.op(
            "bind",
            "account",
            tid,
            &["--user".into(), (&chap.username).into()],
        )?;
        Ok(())
    }

    pub(super) fn delete_account(&self, user: &str) -> Result<()> {
        match self.tgtadm(&[
            "--op".into(),
            "delete".into(),
            "--mode".into(),
            "account".into(),
            "--user".into(),
            user.into(),
        ]) {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn acl_arg(rule: &str) -> &'static str {
        if rule.starts_with("iqn.") || rule.starts_with("eui.") || rule.starts_with("naa.") {
            "--initiator-name"
        } else {
            "--initiator-address"
        }
    }

    /// Makes tgtd's target match `conf` (creating it when absent). `created` tells whether this
    /// call created the target (the caller rolls back only what it created).
    pub(super) fn apply(&self, conf: &TgtConf) -> Result<bool> {
        conf.validate()?;
        let targets = self.show_targets()?;
        if let Some(t) = targets
            .iter()
            .find(|t| t.tid == conf.tid && t.iqn != conf.iqn)
        {
            return Err(TargetError::CreateFailed {
                iqn: conf.iqn.clone(),
                reason: format!("target id {} is in use by {}", conf.tid, t.iqn),
            });
        }
        if let Some(t) = targets
            .iter()
            .find(|t| t.iqn == conf.iqn && t.tid != conf.tid)
        {
            return Err(TargetError::CreateFailed {
                iqn: conf.iqn.clone(),
                reason: format!(
                    "tgtd has this IQN at target id {}, the export record says {}",
                    t.tid, conf.tid
                ),
            });
        }
        let mut created = false;
        let mut current = targets.into_iter().find(|t| t.iqn == conf.iqn);
        if current.is_none() {
            match self.op(
                "new",
                "target",
                conf.tid,
                &["--targetname".into(), (&conf.iqn).into()],
            ) {
                Ok(_) => created = true,
                Err(e) if is_already_exists(&e) => {
                    // tgt's "target already exists": someone (a concurrent apply, a restart
                    // script) got there first. Accept it only if it is exactly ours.
                    tracing::warn!(iqn = %conf.iqn, "tgtd reports the target already exists");
                }
                Err(e) => return Err(e),
            }
            current = self.find_target(&conf.iqn)?;
        }
        let Some(mut current) = current else {
            return Err(TargetError::CreateFailed {
                iqn: conf.iqn.clone(),
                reason: "tgtd does not list the target after creating it".into(),
            });
        };
        if current.tid != conf.tid {
            return Err(TargetError::CreateFailed {
                iqn: conf.iqn.clone(),
                reason: format!("tgtd lists it at target id {}", current.tid),
            });
        }
        let result = self.reconcile(conf, &mut current);
        if result.is_err() && created {
            let _ = self.op("delete", "target", conf.tid, &["--force".into()]);
            if let Some(c) = &conf.chap {
                let _ = self.delete_account(&c.username);
            }
        }
        result.map(|()| created)
    }

    pub(super) fn reconcile(&self, conf: &TgtConf, current: &mut ShowTarget) -> Result<()> {
        // LUN 1 with the right backing store.
        let want_path = conf.backing_store.display().to_string();
        match current.lun(TGT_LUN) {
            Some(l) if l.backing_path == want_path => {}
            Some(_) => {
                // Our IQN, our volume, but another device path (a loop device renumbered after a
                // restart): swap the LUN's backing store.
                self.delete_lun(conf.tid)?;
                self.new_lun(conf)?;
            }
            None => self.new_lun(conf)?,
        }
        // tgt may not list LUN 1 right after creation (Cinder: device busy after
        // create-from-snapshot). Re-add it a few times before giving up.
        let mut attempt = 0;
        loop {
            let t = self
                .find_target(&conf.iqn)?
                .ok_or_else(|| TargetError::TargetNotFound {
                    iqn: conf.iqn.clone(),
                })?;
            if t.lun(TGT_LUN).is_some_and(|l| l.backing_path == want_path) {
                *current = t;
                break;
            }
            attempt += 1;
            if attempt > self.lun_retries {
                return Err(TargetError::CreateFailed {
                    iqn: conf.iqn.clone(),
                    reason: format!("LUN {TGT_LUN} is missing after {} attempts", attempt),
                });
            }
            tracing::warn!(iqn = %conf.iqn, attempt, "LUN 1 missing after creation, re-adding");
            std::thread::sleep(self.lun_retry_delay);
            self.new_lun(conf)?;
        }
        // CHAP: exactly our incoming account bound.
        let want_user = conf.chap.as_ref().map(|c| c.username.as_str());
        for a in current.accounts.iter().filter(|a| !a.outgoing) {
            if Some(a.user.as_str()) != want_user {
                self.op(
                    "unbind",
                    "account",
                    conf.tid,
                    &["--user".into(), (&a.user).into()],
                )?;
            }
        }
        if let Some(c) = &conf.chap {
            let bound = current
                .accounts
                .iter()
                .any(|a| !a.outgoing && a.user == c.username);
            self.ensure_account(conf.tid, c, bound)?;
        }
        // ACLs: exactly the configured initiator names and addresses.
        let want: BTreeSet<&str> = conf
            .initiator_names
            .iter()
            .chain(&conf.initiator_addresses)
            .map(String::as_str)
            .collect();
        for rule in &current.acls {
            if !want.contains(rule.as_str()) {
                match self.op(
                    "unbind",
                    "target",
                    conf.tid,
                    &[Self::acl_arg(rule).into(), rule.into()],
                ) {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for rule in want {
            if !current.acls.iter().any(|r| r == rule) {
                self.op(
                    "bind",
                    "target",
                    conf.tid,
                    &[Self::acl_arg(rule).into(), rule.into()],
                )?;
            }
        }
        Ok(())
    }

    pub(super) fn close_sessions(&self, tid: u32, nexuses: &[&Nexus]) -> Result<()> {
        for n in nexuses {
            for c in &n.connections {
                match self.op(
                    "delete",
                    "connection",
                    tid,
                    &[
                        "--sid".into(),
                        n.sid.to_string().into(),
                        "--cid".into(),
                        c.cid.to_string().into(),
                    ],
                ) {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        tracing::warn!(tid, sid = n.sid, error = %e, "cannot close connection")
                    }
                }
            }
        }
        Ok(())
    }
}
