//! End to end: Ember's tgt helper against a real, private tgtd, with libiscsi (its tools and its
//! library through a small dlopen binding) as the initiator. This kernel has no SCSI layer, so
//! there is no kernel initiator.
//!
//! "Reads back through Ember's engine": the whole volume read through iSCSI is compared with the
//! backing file by `ember_engine::verify::compare`, and an image copied onto the backing file by
//! `ember_engine::copy::copy` is read back through iSCSI. Spot checks use std positioned I/O.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::Duration;

use common::libiscsi::{self, Session};
use common::*;
use ember_engine::{require_root, require_tool};
use ember_target::{
    parse_provider_auth, parse_provider_location, Connector, ExportVolume, TargetError,
    TargetHelper, TgtAdm,
};

const INIT_A: &str = "iqn.2025-11.org.ember.test:initiator-a";
const INIT_B: &str = "iqn.2025-11.org.ember.test:initiator-b";
const MIB: u64 = 1 << 20;

macro_rules! require_tgt {
    () => {
        require_root!();
        require_tool!(
            "tgtd",
            "tgtadm",
            "iscsi-ls",
            "iscsi-inq",
            "iscsi-readcapacity16"
        );
    };
}

fn connector(init: &str) -> Connector {
    Connector {
        initiator: Some(init.to_owned()),
        ip: Some("127.0.0.1".into()),
        host: Some("ember-test".into()),
        ..Connector::default()
    }
}

fn chap_of(model: &ember_target::ExportModel) -> (String, String) {
    let c = parse_provider_auth(model.provider_auth.as_deref().unwrap())
        .unwrap()
        .unwrap();
    (c.username.clone(), c.secret.expose().to_owned())
}

macro_rules! require_libiscsi {
    () => {
        if !libiscsi::available() {
            ember_engine::test_util::skip(module_path!(), "libiscsi.so is not installed");
            return;
        }
    };
}

/// A temp dir, a tgtd of its own and a helper on it; bound as `let (dir, tgtd, helper)`, they
/// drop in reverse: helper, tgtd (killed), dir.
fn tgt_setup() -> (tempfile::TempDir, Tgtd, TgtAdm) {
    let dir = tempfile::tempdir().unwrap();
    let tgtd = Tgtd::start(dir.path());
    let helper = TgtAdm::new(config(dir.path(), &tgtd)).unwrap();
    (dir, tgtd, helper)
}

