//! The tgt (Linux SCSI target framework, `tgtd`) implementation of
//! [`TargetHelper`](crate::TargetHelper).
//!
//! State lives in `volumes_dir` (mode 0700):
//! * `<volume name>`: one tgt-admin compatible config file per export (Cinder's layout and
//!   syntax), mode 0600 because it holds the CHAP secret, written atomically. Ember's own facts
//!   (target id, volume id, byte window) are `# ember-...:` comment lines tgt-admin ignores.
//! * `.ember-tids`: the target id ledger, one `<tid> <iqn> <volume id>` line per export ever
//!   created. Target ids are allocated monotonically (above every id in the ledger and every id
//!   live in tgtd) and are never handed out twice, and an IQN recorded for one volume id is never
//!   given to another; so an initiator that silently reconnects (libiscsi does) to an old
//!   tid/IQN/LUN can never land on a different volume's data.
//! * `.lock`: `flock`ed around every operation (with an in-process mutex), so concurrent helpers
//!   cannot interleave a read-modify-apply.
//!
//! The daemon is driven with `tgtadm` (argument vectors, a time limit per call) rather than
//! `tgt-admin --update`: Ember then chooses the target id itself (tgt-admin reuses the lowest free
//! id), reconciles an existing target field by field (LUN, account, ACLs) instead of deleting and
//! re-creating it, and sees every tgtadm error. Known tgt failure modes are handled explicitly:
//! "this target already exists" on create (re-read and accept our own IQN at our tid), LUN 1
//! missing after creation (re-added, then the export fails and is rolled back), and a target
//! delete that leaves the target listed with live sessions (connections closed one by one, delete
//! retried, then [`TargetError::RemoveFailed`]).
//!
//! Access control: a target has no initiator access until `initialize_connection` binds the
//! connector's initiator name (`initiator-name` ACL); `terminate_connection` unbinds it and closes
//! that initiator's sessions. CHAP (`incominguser`) is required on top when `use_chap` is set.
//! (Cinder's tgt helper binds no ACL at all, so any initiator holding the CHAP secret gets in.)
//! Note: a config file without ACL lines loaded by `tgt-admin` would bind `ALL`; Ember never
//! loads its files through tgt-admin.
//!
//! CHAP secrets: `tgtadm --op new --mode account --password S` (and tgt-admin, which runs exactly
//! that) would put the secret on a command line, readable by every local user in
//! `/proc/<pid>/cmdline`. Ember creates accounts over tgtd's root-only management socket instead
//! ([`crate::tgtd_ipc`]), so no command line ever carries a secret; the secret lives only in the
//! 0600 config file and the caller's model, and is redacted from logs and errors.
//!
//! Layout, in the order a call flows:
//! * `mod.rs` (here): [`TgtAdm`], its construction (config checks, `volumes_dir`) and the lock.
//! * `helper.rs`: the [`crate::TargetHelper`] impl: volume checks, the backing store (a loop
//!   device for a byte window), the model, and each export call's read-change-write-apply of
//!   the config file; [`TgtAdm::ensure_all`].
//! * `conf.rs`: the per-volume config file [`TgtConf`]: validation, rendering, parsing.
//! * `ledger.rs`: the target id ledger ([`LedgerEntry`]) and tid allocation.
//! * `adm.rs`: the `tgtadm` calls, tgt's error strings, and the reconciliation of a live target
//!   with its config file (LUN, CHAP account, ACLs, sessions).
//! * `show.rs`: the parser of `tgtadm --op show --mode target` ([`ShowTarget`]).

mod adm;
mod conf;
mod helper;
mod ledger;
mod show;

use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{io_err, Result, TargetError};
use crate::iqn;
use crate::iscsi::{self, validate_config_path};
use crate::runner::Runner;
use crate::types::{ExportVolume, TargetConfig};

/// tgt numbers the first data LUN 1 (LUN 0 is the controller).
pub const TGT_LUN: u32 = 1;

const LEDGER: &str = ".ember-tids";
const LOCK: &str = ".lock";

// ---------------------------------------------------------------------------------------------
// The helper
// ---------------------------------------------------------------------------------------------

/// tgt target helper. See the module documentation for the state it keeps and the guarantees.
pub struct TgtAdm {
    cfg: TargetConfig,
    runner: Runner,
    lock: Mutex<()>,
    /// How often LUN 1 is re-added when tgt does not list it after creation.
    lun_retries: u32,
    lun_retry_delay: Duration,
    /// How often (200 ms apart) a non-forced removal re-checks for sessions before failing.
    session_polls: u32,
}

impl std::fmt::Debug for TgtAdm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TgtAdm").field("cfg", &self.cfg).finish()
    }
}

impl TgtAdm {
    /// Validates `cfg` and creates `volumes_dir` (0700).
    pub fn new(cfg: TargetConfig) -> Result<Self> {
        iqn::validate_prefix(&cfg.target_prefix)?;
        for ip in std::iter::once(&cfg.target_ip_address).chain(&cfg.target_secondary_ip_addresses)
        {
            let bare = ip.trim_start_matches('[').trim_end_matches(']');
            if bare.parse::<IpAddr>().is_err() {
                return Err(TargetError::InvalidValue {
                    field: "target_ip_address",
                    value: ip.clone(),
                    reason: "must be an IP address",
                });
            }
        }
        validate_driver(&cfg.target_protocol)?;
        if !cfg.iscsi_target_flags.is_empty() {
            validate_bsoflags(&cfg.iscsi_target_flags)?;
        }
        validate_config_path(&cfg.volumes_dir, "volumes_dir")?;
        iscsi::create_state_dir(&cfg.volumes_dir)?;
        Ok(Self {
            runner: Runner::new(cfg.command_timeout),
            cfg,
            lock: Mutex::new(()),
            lun_retries: 3,
            lun_retry_delay: Duration::from_millis(500),
            session_polls: 5,
        })
    }

    pub fn config(&self) -> &TargetConfig {
        &self.cfg
    }

    /// The IQN of a volume: `target_prefix + name`.
    pub fn iqn_for(&self, vol: &ExportVolume) -> Result<String> {
        iscsi::volume_iqn(&self.cfg, vol)
    }

    /// The per-volume config file.
    pub fn conf_path(&self, vol: &ExportVolume) -> PathBuf {
        self.cfg.volumes_dir.join(&vol.name)
    }

    // -- locking -------------------------------------------------------------------------

    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.cfg.volumes_dir.join(LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("cannot open lock file", &path))?;
        let _flock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| TargetError::Io {
                op: "cannot lock",
                path: path.clone(),
                source: errno.into(),
            })?;
        f()
    }
}

pub use conf::TgtConf;
use conf::{validate_bsoflags, validate_driver};
pub use ledger::{parse_ledger, LedgerEntry};
pub use show::{parse_show_targets, Nexus, NexusConnection, ShowAccount, ShowLun, ShowTarget};
