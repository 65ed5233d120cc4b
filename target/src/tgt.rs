//! The tgt (Linux SCSI target framework, `tgtd`) implementation of [`TargetHelper`].
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

use std::collections::BTreeSet;
use std::fs;
use std::io::{Seek, SeekFrom};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::chap::{write_file_atomic, Chap, Secret};
use crate::error::{Result, TargetError};
use crate::iqn;
use crate::runner::{Arg, Output, Runner};
use crate::types::{
    parse_provider_auth, parse_provider_location, ConnectionInfo, Connector, ExportModel,
    ExportVolume, ProviderLocation, TargetConfig,
};
use crate::window::{self, Window};
use crate::TargetHelper;

/// tgt numbers the first data LUN 1 (LUN 0 is the controller).
pub const TGT_LUN: u32 = 1;

const LEDGER: &str = ".ember-tids";
const LOCK: &str = ".lock";

// ---------------------------------------------------------------------------------------------
// `tgtadm --op show --mode target` output
// ---------------------------------------------------------------------------------------------

/// One target as `tgtadm --op show --mode target` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShowTarget {
    pub tid: u32,
    pub iqn: String,
    pub driver: String,
    pub state: String,
    pub nexuses: Vec<Nexus>,
    pub luns: Vec<ShowLun>,
    pub accounts: Vec<ShowAccount>,
    pub acls: Vec<String>,
}

impl ShowTarget {
    pub fn lun(&self, lun: u32) -> Option<&ShowLun> {
        self.luns.iter().find(|l| l.lun == lun)
    }
}

/// An I_T nexus (a session) with its connections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nexus {
    pub sid: u64,
    pub initiator: String,
    pub connections: Vec<NexusConnection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NexusConnection {
    pub cid: u32,
    pub ip: Option<String>,
}

/// A logical unit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShowLun {
    pub lun: u32,
    pub lun_type: String,
    pub scsi_id: String,
    pub scsi_sn: String,
    /// tgt prints the size in units of 1000 * 1000 bytes, rounded down.
    pub size_mb: u64,
    pub block_size: u32,
    pub backing_type: String,
    pub backing_path: String,
    pub backing_flags: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShowAccount {
    pub user: String,
    pub outgoing: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    System,
    Nexus,
    Lun,
    Account,
    Acl,
    Other,
}