#[test]
fn export_discovery_chap_and_acl() {
    require_tgt!();
    let (dir, tgtd, helper) = tgt_setup();
    let vol = volume(dir.path(), 64 * MIB);

    let model = helper.create_export(&vol).unwrap();
    let loc = parse_provider_location(&model.provider_location).unwrap();
    assert_eq!(loc.iqn, format!("iqn.2010-10.org.openstack:{}", vol.name));
    assert_eq!(loc.lun, 1);
    assert_eq!(loc.portals, vec![tgtd.portal()]);
    assert_eq!(
        model.provider_location,
        format!("{},{} {} 1", tgtd.portal(), loc.tid, loc.iqn)
    );
    let (user, secret) = chap_of(&model);
    assert!(secret.len() >= 16);
    assert!(!format!("{model:?}").contains(&secret));

    // The per-volume config holds the secret: 0600, Cinder's layout, scsi_sn/scsi_id.
    let conf = dir.path().join("volumes").join(&vol.name);
    let mode = fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = fs::read_to_string(&conf).unwrap();
    assert!(text.contains(&format!("<target {}>", loc.iqn)));
    assert!(text.contains(&format!("backing-store {}", vol.backing_path.display())));
    assert!(text.contains(&format!("incominguser {user} {secret}")));
    assert!(text.contains(&format!("scsi_sn {}", vol.name)));
    assert!(text.contains(&format!("scsi_id {}", vol.name)));

    // No initiator is allowed before initialize_connection.
    let ls = iscsi_tool(
        "iscsi-ls",
        &["-i", INIT_A, &format!("iscsi://{}", tgtd.portal())],
    );
    assert!(
        !ls.stdout.contains(&loc.iqn),
        "visible before attach: {}",
        ls.stdout
    );

    let info = helper
        .initialize_connection(&vol, &model, &connector(INIT_A))
        .unwrap();
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["driver_volume_type"], "iscsi");
    let data = &json["data"];
    assert_eq!(data["target_discovered"], false);
    assert_eq!(data["target_iqn"], loc.iqn.as_str());
    assert_eq!(data["target_portal"], tgtd.portal().as_str());
    assert_eq!(data["target_lun"], 1);
    assert_eq!(data["volume_id"], vol.id.as_str());
    assert_eq!(data["auth_method"], "CHAP");
    assert_eq!(data["auth_username"], user.as_str());
    assert_eq!(data["auth_password"], secret.as_str());
    assert_eq!(data["discard"], false);
    assert!(data.get("target_portals").is_none());
    assert!(!format!("{info:?}").contains(&secret));

    // Discovery finds the export (the discovery session itself is unauthenticated in tgt).
    let ls = iscsi_tool(
        "iscsi-ls",
        &[
            "-s",
            "-i",
            INIT_A,
            &format!("iscsi://{user}%{secret}@{}", tgtd.portal()),
        ],
    );
    assert!(ls.success, "{}", ls.stderr);
    assert!(
        ls.stdout.contains(&format!("Target:{}", loc.iqn)),
        "{}",
        ls.stdout
    );
    assert!(
        ls.stdout.contains("Lun:1    Type:DIRECT_ACCESS"),
        "{}",
        ls.stdout
    );

    // Login with the right CHAP works; the LUN carries scsi_sn = volume name.
    let good = url(&tgtd.portal(), &loc.iqn, 1, Some((&user, &secret)));
    let inq = iscsi_tool("iscsi-inq", &["-i", INIT_A, &good]);
    assert!(inq.success, "{}", inq.stderr);
    assert!(
        inq.stdout.contains("Product:VIRTUAL-DISK"),
        "{}",
        inq.stdout
    );
    let sn = iscsi_tool("iscsi-inq", &["-e", "1", "-c", "128", "-i", INIT_A, &good]);
    // tgt keeps the first 36 bytes of scsi_sn (Cinder sets the 43-byte volume name too).
    assert!(
        sn.stdout.contains(&format!("[{}]", &vol.name[..36])),
        "unit serial: {} {}",
        sn.stdout,
        sn.stderr
    );

    // Wrong secret, no CHAP, wrong user: refused.
    for bad in [
        url(
            &tgtd.portal(),
            &loc.iqn,
            1,
            Some((&user, "WrongSecret12345")),
        ),
        url(&tgtd.portal(), &loc.iqn, 1, None),
        url(&tgtd.portal(), &loc.iqn, 1, Some(("someoneelse", &secret))),
    ] {
        let r = iscsi_tool("iscsi-inq", &["-i", INIT_A, &bad]);
        assert!(!r.success, "login succeeded with {bad}");
        assert!(
            r.stderr.contains("Authentication failure")
                || r.stdout.contains("Authentication failure"),
            "{} {}",
            r.stdout,
            r.stderr
        );
    }
    // Right CHAP, initiator outside the ACL: refused.
    let r = iscsi_tool("iscsi-inq", &["-i", INIT_B, &good]);
    assert!(!r.success, "initiator B got in");

    // A second attach with multipath lists the multipath keys.
    let mut mp = connector(INIT_B);
    mp.multipath = true;
    let info_b = helper.initialize_connection(&vol, &model, &mp).unwrap();
    assert_eq!(info_b.data.target_portals, Some(vec![tgtd.portal()]));
    assert_eq!(info_b.data.target_iqns, Some(vec![loc.iqn.clone()]));
    assert_eq!(info_b.data.target_luns, Some(vec![1]));
    assert!(iscsi_tool("iscsi-inq", &["-i", INIT_B, &good]).success);

    // terminate_connection removes exactly that initiator's access.
    helper
        .terminate_connection(&vol, &model, &connector(INIT_A))
        .unwrap();
    assert!(!iscsi_tool("iscsi-inq", &["-i", INIT_A, &good]).success);
    assert!(iscsi_tool("iscsi-inq", &["-i", INIT_B, &good]).success);

    // Missing initiator: Cinder's InvalidConnector.
    let err = helper
        .initialize_connection(&vol, &model, &Connector::default())
        .unwrap_err();
    assert!(matches!(
        err,
        TargetError::InvalidConnector {
            missing: "initiator"
        }
    ));

    // create_export again is idempotent: same model.
    assert_eq!(helper.create_export(&vol).unwrap(), model);

    // The secret never reached tgtd's own log.
    let log = fs::read_to_string(dir.path().join("tgtd.log")).unwrap_or_default();
    assert!(!log.contains(&secret), "secret in tgtd log");

    helper.remove_export(&vol, false).unwrap();
    assert!(!conf.exists());
}

