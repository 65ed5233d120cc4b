//! The target id ledger `.ember-tids`: one `<tid> <iqn> <volume id>` line per export ever
//! created. Target ids are allocated above every id in the ledger and every id live in tgtd and
//! never handed out twice; an IQN recorded for one volume id is refused for another.

use std::fs;
use std::path::PathBuf;

use super::{TgtAdm, LEDGER};
use crate::chap::write_file_atomic;
use crate::error::{io_err, Result, TargetError};

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

impl TgtAdm {
    pub(super) fn ledger_path(&self) -> PathBuf {
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

    pub(super) fn write_ledger(&self, entries: &[LedgerEntry]) -> Result<()> {
        let mut text =
            String::from("# Ember target id ledger: <tid> <iqn> <volume id>; never reuse a tid\n");
        for e in entries {
            text.push_str(&format!("{} {} {}\n", e.tid, e.iqn, e.volume_id));
        }
        write_file_atomic(&self.ledger_path(), text.as_bytes(), 0o600)
    }

    /// Refuses an IQN the ledger gave to another volume id.
    pub(super) fn check_iqn_owner(
        ledger: &[LedgerEntry],
        iqn: &str,
        volume_id: &str,
    ) -> Result<()> {
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
    pub(super) fn allocate_tid(&self, iqn: &str, volume_id: &str) -> Result<u32> {
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
    pub(super) fn record_tid(&self, tid: u32, iqn: &str, volume_id: &str) -> Result<()> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
