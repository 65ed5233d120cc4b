//! The per-volume tgt config file (Cinder's layout and tgt-admin syntax, plus Ember's
//! `# ember-...:` comment lines): [`TgtConf`], validated field by field, rendered and parsed
//! back. No value can add a line.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::chap::{Chap, Secret};
use crate::error::{Result, TargetError};
use crate::iqn;
use crate::iscsi::{self, validate_config_path};
use crate::window::Window;

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

pub(super) fn validate_bsoflags(flags: &str) -> Result<()> {
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

pub(super) fn validate_driver(d: &str) -> Result<()> {
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
        iscsi::validate_volume_id(&self.volume_id)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