#[test]
fn data_round_trip_and_extend() {
    require_tgt!();
    require_libiscsi!();
    let (dir, tgtd, helper) = tgt_setup();
    let mut vol = volume(dir.path(), 32 * MIB);
    let model = helper.create_export(&vol).unwrap();
    let loc = parse_provider_location(&model.provider_location).unwrap();
    helper
        .initialize_connection(&vol, &model, &connector(INIT_A))
        .unwrap();
    let (user, secret) = chap_of(&model);

    {
        let s =
            Session::connect(INIT_A, &tgtd.portal(), &loc.iqn, 1, Some((&user, &secret))).unwrap();
        // iSCSI -> backing file.
        let a = pattern(7, 256 * 1024);
        s.write(2048, &a).unwrap();
        assert_eq!(read_at(&vol.backing_path, 2048 * 512, a.len()), a);
        // Last block of the volume.
        let tail = pattern(9, 512);
        s.write(32 * MIB / 512 - 1, &tail).unwrap();
        assert_eq!(read_at(&vol.backing_path, 32 * MIB - 512, 512), tail);
        // Backing file -> iSCSI.
        let b = pattern(42, 128 * 1024);
        write_at(&vol.backing_path, 5 * MIB, &b);
        assert_eq!(s.read(5 * MIB / 512, b.len()).unwrap(), b);
        // Beyond the end fails.
        assert!(s.read(32 * MIB / 512, 512).is_err());

        // The whole volume read through iSCSI equals the backing file, compared with plain
        // std reads (not Ember's compare).
        let through_iscsi = dir.path().join("through-iscsi.img");
        let mut all = Vec::with_capacity((32 * MIB) as usize);
        for chunk in 0..32 {
            all.extend(s.read(chunk * MIB / 512, MIB as usize).unwrap());
        }
        fs::write(&through_iscsi, &all).unwrap();
        ember_engine::test_util::assert_same_bytes(&through_iscsi, &vol.backing_path);

        // Vice versa: Ember's engine copies an image onto the exported backing file; the
        // initiator reads exactly that image.
        let image = dir.path().join("image.img");
        let mut img = vec![0u8; (32 * MIB) as usize];
        for (i, b) in img
            .iter_mut()
            .enumerate()
            .skip((4 * MIB) as usize)
            .take((3 * MIB) as usize)
        {
            *b = (i % 251) as u8 ^ 0x5a;
        }
        img[(31 * MIB) as usize..(31 * MIB + 4096) as usize].fill(0xC3);
        fs::write(&image, &img).unwrap();
        let opts = ember_engine::options::CopyOptions {
            force: true,
            ..Default::default()
        };
        ember_engine::copy::copy(&image, &vol.backing_path, &opts).unwrap();
        for chunk in 0..32u64 {
            let got = s.read(chunk * MIB / 512, MIB as usize).unwrap();
            let want = &img[(chunk * MIB) as usize..((chunk + 1) * MIB) as usize];
            assert!(
                got == want,
                "iSCSI read differs from the engine's copy in MiB {chunk}"
            );
        }
    }

    // Extend: the initiator sees the new capacity.
    let good = url(&tgtd.portal(), &loc.iqn, 1, Some((&user, &secret)));
    assert_eq!(capacity(INIT_A, &good), 32 * MIB);
    fs::OpenOptions::new()
        .write(true)
        .open(&vol.backing_path)
        .unwrap()
        .set_len(48 * MIB)
        .unwrap();
    vol.size_bytes = 48 * MIB;
    helper.extend_target(&vol, &model).unwrap();
    assert_eq!(capacity(INIT_A, &good), 48 * MIB);
    // Data is still there after the LUN swap.
    let s = Session::connect(INIT_A, &tgtd.portal(), &loc.iqn, 1, Some((&user, &secret))).unwrap();
    let want: Vec<u8> = (4 * MIB as usize..4 * MIB as usize + 512)
        .map(|i| (i % 251) as u8 ^ 0x5a)
        .collect();
    assert_eq!(s.read(4 * MIB / 512, 512).unwrap(), want);
    let c = pattern(3, 4096);
    s.write(40 * MIB / 512, &c).unwrap();
    assert_eq!(read_at(&vol.backing_path, 40 * MIB, c.len()), c);
    drop(s);
    helper.remove_export(&vol, false).unwrap();
}