/// Parses the complete output of `tgtadm --lld iscsi --op show --mode target` into typed targets.
/// Lines are placed by their indentation (0: target, 4: section, 8: item, 12: item field,
/// 16: connection field); unknown fields are ignored, malformed known ones are errors.
pub fn parse_show_targets(text: &str) -> Result<Vec<ShowTarget>> {
    let perr = |line: &str, reason: &'static str| TargetError::Parse {
        what: "tgtadm --op show --mode target",
        line: line.to_owned(),
        reason,
    };
    let mut targets: Vec<ShowTarget> = Vec::new();
    let mut section = Section::None;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start_matches(' ').len();
        if indent == 0 {
            let rest = t
                .strip_prefix("Target ")
                .ok_or_else(|| perr(line, "expected `Target <tid>: <iqn>`"))?;
            let (tid, name) = rest
                .split_once(": ")
                .ok_or_else(|| perr(line, "expected `Target <tid>: <iqn>`"))?;
            let tid = tid
                .parse::<u32>()
                .map_err(|_| perr(line, "target id is not a number"))?;
            targets.push(ShowTarget {
                tid,
                iqn: name.trim().to_owned(),
                ..Default::default()
            });
            section = Section::None;
            continue;
        }
        let target = targets
            .last_mut()
            .ok_or_else(|| perr(line, "indented line before the first target"))?;
        match indent {
            4 => {
                section = match t {
                    "System information:" => Section::System,
                    "I_T nexus information:" => Section::Nexus,
                    "LUN information:" => Section::Lun,
                    "Account information:" => Section::Account,
                    "ACL information:" => Section::Acl,
                    _ => Section::Other,
                }
            }
            8 => match section {
                Section::System => {
                    if let Some(v) = t.strip_prefix("Driver: ") {
                        target.driver = v.to_owned();
                    } else if let Some(v) = t.strip_prefix("State: ") {
                        target.state = v.to_owned();
                    }
                }
                Section::Nexus => {
                    let v = t
                        .strip_prefix("I_T nexus: ")
                        .ok_or_else(|| perr(line, "expected `I_T nexus: <sid>`"))?;
                    let sid = v
                        .parse::<u64>()
                        .map_err(|_| perr(line, "nexus id is not a number"))?;
                    target.nexuses.push(Nexus {
                        sid,
                        ..Default::default()
                    });
                }
                Section::Lun => {
                    let v = t
                        .strip_prefix("LUN: ")
                        .ok_or_else(|| perr(line, "expected `LUN: <n>`"))?;
                    let lun = v
                        .parse::<u32>()
                        .map_err(|_| perr(line, "LUN is not a number"))?;
                    target.luns.push(ShowLun {
                        lun,
                        ..Default::default()
                    });
                }
                Section::Account => {
                    let (user, outgoing) = match t.strip_suffix(" (outgoing)") {
                        Some(u) => (u, true),
                        None => (t, false),
                    };
                    target.accounts.push(ShowAccount {
                        user: user.to_owned(),
                        outgoing,
                    });
                }
                Section::Acl => target.acls.push(t.to_owned()),
                Section::None => return Err(perr(line, "item outside a section")),
                Section::Other => {}
            },
            12 => match section {
                Section::Nexus => {
                    let nexus = target
                        .nexuses
                        .last_mut()
                        .ok_or_else(|| perr(line, "nexus field before `I_T nexus:`"))?;
                    if let Some(v) = t.strip_prefix("Initiator: ") {
                        let name = v.split_once(" alias: ").map_or(v, |(n, _)| n);
                        nexus.initiator = name.trim().to_owned();
                    } else if let Some(v) = t.strip_prefix("Connection: ") {
                        let cid = v
                            .parse::<u32>()
                            .map_err(|_| perr(line, "connection id is not a number"))?;
                        nexus.connections.push(NexusConnection { cid, ip: None });
                    }
                }
                Section::Lun => {
                    let lun = target
                        .luns
                        .last_mut()
                        .ok_or_else(|| perr(line, "LUN field before `LUN:`"))?;
                    let Some((key, value)) = t.split_once(':') else {
                        continue;
                    };
                    let value = value.trim();
                    match key {
                        "Type" => lun.lun_type = value.to_owned(),
                        "SCSI ID" => lun.scsi_id = value.to_owned(),
                        "SCSI SN" => lun.scsi_sn = value.to_owned(),
                        "Size" => {
                            // "67 MB, Block size: 512"
                            let (size, block) =
                                value.split_once(", Block size: ").ok_or_else(|| {
                                    perr(line, "expected `Size: N MB, Block size: B`")
                                })?;
                            lun.size_mb = size
                                .strip_suffix(" MB")
                                .and_then(|s| s.parse().ok())
                                .ok_or_else(|| perr(line, "size is not `N MB`"))?;
                            lun.block_size = block
                                .parse()
                                .map_err(|_| perr(line, "block size is not a number"))?;
                        }
                        "Backing store type" => lun.backing_type = value.to_owned(),
                        "Backing store path" => lun.backing_path = value.to_owned(),
                        "Backing store flags" => lun.backing_flags = value.to_owned(),
                        _ => {}
                    }
                }
                _ => {}
            },
            16 if section == Section::Nexus => {
                if let Some(v) = t.strip_prefix("IP Address: ") {
                    let conn = target
                        .nexuses
                        .last_mut()
                        .and_then(|n| n.connections.last_mut())
                        .ok_or_else(|| perr(line, "IP address before `Connection:`"))?;
                    conn.ip = Some(v.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(targets)
}

// ---------------------------------------------------------------------------------------------
// Per-volume config file
// ---------------------------------------------------------------------------------------------

/// Everything Ember writes into (and reads back from) a per-volume tgt config file. Every field
/// is validated before rendering, so no value can add a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgtConf {
    pub tid: u32,
    pub volume_id: String,
    pub iqn: String,
    /// The device tgt opens: the volume's path, or the loop device showing its window.
    pub backing_store: PathBuf,
    pub window: Option<Window>,
    pub driver: String,
    pub chap: Option<Chap>,
    pub initiator_names: Vec<String>,
    pub initiator_addresses: Vec<String>,
    pub write_cache: bool,
    pub bsoflags: Option<String>,
    /// `scsi_sn` and `scsi_id`: the volume name.
    pub scsi_name: String,
}

/// A path written into a config file: absolute, printable ASCII, no whitespace or tgt-config
/// syntax characters.
pub fn validate_config_path(p: &Path, field: &'static str) -> Result<()> {
    let s = p.to_str().unwrap_or("");
    let reason = if s.is_empty() {
        Some("must be valid UTF-8")
    } else if !s.starts_with('/') {
        Some("must be absolute")
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"#<>\"'\\,=".contains(&b))
    {
        // `,` and `=` would add keys to tgtadm's and LIO's `key=value,...` parameter strings.
        Some("must be printable ASCII without whitespace, quotes, `#`, `<`, `>`, `\\`, `,`, `=`")
    } else if s.split('/').any(|c| c == "..") {
        Some("must not contain `..`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(TargetError::InvalidValue {
            field,
            value: p.display().to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn validate_bsoflags(flags: &str) -> Result<()> {
    if matches!(flags, "sync" | "direct" | "sync:direct" | "direct:sync") {
        Ok(())
    } else {
        Err(TargetError::InvalidValue {
            field: "iscsi_target_flags",
            value: flags.to_owned(),
            reason: "tgt bsoflags must be sync, direct or sync:direct",
        })
    }
}

fn validate_driver(d: &str) -> Result<()> {
    if matches!(d, "iscsi" | "iser") {
        Ok(())
    } else {
        Err(TargetError::InvalidValue {
            field: "target_protocol",
            value: d.to_owned(),
            reason: "must be iscsi or iser",
        })
    }
}

fn validate_address(a: &str) -> Result<()> {
    let (ip, prefix) = match a.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (a, None),
    };
    let ok = ip.parse::<IpAddr>().is_ok_and(|ip| match prefix {
        None => true,
        Some(p) => p
            .parse::<u8>()
            .is_ok_and(|p| p <= if ip.is_ipv4() { 32 } else { 128 }),
    });
    if ok {
        Ok(())
    } else {
        Err(TargetError::InvalidValue {
            field: "initiator address",
            value: a.to_owned(),
            reason: "must be an IP address or CIDR network",
        })
    }
}

impl TgtConf {
    /// Checks every field that ends up in the file or on a tgtadm command line.
    pub fn validate(&self) -> Result<()> {
        iqn::validate_iqn(&self.iqn)?;
        validate_config_path(&self.backing_store, "backing store")?;
        if let Some(w) = &self.window {
            validate_config_path(&w.source, "backing window source")?;
        }
        validate_driver(&self.driver)?;
        if let Some(c) = &self.chap {
            Chap::new(&c.username, c.secret.clone())?;
        }
        for n in &self.initiator_names {
            iqn::validate_initiator_name(n)?;
        }
        for a in &self.initiator_addresses {
            validate_address(a)?;
        }
        if let Some(f) = &self.bsoflags {
            validate_bsoflags(f)?;
        }
        iqn::validate_volume_name(&self.scsi_name)?;
        if self.volume_id.is_empty()
            || !self
                .volume_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(TargetError::InvalidValue {
                field: "volume id",
                value: self.volume_id.clone(),
                reason: "only letters, digits and `-` are allowed",
            });
        }
        if self.tid == 0 {
            return Err(TargetError::InvalidValue {
                field: "target id",
                value: "0".into(),
                reason: "tgt target ids start at 1",
            });
        }
        Ok(())
    }

    /// The file text (validated first).
    pub fn render(&self) -> Result<String> {
        self.validate()?;
        let mut s = String::new();
        s.push_str("# Written by Ember (ember-target). One target per file, tgt config syntax.\n");
        s.push_str(&format!("# ember-tid: {}\n", self.tid));
        s.push_str(&format!("# ember-volume-id: {}\n", self.volume_id));
        if let Some(w) = &self.window {
            s.push_str(&format!(
                "# ember-window: {} {} {}\n",
                w.source.display(),
                w.offset,
                w.len
            ));
        }
        s.push_str(&format!("<target {}>\n", self.iqn));
        s.push_str(&format!(
            "    backing-store {}\n",
            self.backing_store.display()
        ));
        s.push_str(&format!("    driver {}\n", self.driver));
        if let Some(c) = &self.chap {
            s.push_str(&format!(
                "    incominguser {} {}\n",
                c.username,
                c.secret.expose()
            ));
        }
        for n in &self.initiator_names {
            s.push_str(&format!("    initiator-name {n}\n"));
        }
        for a in &self.initiator_addresses {
            s.push_str(&format!("    initiator-address {a}\n"));
        }
        if let Some(f) = &self.bsoflags {
            s.push_str(&format!("    bsoflags {f}\n"));
        }
        s.push_str(&format!(
            "    write-cache {}\n",
            if self.write_cache { "on" } else { "off" }
        ));
        s.push_str(&format!("    scsi_sn {}\n", self.scsi_name));
        s.push_str(&format!("    scsi_id {}\n", self.scsi_name));
        s.push_str("</target>\n");
        Ok(s)
    }

    /// Parses a file [`render`](Self::render) wrote; anything else is rejected. The error never
    /// contains the line with the secret.
    pub fn parse(text: &str) -> Result<Self> {
        let perr = |line: &str, reason: &'static str| TargetError::Parse {
            what: "tgt volume config",
            line: if line.contains("incominguser") {
                "incominguser ***".to_owned()
            } else {
                line.to_owned()
            },
            reason,
        };
        let mut tid = None;
        let mut volume_id = None;
        let mut window = None;
        let mut iqn_v = None;
        let mut backing = None;
        let mut driver = None;
        let mut chap = None;
        let mut names = Vec::new();
        let mut addrs = Vec::new();
        let mut bsoflags = None;
        let mut write_cache = true;
        let mut scsi_sn = None;
        let mut scsi_id = None;
        let mut closed = false;
        for line in text.lines() {
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            if let Some(c) = t.strip_prefix('#') {
                let c = c.trim();
                if let Some(v) = c.strip_prefix("ember-tid:") {
                    tid = Some(
                        v.trim()
                            .parse::<u32>()
                            .map_err(|_| perr(line, "bad ember-tid"))?,
                    );
                } else if let Some(v) = c.strip_prefix("ember-volume-id:") {
                    volume_id = Some(v.trim().to_owned());
                } else if let Some(v) = c.strip_prefix("ember-window:") {
                    let f: Vec<&str> = v.split_whitespace().collect();
                    let [src, off, len] = f[..] else {
                        return Err(perr(line, "bad ember-window"));
                    };
                    window = Some(Window {
                        source: PathBuf::from(src),
                        offset: off.parse().map_err(|_| perr(line, "bad window offset"))?,
                        len: len.parse().map_err(|_| perr(line, "bad window length"))?,
                    });
                }
                continue;
            }
            if closed {
                return Err(perr(line, "text after </target>"));
            }
            if let Some(v) = t.strip_prefix("<target ").and_then(|v| v.strip_suffix('>')) {
                if iqn_v.is_some() {
                    return Err(perr(line, "more than one target"));
                }
                iqn_v = Some(v.trim().to_owned());
                continue;
            }
            if t == "</target>" {
                closed = true;
                continue;
            }
            if iqn_v.is_none() {
                return Err(perr(line, "directive outside <target>"));
            }
            let mut words = t.split_whitespace();
            let key = words.next().unwrap_or_default();
            let args: Vec<&str> = words.collect();
            let once = |slot_set: bool| {
                if slot_set {
                    Err(perr(line, "directive given twice"))
                } else {
                    Ok(())
                }
            };
            match (key, &args[..]) {
                ("backing-store", [p]) => {
                    once(backing.is_some())?;
                    backing = Some(PathBuf::from(p))
                }
                ("driver", [d]) => {
                    once(driver.is_some())?;
                    driver = Some((*d).to_owned())
                }
                ("incominguser", [u, s]) => {
                    if chap.is_some() {
                        return Err(perr(line, "more than one incominguser"));
                    }
                    chap = Some(Chap::new(u, Secret::new(*s))?)
                }
                ("initiator-name", [n]) => names.push((*n).to_owned()),
                ("initiator-address", [a]) => addrs.push((*a).to_owned()),
                ("bsoflags", [f]) => {
                    once(bsoflags.is_some())?;
                    bsoflags = Some((*f).to_owned())
                }
                ("write-cache", ["on"]) => write_cache = true,
                ("write-cache", ["off"]) => write_cache = false,
                ("scsi_sn", [v]) => {
                    once(scsi_sn.is_some())?;
                    scsi_sn = Some((*v).to_owned())
                }
                ("scsi_id", [v]) => {
                    once(scsi_id.is_some())?;
                    scsi_id = Some((*v).to_owned())
                }
                _ => return Err(perr(line, "unexpected directive")),
            }
        }
        let missing = |what: &'static str| TargetError::Parse {
            what: "tgt volume config",
            line: String::new(),
            reason: what,
        };
        if !closed {
            return Err(missing("no </target>"));
        }
        let scsi_name = scsi_sn.ok_or_else(|| missing("no scsi_sn"))?;
        if scsi_id.as_deref() != Some(scsi_name.as_str()) {
            return Err(missing("scsi_id differs from scsi_sn"));
        }
        let conf = TgtConf {
            tid: tid.ok_or_else(|| missing("no ember-tid comment"))?,
            volume_id: volume_id.ok_or_else(|| missing("no ember-volume-id comment"))?,
            iqn: iqn_v.ok_or_else(|| missing("no <target>"))?,
            backing_store: backing.ok_or_else(|| missing("no backing-store"))?,
            window,
            driver: driver.unwrap_or_else(|| "iscsi".to_owned()),
            chap,
            initiator_names: names,
            initiator_addresses: addrs,
            write_cache,
            bsoflags,
            scsi_name,
        };
        conf.validate()?;
        Ok(conf)
    }
}

// ---------------------------------------------------------------------------------------------
// Target id ledger
// ---------------------------------------------------------------------------------------------

/// One ledger line: a tid handed out for an IQN of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub tid: u32,
    pub iqn: String,
    pub volume_id: String,
}

