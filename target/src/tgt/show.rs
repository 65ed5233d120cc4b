//! `tgtadm --op show --mode target` output, parsed once into typed structs ([`ShowTarget`]:
//! LUNs, accounts, ACLs, sessions). Targets are then found by exact IQN, never by substring.

use crate::error::{Result, TargetError};

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

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW_SESSIONS: &str = include_str!("../testdata/tgt_show_sessions.txt");
    const SHOW_ACLS: &str = include_str!("../testdata/tgt_show_acls.txt");

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
}