#[test]
fn ensure_export_after_tgtd_restart() {
    require_tgt!();
    let (dir, mut tgtd, helper) = tgt_setup();
    let v1 = volume(dir.path(), 16 * MIB);
    let v2 = volume(dir.path(), 24 * MIB);
    let m1 = helper.create_export(&v1).unwrap();
    let m2 = helper.create_export(&v2).unwrap();
    helper
        .initialize_connection(&v1, &m1, &connector(INIT_A))
        .unwrap();
    helper
        .initialize_connection(&v2, &m2, &connector(INIT_A))
        .unwrap();
    let l1 = parse_provider_location(&m1.provider_location).unwrap();
    let l2 = parse_provider_location(&m2.provider_location).unwrap();
    let (u1, s1) = chap_of(&m1);
    let (u2, s2) = chap_of(&m2);
    let url1 = url(&tgtd.portal(), &l1.iqn, 1, Some((&u1, &s1)));
    let url2 = url(&tgtd.portal(), &l2.iqn, 1, Some((&u2, &s2)));
    assert!(iscsi_tool("iscsi-inq", &["-i", INIT_A, &url1]).success);

    // ensure_export is idempotent on a live target.
    helper.ensure_export(&v1, &m1).unwrap();
    assert!(iscsi_tool("iscsi-inq", &["-i", INIT_A, &url1]).success);

    let old_pid = tgtd.pid();
    tgtd.restart();
    assert_ne!(old_pid, tgtd.pid());
    assert!(helper.show_targets().unwrap().is_empty(), "tgtd kept state");
    assert!(!iscsi_tool("iscsi-inq", &["-i", INIT_A, &url1]).success);

    // One volume from its stored model (Cinder's ensure_export on service start) ...
    helper.ensure_export(&v1, &m1).unwrap();
    assert!(iscsi_tool("iscsi-inq", &["-i", INIT_A, &url1]).success);
    assert_eq!(capacity(INIT_A, &url1), 16 * MIB);
    // ... and everything recorded in volumes_dir.
    let results = helper.ensure_all().unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    assert!(iscsi_tool("iscsi-inq", &["-i", INIT_A, &url2]).success);
    assert_eq!(capacity(INIT_A, &url2), 24 * MIB);
    // Same tids, IQNs, CHAP and ACLs as before the restart.
    let t = helper.show_targets().unwrap();
    assert!(t.iter().any(|t| t.tid == l1.tid && t.iqn == l1.iqn));
    assert!(t.iter().any(|t| t.tid == l2.tid && t.iqn == l2.iqn));
    assert!(!iscsi_tool("iscsi-inq", &["-i", INIT_B, &url1]).success);
    let wrong = url(&tgtd.portal(), &l1.iqn, 1, Some((&u1, "WrongSecret12345")));
    assert!(!iscsi_tool("iscsi-inq", &["-i", INIT_A, &wrong]).success);

    // A model that names another volume's IQN is refused.
    assert!(matches!(
        helper.ensure_export(&v1, &m2),
        Err(TargetError::ModelMismatch { .. })
    ));
    helper.remove_export(&v1, false).unwrap();
    // Config file lost: removal still finds the target by IQN and deletes its CHAP account.
    fs::remove_file(dir.path().join("volumes").join(&v2.name)).unwrap();
    helper.remove_export(&v2, false).unwrap();
    assert!(helper.find_target(&l2.iqn).unwrap().is_none());
    let accounts = iscsi_tool(
        "tgtadm",
        &[
            "-C",
            &tgtd.control_port.to_string(),
            "--lld",
            "iscsi",
            "--op",
            "show",
            "--mode",
            "account",
        ],
    );
    assert!(!accounts.stdout.contains(&u2), "{}", accounts.stdout);
    assert!(!accounts.stdout.contains(&u1), "{}", accounts.stdout);
}