/// Parses `.ember-tids`.
pub fn parse_ledger(text: &str) -> Result<Vec<LedgerEntry>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let bad = |reason| TargetError::Parse {
                what: "target id ledger",
                line: l.to_owned(),
                reason,
            };
            let [tid, iqn, vid] = f[..] else {
                return Err(bad("expected `<tid> <iqn> <volume id>`"));
            };
            Ok(LedgerEntry {
                tid: tid.parse().map_err(|_| bad("tid is not a number"))?,
                iqn: iqn.to_owned(),
                volume_id: vid.to_owned(),
            })
        })
        .collect()
}

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

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TargetError {
    let path = path.to_owned();
    move |source| TargetError::Io { op, path, source }
}

fn is_not_found(e: &TargetError) -> bool {
    matches!(e, TargetError::Command { stderr, .. }
        if stderr.contains("can't find the target")
            || stderr.contains("can't find the account")
            || stderr.contains("access control rule does not exist")
            || stderr.contains("can't find the logical unit"))
}

fn is_already_exists(e: &TargetError) -> bool {
    matches!(e, TargetError::Command { stderr, .. } if stderr.contains("already exists"))
}

fn is_busy(e: &TargetError) -> bool {
    matches!(e, TargetError::Command { stderr, .. } if stderr.contains("still active"))
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
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.volumes_dir)
            .map_err(io_err("cannot create", &cfg.volumes_dir))?;
        fs::set_permissions(&cfg.volumes_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("cannot chmod", &cfg.volumes_dir))?;
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
        iqn::target_iqn(&self.cfg.target_prefix, &vol.name)
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

    // -- tgtadm --------------------------------------------------------------------------

    fn tgtadm(&self, args: &[Arg]) -> Result<Output> {
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

    fn op(&self, op: &str, mode: &str, tid: u32, rest: &[Arg]) -> Result<Output> {
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

    fn new_lun(&self, conf: &TgtConf) -> Result<()> {
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
        self.op(
            "update",
            "logicalunit",
            conf.tid,
            &[
                "--lun".into(),
                TGT_LUN.to_string().into(),
                "--params".into(),
                format!("scsi_sn={0},scsi_id={0}", conf.scsi_name).into(),
            ],
        )?;
        if !conf.write_cache {
            // What tgt-admin sends for `write-cache off`: caching mode page with WCE cleared.
            self.op(
                "update",
                "logicalunit",
                conf.tid,
                &[
                    "--lun".into(),
                    TGT_LUN.to_string().into(),
                    "--params".into(),
                    "mode_page=8:0:18:0x10:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80:0x14:0:0:0:0:0:0"
                        .into(),
                ],
            )?;
        }
        Ok(())
    }

    fn delete_lun(&self, tid: u32) -> Result<()> {
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

    fn ensure_account(&self, tid: u32, chap: &Chap, bound: bool) -> Result<()> {
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

    fn delete_account(&self, user: &str) -> Result<()> {
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

    fn acl_arg(rule: &str) -> &'static str {
        if rule.starts_with("iqn.") || rule.starts_with("eui.") || rule.starts_with("naa.") {
            "--initiator-name"
        } else {
            "--initiator-address"
        }
    }

    /// Makes tgtd's target match `conf` (creating it when absent). `created` tells whether this
    /// call created the target (the caller rolls back only what it created).
    fn apply(&self, conf: &TgtConf) -> Result<bool> {
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

    fn reconcile(&self, conf: &TgtConf, current: &mut ShowTarget) -> Result<()> {
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

    // -- state files -----------------------------------------------------------------------

    fn read_conf(&self, vol: &ExportVolume) -> Result<Option<TgtConf>> {
        let path = self.conf_path(vol);
        match fs::read_to_string(&path) {
            Ok(text) => TgtConf::parse(&text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    fn write_conf(&self, vol: &ExportVolume, conf: &TgtConf) -> Result<()> {
        let text = conf.render()?;
        write_file_atomic(&self.conf_path(vol), text.as_bytes(), 0o600)
    }

    fn remove_conf(&self, vol: &ExportVolume) -> Result<()> {
        let path = self.conf_path(vol);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot remove", &path)(e)),
        }
    }

    fn ledger_path(&self) -> PathBuf {
        self.cfg.volumes_dir.join(LEDGER)
    }

    /// The target id ledger.
    pub fn ledger(&self) -> Result<Vec<LedgerEntry>> {
        let path = self.ledger_path();
        match fs::read_to_string(&path) {
            Ok(text) => parse_ledger(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    fn write_ledger(&self, entries: &[LedgerEntry]) -> Result<()> {
        let mut text =
            String::from("# Ember target id ledger: <tid> <iqn> <volume id>; never reuse a tid\n");
        for e in entries {
            text.push_str(&format!("{} {} {}\n", e.tid, e.iqn, e.volume_id));
        }
        write_file_atomic(&self.ledger_path(), text.as_bytes(), 0o600)
    }

    /// Refuses an IQN the ledger gave to another volume id.
    fn check_iqn_owner(ledger: &[LedgerEntry], iqn: &str, volume_id: &str) -> Result<()> {
        if ledger
            .iter()
            .any(|e| e.iqn == iqn && e.volume_id != volume_id)
        {
            return Err(TargetError::InvalidValue {
                field: "volume",
                value: volume_id.to_owned(),
                reason: "its IQN was already used by another volume id; IQNs are never reused",
            });
        }
        Ok(())
    }

    /// Allocates a fresh target id for `iqn`: above every id ever handed out and every id live in
    /// tgtd; recorded before use.
    fn allocate_tid(&self, iqn: &str, volume_id: &str) -> Result<u32> {
        let mut ledger = self.ledger()?;
        Self::check_iqn_owner(&ledger, iqn, volume_id)?;
        let live_max = self
            .show_targets()?
            .iter()
            .map(|t| t.tid)
            .max()
            .unwrap_or(0);
        let ledger_max = ledger.iter().map(|e| e.tid).max().unwrap_or(0);
        let tid = live_max
            .max(ledger_max)
            .checked_add(1)
            .ok_or(TargetError::InvalidValue {
                field: "target id",
                value: u32::MAX.to_string(),
                reason: "target ids exhausted",
            })?;
        ledger.push(LedgerEntry {
            tid,
            iqn: iqn.to_owned(),
            volume_id: volume_id.to_owned(),
        });
        self.write_ledger(&ledger)?;
        Ok(tid)
    }

    /// Records `(tid, iqn, volume)` from a stored model (ensure_export); refuses a tid the ledger
    /// gave to another IQN.
    fn record_tid(&self, tid: u32, iqn: &str, volume_id: &str) -> Result<()> {
        let mut ledger = self.ledger()?;
        Self::check_iqn_owner(&ledger, iqn, volume_id)?;
        if let Some(e) = ledger.iter().find(|e| e.tid == tid) {
            if e.iqn != iqn {
                return Err(TargetError::CreateFailed {
                    iqn: iqn.to_owned(),
                    reason: format!("target id {tid} was handed out to {}", e.iqn),
                });
            }
            return Ok(());
        }
        ledger.push(LedgerEntry {
            tid,
            iqn: iqn.to_owned(),
            volume_id: volume_id.to_owned(),
        });
        self.write_ledger(&ledger)
    }

    // -- volume checks ------------------------------------------------------------------------

    /// Validates `vol` before anything is written: name, id, backing path (absolute, existing,
    /// large enough for the window or the volume).
    fn validate_volume(&self, vol: &ExportVolume) -> Result<()> {
        iqn::validate_volume_name(&vol.name)?;
        if vol.id.is_empty()
            || !vol
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(TargetError::InvalidValue {
                field: "volume id",
                value: vol.id.clone(),
                reason: "only letters, digits and `-` are allowed",
            });
        }
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

    fn window_of(vol: &ExportVolume) -> Option<Window> {
        vol.is_windowed().then(|| Window {
            source: vol.backing_path.clone(),
            offset: vol.backing_offset,
            len: vol.backing_len.unwrap_or(vol.size_bytes),
        })
    }

    /// The device tgt must open for `vol` (setting up the loop device for a window).
    fn backing_store(&self, vol: &ExportVolume) -> Result<(PathBuf, Option<Window>)> {
        match Self::window_of(vol) {
            Some(w) => Ok((window::ensure(&self.runner, &w)?, Some(w))),
            None => Ok((vol.backing_path.clone(), None)),
        }
    }

    fn base_conf(
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

    fn model_of(&self, conf: &TgtConf) -> ExportModel {
        let loc = ProviderLocation {
            portals: self.cfg.portals(),
            tid: conf.tid,
            iqn: conf.iqn.clone(),
            lun: TGT_LUN,
        };
        ExportModel {
            provider_location: loc.to_string(),
            provider_auth: conf.chap.as_ref().map(Chap::to_provider_auth),
        }
    }

    /// Parses a stored model and checks it names this volume's IQN and tgt's LUN.
    fn check_model(
        &self,
        vol: &ExportVolume,
        model: &ExportModel,
    ) -> Result<(ProviderLocation, Option<Chap>)> {
        let loc = parse_provider_location(&model.provider_location)?;
        let expected = self.iqn_for(vol)?;
        if loc.iqn != expected {
            return Err(TargetError::ModelMismatch {
                volume: vol.name.clone(),
                iqn: loc.iqn,
                expected,
            });
        }
        if loc.lun != TGT_LUN {
            return Err(TargetError::ProviderLocation {
                location: model.provider_location.clone(),
                reason: "tgt exports use LUN 1",
            });
        }
        let chap = match &model.provider_auth {
            Some(a) => parse_provider_auth(a)?,
            None => None,
        };
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

    fn close_sessions(&self, tid: u32, nexuses: &[&Nexus]) -> Result<()> {
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
                .or_else(|| Self::window_of(vol));
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
                    return Err(TargetError::TargetInUse {
                        iqn,
                        sessions: t.nexuses.len(),
                        initiators: t
                            .nexuses
                            .iter()
                            .map(|n| n.initiator.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
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
        let portals = if loc.portals.is_empty() {
            self.cfg.portals()
        } else {
            loc.portals.clone()
        };
        Ok(ConnectionInfo::iscsi(
            &self.cfg,
            vol,
            &loc,
            portals,
            connector.multipath,
            chap,
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW_SESSIONS: &str = include_str!("testdata/tgt_show_sessions.txt");
    const SHOW_ACLS: &str = include_str!("testdata/tgt_show_acls.txt");

    #[test]
    fn parses_targets_with_sessions() {
        let t = parse_show_targets(SHOW_SESSIONS).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].tid, 5);
        assert_eq!(t[0].iqn, "iqn.2010-10.org.openstack:volume-a");
        assert_eq!(t[0].driver, "iscsi");
        assert_eq!(t[0].state, "ready");
        assert_eq!(t[0].nexuses.len(), 2);
        assert_eq!(t[0].nexuses[0].sid, 6);
        assert_eq!(t[0].nexuses[0].initiator, "iqn.2025-01.org.test:init1");
        assert_eq!(
            t[0].nexuses[1].connections,
            vec![NexusConnection {
                cid: 0,
                ip: Some("127.0.0.1".into())
            }]
        );
        let lun1 = t[0].lun(1).unwrap();
        assert_eq!(lun1.lun_type, "disk");
        assert_eq!(lun1.size_mb, 67);
        assert_eq!(lun1.block_size, 512);
        assert_eq!(lun1.backing_path, "/tmp/tgx/a.img");
        assert_eq!(lun1.backing_type, "rdwr");
        assert_eq!(t[0].lun(0).unwrap().lun_type, "controller");
        assert_eq!(
            t[0].accounts,
            vec![ShowAccount {
                user: "u1".into(),
                outgoing: false
            }]
        );
        assert_eq!(t[0].acls, vec!["iqn.2025-01.org.test:init1".to_string()]);
        assert_eq!(t[1].tid, 9);
        assert_eq!(t[1].luns.len(), 3);
        assert_eq!(t[1].lun(2).unwrap().backing_flags, "direct");
        assert!(t[1].nexuses.is_empty());
    }

    #[test]
    fn parses_acls_and_outgoing_accounts() {
        let t = parse_show_targets(SHOW_ACLS).unwrap();
        let b = t
            .iter()
            .find(|t| t.iqn == "iqn.2010-10.org.openstack:volume-b")
            .unwrap();
        assert_eq!(
            b.acls,
            vec!["ALL", "10.0.0.0/8", "iqn.2025-01.org.test:init9"]
        );
        assert_eq!(
            b.accounts,
            vec![ShowAccount {
                user: "outu".into(),
                outgoing: true
            }]
        );
        let a = &t[0];
        assert_eq!(a.lun(1).unwrap().scsi_sn, "beaf51");
    }

    #[test]
    fn finds_by_exact_iqn_not_substring() {
        let text = "Target 1: iqn.2010-10.org.openstack:volume-a1\n    System information:\n        Driver: iscsi\n        State: ready\nTarget 2: iqn.2010-10.org.openstack:volume-a\n    System information:\n        Driver: iscsi\n";
        let t = parse_show_targets(text).unwrap();
        let found = t
            .iter()
            .find(|t| t.iqn == "iqn.2010-10.org.openstack:volume-a")
            .unwrap();
        assert_eq!(found.tid, 2);
    }

    #[test]
    fn empty_and_malformed_show_output() {
        assert!(parse_show_targets("").unwrap().is_empty());
        assert!(parse_show_targets("    LUN information:\n").is_err());
        assert!(parse_show_targets("Target x: iqn.a\n").is_err());
        assert!(parse_show_targets(
            "Target 1: iqn.2010-10.org.a:b\n    LUN information:\n        LUN: one\n"
        )
        .is_err());
        assert!(parse_show_targets("Target 1: iqn.2010-10.org.a:b\n    LUN information:\n        LUN: 1\n            Size: big\n").is_err());
    }

    fn conf() -> TgtConf {
        TgtConf {
            tid: 7,
            volume_id: "0b8e1c2a-4a3e-4c84-9b0e-1d2f3a4b5c6d".into(),
            iqn: "iqn.2010-10.org.openstack:volume-0b8e1c2a-4a3e-4c84-9b0e-1d2f3a4b5c6d".into(),
            backing_store: "/dev/cinder-volumes/volume-0b8e1c2a-4a3e-4c84-9b0e-1d2f3a4b5c6d".into(),
            window: None,
            driver: "iscsi".into(),
            chap: Some(Chap::new("uSeRnAmE2345678901ab", Secret::new("S3cretCHAPpw1234")).unwrap()),
            initiator_names: vec!["iqn.1993-08.org.debian:01:abc".into()],
            initiator_addresses: vec!["10.0.0.5".into()],
            write_cache: true,
            bsoflags: None,
            scsi_name: "volume-0b8e1c2a-4a3e-4c84-9b0e-1d2f3a4b5c6d".into(),
        }
    }

    #[test]
    fn conf_renders_cinder_layout_and_round_trips() {
        let c = conf();
        let text = c.render().unwrap();
        assert!(text.contains(
            "<target iqn.2010-10.org.openstack:volume-0b8e1c2a-4a3e-4c84-9b0e-1d2f3a4b5c6d>\n"
        ));
        assert!(text.contains(
            "    backing-store /dev/cinder-volumes/volume-0b8e1c2a-4a3e-4c84-9b0e-1d2f3a4b5c6d\n"
        ));
        assert!(text.contains("    driver iscsi\n"));
        assert!(text.contains("    incominguser uSeRnAmE2345678901ab S3cretCHAPpw1234\n"));
        assert!(text.contains("    initiator-name iqn.1993-08.org.debian:01:abc\n"));
        assert!(text.contains("    initiator-address 10.0.0.5\n"));
        assert!(text.contains("    write-cache on\n"));
        assert!(text.contains("    scsi_sn volume-0b8e1c2a-4a3e-4c84-9b0e-1d2f3a4b5c6d\n"));
        assert!(text.contains("    scsi_id volume-0b8e1c2a-4a3e-4c84-9b0e-1d2f3a4b5c6d\n"));
        assert!(text.ends_with("</target>\n"));
        assert_eq!(TgtConf::parse(&text).unwrap(), c);
        let mut w = c.clone();
        w.window = Some(Window {
            source: "/dev/vdb".into(),
            offset: 1 << 20,
            len: 8 << 20,
        });
        w.backing_store = "/dev/loop3".into();
        w.write_cache = false;
        w.bsoflags = Some("direct".into());
        w.chap = None;
        assert_eq!(TgtConf::parse(&w.render().unwrap()).unwrap(), w);
    }

    #[test]
    fn conf_rejects_injected_lines() {
        let mut c = conf();
        c.backing_store = "/dev/x\n    backing-store /dev/vda".into();
        assert!(c.render().is_err());
        let mut c = conf();
        c.iqn = "iqn.2010-10.org.openstack:v\n    incominguser a bbbbbbbbbbbbbb".into();
        assert!(c.render().is_err());
        let mut c = conf();
        c.initiator_names = vec!["iqn.2010-10.org.x:a\n    initiator-address ALL".into()];
        assert!(c.render().is_err());
        let mut c = conf();
        c.initiator_addresses = vec!["ALL".into()];
        assert!(c.render().is_err());
        let mut c = conf();
        c.bsoflags = Some("sync\n    backing-store /dev/vda".into());
        assert!(c.render().is_err());
        let mut c = conf();
        c.scsi_name = "a b".into();
        assert!(c.render().is_err());
        // A hand-edited file with an extra backing store is refused on read.
        let text = conf().render().unwrap().replace(
            "    driver iscsi\n",
            "    driver iscsi\n    backing-store /dev/vda\n",
        );
        assert!(TgtConf::parse(&text).is_err());
    }

    #[test]
    fn conf_parse_errors_hide_secret() {
        let text = conf().render().unwrap().replace(
            "incominguser uSeRnAmE2345678901ab S3cretCHAPpw1234",
            "incominguser u S3cretCHAPpw1234 extra",
        );
        let e = TgtConf::parse(&text).unwrap_err();
        let s = format!("{e} {e:?}");
        assert!(!s.contains("S3cret"), "{s}");
    }

    #[test]
    fn ledger_parse() {
        let l = parse_ledger("# c\n3 iqn.2010-10.org.openstack:volume-a aaaa\n4 iqn.2010-10.org.openstack:volume-b bbbb\n").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].tid, 4);
        assert!(parse_ledger("x y z\n").is_err());
        assert!(parse_ledger("1 2\n").is_err());
        assert!(TgtAdm::check_iqn_owner(&l, "iqn.2010-10.org.openstack:volume-a", "zzzz").is_err());
        assert!(TgtAdm::check_iqn_owner(&l, "iqn.2010-10.org.openstack:volume-a", "aaaa").is_ok());
    }

    #[test]
    fn config_paths() {
        validate_config_path(Path::new("/dev/vg/volume-1"), "p").unwrap();
        for p in [
            "relative",
            "/a b",
            "/a\nb",
            "/a/../b",
            "/a#b",
            "/a<b",
            "/a,bsoflags=x",
            "/a=b",
        ] {
            assert!(validate_config_path(Path::new(p), "p").is_err(), "{p:?}");
        }
    }
}
