//! Fuzz harnesses for the strings the target crate reads back from tools, files and callers:
//! `tgtadm --op show` output, the tid ledger, per-volume tgt config files, Cinder's
//! `provider_location`/`provider_auth`, IQNs and initiator names, the os-brick connector JSON.
//! The logic lives here so `cargo test` replays the checked-in corpus
//! (`fuzz/corpus/{tgt_show,target_strings}`) through the code the `fuzz/` targets run.
//! Not a public API.
//!
//! Properties: nothing panics; every value a parser accepts holds no newline (it could add a
//! line to a config file or a command); accepted IQNs and names are ASCII without whitespace or
//! control characters; what is accepted survives a render/parse round trip.

use crate::iqn;
use crate::tgt::{self, TgtConf};
use crate::types::{parse_provider_auth, parse_provider_location, Connector};

/// A parsed value never spans lines. (NUL and other control characters may appear in what tgtd
/// prints, e.g. a remote initiator's name; they only ever reach argument vectors, where
/// `std::process::Command` refuses NUL, never a shell or a config file.)
fn no_newline(what: &str, v: &str) {
    assert!(!v.contains('\n'), "{what} {v:?} holds a newline");
}

/// An accepted token (CHAP user or secret, portal): ASCII graphic characters only, bounded.
fn graphic_token(what: &str, v: &str, max: usize) {
    assert!(!v.is_empty() && v.len() <= max, "{what} {v:?} length");
    assert!(
        v.bytes().all(|b| b.is_ascii_graphic()),
        "{what} {v:?} has whitespace/control/non-ASCII"
    );
}

/// An accepted IQN/initiator/volume name: a [`graphic_token`], no `/`, no leading `-`.
fn clean_token(what: &str, v: &str, max: usize) {
    graphic_token(what, v, max);
    assert!(!v.contains('/') && !v.starts_with('-'), "{what} {v:?}");
}

/// Fuzz entry `tgt_show`: the input as `tgtadm --mode target --op show` output, as the tid
/// ledger and as a per-volume tgt config file.
pub fn tgt_show(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(targets) = tgt::parse_show_targets(&text) {
        for t in &targets {
            no_newline("target iqn", &t.iqn);
            no_newline("driver", &t.driver);
            no_newline("state", &t.state);
            for n in &t.nexuses {
                no_newline("initiator", &n.initiator);
                for c in &n.connections {
                    if let Some(ip) = &c.ip {
                        no_newline("ip", ip);
                    }
                }
            }
            for l in &t.luns {
                for v in [
                    &l.lun_type,
                    &l.scsi_id,
                    &l.scsi_sn,
                    &l.backing_type,
                    &l.backing_path,
                    &l.backing_flags,
                ] {
                    no_newline("lun field", v);
                }
                assert_eq!(t.lun(l.lun).map(|x| x.lun), Some(l.lun));
            }
            for a in &t.accounts {
                no_newline("account", &a.user);
            }
            for a in &t.acls {
                no_newline("acl", a);
            }
        }
    }
    if let Ok(entries) = tgt::parse_ledger(&text) {
        for e in &entries {
            for v in [&e.iqn, &e.volume_id] {
                assert!(
                    !v.is_empty() && !v.contains(char::is_whitespace),
                    "ledger field {v:?}"
                );
            }
        }
    }
    if let Ok(conf) = TgtConf::parse(&text) {
        no_newline("conf iqn", &conf.iqn);
        no_newline("conf volume id", &conf.volume_id);
        no_newline("conf driver", &conf.driver);
        for v in conf.initiator_names.iter().chain(&conf.initiator_addresses) {
            no_newline("conf initiator", v);
        }
        if let Ok(out) = conf.render() {
            let again = TgtConf::parse(&out).expect("a rendered config parses");
            assert_eq!(again, conf, "render/parse round trip changed the config");
        }
    }
}

/// Fuzz entry `target_strings`: the first byte picks the parser, the rest is its input.
pub fn target_strings(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let s = String::from_utf8_lossy(rest);
    match sel % 4 {
        0 => {
            if let Ok(loc) = parse_provider_location(&s) {
                clean_token("provider iqn", &loc.iqn, 223);
                iqn::validate_iqn(&loc.iqn).expect("accepted IQN validates");
                for p in &loc.portals {
                    graphic_token("portal", p, 1 << 16);
                }
                let again = parse_provider_location(&loc.to_string()).expect("round trip parses");
                assert_eq!(again, loc);
            }
        }
        1 => {
            if let Ok(Some(chap)) = parse_provider_auth(&s) {
                graphic_token("chap user", &chap.username, 255);
                graphic_token("chap secret", chap.secret.expose(), 255);
                let again = parse_provider_auth(&chap.to_provider_auth()).expect("round trip");
                assert_eq!(again.as_ref(), Some(&chap));
            }
        }
        2 => {
            for line in s.split('\n').chain([s.as_ref()]) {
                if iqn::validate_iqn(line).is_ok() {
                    clean_token("iqn", line, 223);
                }
                if iqn::validate_initiator_name(line).is_ok() {
                    clean_token("initiator", line, 223);
                }
                if iqn::validate_volume_name(line).is_ok() {
                    clean_token("volume name", line, 128);
                    assert!(!line.starts_with('.'));
                }
                if iqn::validate_prefix(line).is_ok() {
                    no_newline("prefix", line);
                }
                if let Ok(full) = iqn::target_iqn("iqn.2010-10.org.openstack:", line) {
                    clean_token("target iqn", &full, 223);
                }
            }
        }
        _ => {
            if let Ok(c) = serde_json::from_slice::<Connector>(rest) {
                if let Some(i) = &c.initiator {
                    if iqn::validate_initiator_name(i).is_ok() {
                        clean_token("connector initiator", i, 223);
                    }
                }
                let out = serde_json::to_string(&c).expect("a connector serialises");
                let again: Connector = serde_json::from_str(&out).expect("round trip parses");
                assert_eq!(again.initiator, c.initiator);
                assert_eq!(again.multipath, c.multipath);
            }
        }
    }
}