#[test]
fn remove_export_in_use_and_no_reuse() {
    require_tgt!();
    require_libiscsi!();
    let (dir, tgtd, helper) = tgt_setup();
    let va = volume(dir.path(), 16 * MIB);
    let vb = volume(dir.path(), 16 * MIB);
    write_at(&va.backing_path, 0, &pattern(0xA, 4096));
    write_at(&vb.backing_path, 0, &pattern(0xB, 4096));
    let ma = helper.create_export(&va).unwrap();
    helper
        .initialize_connection(&va, &ma, &connector(INIT_A))
        .unwrap();
    let la = parse_provider_location(&ma.provider_location).unwrap();
    let (ua, sa) = chap_of(&ma);

    // A long-lived session on A, in its own thread (libiscsi contexts are single-threaded).
    let (to_worker, from_main) = mpsc::channel::<()>();
    let (to_main, from_worker) = mpsc::channel::<Result<Vec<u8>, String>>();
    let portal = tgtd.portal();
    let iqn_a = la.iqn.clone();
    let worker = std::thread::spawn(move || {
        let s = match Session::connect(INIT_A, &portal, &iqn_a, 1, Some((&ua, &sa))) {
            Ok(s) => s,
            Err(e) => {
                let _ = to_main.send(Err(e));
                return;
            }
        };
        let _ = to_main.send(s.read(0, 4096));
        // Wait until the export is gone and another volume is exported, then use the old session
        // again: libiscsi reconnects silently to the same portal/IQN/LUN.
        let _ = from_main.recv();
        let _ = to_main.send(s.read(0, 4096));
    });
    let first = from_worker.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(first.unwrap(), pattern(0xA, 4096));

    // In use: refused without force, the target stays.
    let err = helper.remove_export(&va, false).unwrap_err();
    assert!(
        matches!(err, TargetError::TargetInUse { sessions: 1, .. }),
        "{err}"
    );
    assert!(helper.find_target(&la.iqn).unwrap().is_some());

    // Forced: the target disappears (sessions closed), state cleaned up.
    helper.remove_export(&va, true).unwrap();
    assert!(helper.find_target(&la.iqn).unwrap().is_none());
    assert!(!dir.path().join("volumes").join(&va.name).exists());
    let ls = iscsi_tool(
        "iscsi-ls",
        &["-i", INIT_A, &format!("iscsi://{}", tgtd.portal())],
    );
    assert!(!ls.stdout.contains(&la.iqn));

    // A new export (another volume) never gets A's tid or IQN.
    let mb = helper.create_export(&vb).unwrap();
    helper
        .initialize_connection(&vb, &mb, &connector(INIT_A))
        .unwrap();
    let lb = parse_provider_location(&mb.provider_location).unwrap();
    assert!(lb.tid > la.tid, "tid reused: {} after {}", lb.tid, la.tid);
    assert_ne!(lb.iqn, la.iqn);

    // The old session's reconnect must not reach volume B's data.
    to_worker.send(()).unwrap();
    let second = from_worker
        .recv_timeout(Duration::from_secs(120))
        .expect("old session hung");
    match second {
        Ok(data) => panic!(
            "old session still reads after removal (volume B's data: {})",
            data == pattern(0xB, 4096)
        ),
        Err(e) => assert!(
            e.contains("Target not found"),
            "old session after removal: {e}"
        ),
    }
    worker.join().unwrap();

    // Re-exporting A itself later also gets a fresh tid; the ledger never hands one out twice.
    let ma2 = helper.create_export(&va).unwrap();
    let la2 = parse_provider_location(&ma2.provider_location).unwrap();
    assert!(la2.tid > lb.tid);
    assert_ne!(chap_of(&ma2).1, chap_of(&ma).1, "CHAP secret reused");
    let ledger = helper.ledger().unwrap();
    let mut tids: Vec<u32> = ledger.iter().map(|e| e.tid).collect();
    tids.dedup();
    assert_eq!(tids.len(), ledger.len());

    // A different volume id claiming A's name (hence IQN) is refused.
    let mut impostor = vb.clone();
    impostor.name = va.name.clone();
    impostor.id = uuid();
    assert!(helper.create_export(&impostor).is_err());

    helper.remove_export(&va, false).unwrap();
    helper.remove_export(&vb, true).unwrap();
    // Removing again is fine.
    helper.remove_export(&vb, false).unwrap();
}

#[test]
fn windowed_volume_through_loop_device() {
    require_tgt!();
    require_tool!("losetup");
    require_libiscsi!();
    let (dir, tgtd, helper) = tgt_setup();
    // A "PV" with the volume at 3 MiB .. 11 MiB, guard patterns around it.
    let pv = dir.path().join("pv.img");
    fs::File::create(&pv).unwrap().set_len(16 * MIB).unwrap();
    write_at(&pv, 3 * MIB - 4096, &[0xEE; 4096]);
    write_at(&pv, 13 * MIB, &[0xDD; 4096]);
    let id = uuid();
    let vol = ember_target::ExportVolume {
        id: id.clone(),
        name: format!("volume-{id}"),
        backing_path: pv.clone(),
        size_bytes: 8 * MIB,
        backing_offset: 3 * MIB,
        backing_len: Some(8 * MIB),
    };
    let model = match helper.create_export(&vol) {
        Ok(m) => m,
        Err(e) => panic!("windowed export: {e}"),
    };
    let loc = parse_provider_location(&model.provider_location).unwrap();
    helper
        .initialize_connection(&vol, &model, &connector(INIT_A))
        .unwrap();
    let (u, s) = chap_of(&model);
    let good = url(&tgtd.portal(), &loc.iqn, 1, Some((&u, &s)));
    assert_eq!(capacity(INIT_A, &good), 8 * MIB);
    let conf = fs::read_to_string(dir.path().join("volumes").join(&vol.name)).unwrap();
    let loopdev = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("backing-store "))
        .unwrap()
        .to_owned();
    assert!(loopdev.starts_with("/dev/loop"), "{conf}");
    {
        let sess = Session::connect(INIT_A, &tgtd.portal(), &loc.iqn, 1, Some((&u, &s))).unwrap();
        let data = pattern(77, 8192);
        sess.write(0, &data).unwrap();
        let last = pattern(78, 4096);
        sess.write(8 * MIB / 512 - 8, &last).unwrap();
        assert!(
            sess.write(8 * MIB / 512, &last).is_err(),
            "write past the window"
        );
        drop(sess);
    }
    // Extending the window (the LV grew into free PV space) re-creates the loop device.
    let mut grown = vol.clone();
    grown.size_bytes = 10 * MIB;
    grown.backing_len = Some(10 * MIB);
    write_at(&pv, 11 * MIB, &[0u8; 4096]);
    helper.extend_target(&grown, &model).unwrap();
    assert_eq!(capacity(INIT_A, &good), 10 * MIB);
    let vol = grown;
    helper.remove_export(&vol, false).unwrap();
    // The loop device is detached and the bytes landed inside the window only.
    let lo = iscsi_tool(
        "losetup",
        &["--list", "--noheadings", "-O", "NAME,BACK-FILE"],
    );
    assert!(!lo.stdout.contains(pv.to_str().unwrap()), "{}", lo.stdout);
    assert_eq!(read_at(&pv, 3 * MIB, 8192), pattern(77, 8192));
    assert_eq!(read_at(&pv, 11 * MIB - 4096, 4096), pattern(78, 4096));
    assert_eq!(read_at(&pv, 3 * MIB - 4096, 4096), vec![0xEE; 4096]);
    assert_eq!(read_at(&pv, 13 * MIB, 4096), vec![0xDD; 4096]);
}

#[test]
fn hostile_inputs_rejected_before_any_write() {
    require_tgt!();
    let (dir, _tgtd, helper) = tgt_setup();
    let good = volume(dir.path(), 8 * MIB);
    // `good` with one hostile change.
    let bad = |change: &dyn Fn(&mut ExportVolume)| {
        let mut v = good.clone();
        change(&mut v);
        v
    };
    let cases = [
        (
            "name with newline",
            bad(&|v| v.name = "volume-x\n    backing-store /dev/vda".into()),
        ),
        ("name with option", bad(&|v| v.name = "--help".into())),
        ("path traversal", bad(&|v| v.name = "../../etc/x".into())),
        (
            "relative backing",
            bad(&|v| v.backing_path = "relative.img".into()),
        ),
        (
            "backing with space",
            bad(&|v| v.backing_path = dir.path().join("a b.img")),
        ),
        (
            "volume larger than backing",
            bad(&|v| v.size_bytes = 16 * MIB),
        ),
        (
            "window past the end",
            bad(&|v| {
                v.backing_offset = 4 * MIB;
                v.backing_len = Some(8 * MIB);
            }),
        ),
    ];
    for (what, v) in cases {
        assert!(helper.create_export(&v).is_err(), "{what} accepted");
    }
    let bad_init = connector("iqn.2025-11.org.x:a\n    initiator-address ALL");
    let model = helper.create_export(&good).unwrap();
    assert!(helper
        .initialize_connection(&good, &model, &bad_init)
        .is_err());
    let text = fs::read_to_string(dir.path().join("volumes").join(&good.name)).unwrap();
    assert!(!text.contains("ALL"));
    assert!(
        helper.show_targets().unwrap().len() == 1,
        "hostile input created a target"
    );
    // A CHAP secret that would add a line is refused when parsing a model.
    let hostile = ember_target::ExportModel {
        provider_location: model.provider_location.clone(),
        provider_auth: Some("CHAP user secret12345678\nbacking-store".into()),
    };
    assert!(helper.ensure_export(&good, &hostile).is_err());
    helper.remove_export(&good, false).unwrap();
}

/// Parses CUnit's run summary (`tests  <total> <ran> <passed> <failed> <inactive>`).
fn cunit_tests_line(out: &str) -> Option<(u32, u32, u32, u32)> {
    let line = out.lines().find(|l| l.trim_start().starts_with("tests"))?;
    let n: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    match n[..] {
        [total, ran, passed, failed, ..] => Some((total, ran, passed, failed)),
        _ => None,
    }
}

/// libiscsi's SCSI conformance suite against an Ember export. The core suites (Inquiry,
/// ReadCapacity16, Read16, Write16, TestUnitReady, Verify16) must pass completely. Set
/// `EMBER_ISCSI_TEST_CU=ALL` (or another FAMILY[.SUITE]) to run more and print the counts.
#[test]
fn iscsi_test_cu_conformance() {
    require_tgt!();
    require_tool!("iscsi-test-cu");
    let (dir, tgtd, helper) = tgt_setup();
    let vol = volume(dir.path(), 64 * MIB);
    let model = helper.create_export(&vol).unwrap();
    let loc = parse_provider_location(&model.provider_location).unwrap();
    // iscsi-test-cu's two default initiator names.
    const CU1: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test";
    const CU2: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2";
    helper
        .initialize_connection(&vol, &model, &connector(CU1))
        .unwrap();
    helper
        .initialize_connection(&vol, &model, &connector(CU2))
        .unwrap();
    let (u, s) = chap_of(&model);
    let target = url(&tgtd.portal(), &loc.iqn, 1, Some((&u, &s)));
    let runner = ember_target::runner::Runner::new(Duration::from_secs(600));
    let run = |suite: &str| {
        let out = runner
            .run_unchecked(
                "iscsi-test-cu",
                &[
                    "--dataloss".into(),
                    "--silent".into(),
                    format!("--test={suite}").into(),
                    target.as_str().into(),
                ],
                &[],
            )
            .unwrap();
        let counts = cunit_tests_line(&out.stdout).unwrap_or_else(|| {
            panic!(
                "no CUnit summary for {suite}: {} {}",
                out.stdout, out.stderr
            )
        });
        eprintln!(
            "iscsi-test-cu {suite}: total {} ran {} passed {} failed {}",
            counts.0, counts.1, counts.2, counts.3
        );
        (counts, out.stdout)
    };
    for suite in [
        "ALL.Inquiry",
        "ALL.ReadCapacity16",
        "ALL.TestUnitReady",
        "ALL.Read16",
        "ALL.Write16",
        "ALL.Verify16",
    ] {
        let ((_, ran, passed, failed), out) = run(suite);
        assert!(ran > 0, "{suite} ran nothing");
        assert_eq!(failed, 0, "{suite}: {passed}/{ran} passed\n{out}");
    }
    if let Ok(extra) = std::env::var("EMBER_ISCSI_TEST_CU") {
        let ((total, ran, passed, failed), out) = run(&extra);
        eprintln!("{out}");
        eprintln!("iscsi-test-cu {extra}: {passed}/{ran} passed, {failed} failed, {total} total");
    }
    helper.remove_export(&vol, true).unwrap();
}

#[test]
fn ensure_export_repairs_partial_and_refuses_conflicting_targets() {
    require_tgt!();
    let (dir, mut tgtd, helper) = tgt_setup();
    let vol = volume(dir.path(), 8 * MIB);
    let model = helper.create_export(&vol).unwrap();
    helper
        .initialize_connection(&vol, &model, &connector(INIT_A))
        .unwrap();
    let loc = parse_provider_location(&model.provider_location).unwrap();
    let (u, s) = chap_of(&model);
    let good = url(&tgtd.portal(), &loc.iqn, 1, Some((&u, &s)));

    // After a restart, something (an init script, tgt-admin) re-created only the bare target:
    // ensure_export takes it over ("target already exists") and adds LUN 1, CHAP and the ACL.
    tgtd.restart();
    let cport = tgtd.control_port.to_string();
    let tgtadm = |args: &[&str]| {
        let mut v = vec!["-C", cport.as_str(), "--lld", "iscsi"];
        v.extend_from_slice(args);
        iscsi_tool("tgtadm", &v)
    };
    let tid = loc.tid.to_string();
    assert!(tgtadm(&["--op", "new", "--mode", "target", "--tid", &tid, "-T", &loc.iqn]).success);
    assert!(tgtadm(&["--op", "bind", "--mode", "target", "--tid", &tid, "-I", "ALL"]).success);
    helper.ensure_export(&vol, &model).unwrap();
    let t = helper.find_target(&loc.iqn).unwrap().unwrap();
    assert!(t.lun(1).is_some());
    assert_eq!(t.acls, vec![INIT_A.to_string()], "stray ALL rule kept");
    assert!(iscsi_tool("iscsi-inq", &["-i", INIT_A, &good]).success);
    assert!(!iscsi_tool("iscsi-inq", &["-i", INIT_B, &good]).success);

    // Another IQN sitting at our tid: a clear error, nothing of ours is touched.
    tgtd.restart();
    let other = "iqn.2010-10.org.openstack:volume-someone-else";
    assert!(tgtadm(&["--op", "new", "--mode", "target", "--tid", &tid, "-T", other]).success);
    let err = helper.ensure_export(&vol, &model).unwrap_err();
    assert!(err.to_string().contains(other), "{err}");
    assert!(helper.find_target(&loc.iqn).unwrap().is_none());
    let t = helper.find_target(other).unwrap().unwrap();
    assert!(
        t.luns.iter().all(|l| l.lun == 0),
        "LUN added to a foreign target"
    );
}
