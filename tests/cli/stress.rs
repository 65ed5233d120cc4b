//! Many `ember volume` processes at once on one file backend (shared `--config`): create, write,
//! snapshot, clone, from-snapshot, extend and delete cycles from several threads, each step its
//! own process, plus all of them cloning and snapshotting one shared volume. Then the backend must
//! hold exactly what the test expects: the listings by name and size, every volume's bytes read
//! back through `upload`, and no other file in its folders (no orphaned data, records, temp
//! files or stale lock files). Goes beyond `volume::parallel_processes_share_one_backend_safely`,
//! which checks counts only.

use super::util::{allocated, ember, read_range, s};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PROCS: usize = 6;
const CYCLES: usize = 3;

fn vol(cfg: &Path, args: &[&str]) -> String {
    let o = ember()
        .env_remove("EMBER_CONFIG")
        .arg("volume")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .expect("run ember");
    assert!(
        o.status.success(),
        "ember volume {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A dense 1 MiB raw image of seeded random bytes, named after what it is written into.
fn image(dir: &Path, tag: &str) -> (PathBuf, Vec<u8>) {
    let mut b = vec![0u8; MIB as usize];
    let seed = tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        (h ^ c as u64).wrapping_mul(0x100_0000_01b3)
    });
    SmallRng::seed_from_u64(seed).fill_bytes(&mut b);
    b[..tag.len()].copy_from_slice(tag.as_bytes());
    let p = dir.join(format!("{tag}.raw"));
    std::fs::write(&p, &b).unwrap();
    (p, b)
}

/// Expected state: display name -> (size GiB, content: the image bytes at offset 0, or zeros).
type Vols = BTreeMap<String, (u64, Option<Arc<Vec<u8>>>)>;

#[test]
fn many_processes_random_cycles_then_consistency() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path().to_owned();
    let backend = h.join("backend");
    let cfg = h.join("ember.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[backend]]\nname = \"s\"\ndriver = \"file\"\npath = \"{}\"\n",
            backend.display()
        ),
    )
    .unwrap();
    let work = h.join("work");
    std::fs::create_dir(&work).unwrap();
    vol(&cfg, &["create", "base", "--size", "1"]);
    let (img, bytes) = image(&work, "base");
    vol(&cfg, &["download", s(&img), "base"]);
    let base = Arc::new(bytes);
    let vols: Arc<Mutex<Vols>> = Arc::new(Mutex::new(
        [("base".to_owned(), (1, Some(base.clone())))].into(),
    ));
    let snaps: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let start = std::time::Instant::now();
    let children: Vec<_> = (0..PROCS)
        .map(|i| {
            let (cfg, work, vols, snaps, base) = (
                cfg.clone(),
                work.clone(),
                vols.clone(),
                snaps.clone(),
                base.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0;
                let mut run = |args: &[&str]| {
                    n += 1;
                    vol(&cfg, args)
                };
                for k in 0..CYCLES {
                    let p = format!("p{i}-{k}");
                    let (sn, c, f, bc, bs) = (
                        format!("s{i}-{k}"),
                        format!("c{i}-{k}"),
                        format!("f{i}-{k}"),
                        format!("bc{i}-{k}"),
                        format!("bs{i}-{k}"),
                    );
                    run(&["create", &p, "--size", "1"]);
                    let (img, first) = image(&work, &format!("{p}-a"));
                    run(&["download", s(&img), &p]);
                    run(&["snapshot", &p, &sn]);
                    let (img, second) = image(&work, &format!("{p}-b"));
                    run(&["download", s(&img), &p]);
                    run(&["clone", &p, &c, "--size", "2"]);
                    run(&["from-snapshot", &sn, &f]);
                    run(&["extend", &p, "--size", "2"]);
                    run(&["clone", "base", &bc]);
                    run(&["snapshot", "base", &bs]);
                    let (first, second) = (Arc::new(first), Arc::new(second));
                    let mut keep: Vols = BTreeMap::new();
                    let mut keep_s = BTreeMap::new();
                    // Tear down by a per-cycle rule: something of each kind stays.
                    match (i + k) % 3 {
                        0 => {
                            run(&["snapshot-delete", &sn]);
                            run(&["delete", &p]);
                            run(&["delete", &f]);
                            keep.insert(c.clone(), (2, Some(second.clone())));
                        }
                        1 => {
                            keep_s.insert(sn.clone(), 1);
                            keep.insert(p.clone(), (2, Some(second.clone())));
                            run(&["delete", &c]);
                            keep.insert(f.clone(), (1, Some(first.clone())));
                        }
                        _ => {
                            run(&["revert", &p, &sn]);
                            run(&["snapshot-delete", &sn]);
                            keep.insert(p.clone(), (2, Some(first.clone())));
                            run(&["delete", &c]);
                            run(&["delete", &f]);
                        }
                    }
                    if k % 2 == 0 {
                        run(&["delete", &bc]);
                        run(&["snapshot-delete", &bs]);
                    } else {
                        keep.insert(bc.clone(), (1, Some(base.clone())));
                        keep_s.insert(bs.clone(), 1);
                    }
                    vols.lock().unwrap().extend(keep);
                    snaps.lock().unwrap().extend(keep_s);
                }
                n
            })
        })
        .collect();
    let procs: usize = children.into_iter().map(|c| c.join().unwrap()).sum();
    eprintln!(
        "{procs} ember processes from {PROCS} threads in {:?}",
        start.elapsed()
    );

    // Listings: exactly the expected names, sizes, snapshot origins.
    let vols = vols.lock().unwrap();
    let snaps = snaps.lock().unwrap();
    let list: Vec<serde_json::Value> = listed_json(&vol(&cfg, &["list", "--json"]), "volumes");
    let listed: BTreeMap<String, (u64, String)> = list
        .iter()
        .map(|v| {
            (
                v["display_name"].as_str().unwrap().to_owned(),
                (
                    v["size"].as_u64().unwrap(),
                    v["name"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(list.len(), listed.len(), "display names are unique");
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        vols.keys().collect::<Vec<_>>(),
        "listed volumes"
    );
    for (name, (size, _)) in vols.iter() {
        assert_eq!(listed[name].0, *size, "size of {name}");
    }
    let slist: Vec<serde_json::Value> =
        listed_json(&vol(&cfg, &["snapshots", "--json"]), "snapshots");
    let slisted: BTreeMap<String, (u64, String)> = slist
        .iter()
        .map(|v| {
            (
                v["display_name"].as_str().unwrap().to_owned(),
                (
                    v["volume_size"].as_u64().unwrap(),
                    v["name"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(
        slisted.keys().collect::<Vec<_>>(),
        snaps.keys().collect::<Vec<_>>(),
        "listed snapshots"
    );
    for (name, size) in snaps.iter() {
        assert_eq!(slisted[name].0, *size, "size of snapshot {name}");
    }

    // Bytes: every volume, uploaded, is its image then zeros (dense image, holes after it).
    for (name, (size, content)) in vols.iter() {
        let out = work.join(format!("out-{name}.raw"));
        vol(&cfg, &["upload", name, s(&out)]);
        assert_eq!(std::fs::metadata(&out).unwrap().len(), size * GIB, "{name}");
        let want = content.as_deref().unwrap();
        assert!(
            read_range(&out, 0, MIB) == *want,
            "{name} does not hold its expected image"
        );
        assert!(
            allocated(&out) <= MIB + (64 << 10),
            "{name}: data beyond its image ({} bytes allocated)",
            allocated(&out)
        );
        std::fs::remove_file(out).unwrap();
    }

    // Folders: exactly the listed objects; nothing orphaned, no temp or stale lock files.
    let objects: BTreeSet<String> = listed
        .values()
        .chain(slisted.values())
        .map(|(_, n)| n.clone())
        .collect();
    let ls = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(backend.join(dir))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    let with =
        |ext: &str| -> BTreeSet<String> { objects.iter().map(|n| format!("{n}.{ext}")).collect() };
    assert_eq!(ls("data"), with("raw"), "data folder");
    assert_eq!(ls("meta"), with("json"), "meta folder");
    let locks = ls("locks");
    assert!(
        locks.is_subset(&with("lock")),
        "stale lock files: {:?}",
        locks.difference(&with("lock")).collect::<Vec<_>>()
    );
    assert!(ls("staging").is_empty(), "staging folder");
}

/// Names of the files in `dir` (empty when it does not exist).
fn ls(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts `ember volume --config cfg args...`, waits until `started` sees its work in the
/// backend (or it exits), then SIGKILLs it mid-copy. Returns whether it was caught running.
fn kill_mid_copy(cfg: &Path, args: &[&str], started: impl Fn() -> bool) -> bool {
    let mut child = ember()
        .env_remove("EMBER_CONFIG")
        .arg("volume")
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut caught = false;
    while t0.elapsed() < std::time::Duration::from_secs(30) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started() {
            caught = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    caught
}

/// Processes SIGKILLed in the middle of clone, snapshot, from-snapshot, revert and a qcow2
/// download (copies throttled by volume_copy_bps_limit so they are caught running): the next
/// `ember` process resumes the copies (clone, from-snapshot) or rolls the creates back, the
/// revert leaves the volume exactly as it was before or after (never torn), and nothing is left
/// in the backend folders.
#[test]
fn processes_killed_mid_operation_leave_nothing_behind() {
    let t = tempfile::tempdir().unwrap();
    let h = t.path().to_owned();
    let backend = h.join("backend");
    let conf = |file: &str, extra: &str| {
        let p = h.join(file);
        std::fs::write(
            &p,
            format!(
                "[[backend]]\nname = \"k\"\ndriver = \"file\"\npath = \"{}\"\n{extra}",
                backend.display()
            ),
        )
        .unwrap();
        p
    };
    let fast = conf("fast.toml", "");
    let slow = conf("slow.toml", "volume_copy_bps_limit = 1048576\n");
    let work = h.join("work");
    std::fs::create_dir(&work).unwrap();
    // Four sources with 8 MiB of data each (8 s to copy at the slow config's 1 MiB/s).
    let big = |tag: &str| {
        let mut b = Vec::new();
        for i in 0..8 {
            b.extend(image(&work, &format!("{tag}{i}")).1);
        }
        let p = work.join(format!("{tag}.raw"));
        std::fs::write(&p, &b).unwrap();
        (p, b)
    };
    let (img_a, a) = big("a");
    let (img_b, b) = big("b");
    for n in ["src1", "src2", "src3", "src4"] {
        vol(&fast, &["create", n, "--size", "1"]);
        vol(&fast, &["download", s(&img_a), n]);
    }
    vol(&fast, &["snapshot", "src3", "s3"]);
    vol(&fast, &["snapshot", "src4", "s4"]);
    vol(&fast, &["download", s(&img_b), "src3"]);
    let q = work.join("b.qcow2");
    vol(&fast, &["upload", "src3", s(&q), "--format", "qcow2"]);
    let list: Vec<serde_json::Value> = listed_json(&vol(&fast, &["list", "--json"]), "volumes");
    let names: BTreeMap<String, String> = list
        .iter()
        .map(|v| {
            (
                v["display_name"].as_str().unwrap().to_owned(),
                v["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // A data file that was not there when this kill's process started (a clone killed earlier
    // leaves its resumable data behind, which must not count as the next operation's).
    let new_data = |prefix: &'static str| {
        let dir = backend.join("data");
        let before = ls(&dir);
        move || {
            ls(&dir)
                .iter()
                .any(|n| n.starts_with(prefix) && !before.contains(n))
        }
    };
    let mut caught = Vec::new();
    caught.push(kill_mid_copy(
        &slow,
        &["clone", "src1", "k-clone"],
        new_data("volume-"),
    ));
    caught.push(kill_mid_copy(
        &slow,
        &["snapshot", "src2", "k-snap"],
        new_data("snapshot-"),
    ));
    caught.push(kill_mid_copy(
        &slow,
        &["from-snapshot", "s4", "k-from"],
        new_data("volume-"),
    ));
    let revert_tmp = backend
        .join("data")
        .join(format!(".revert-{}.raw", names["src3"]));
    caught.push(kill_mid_copy(&slow, &["revert", "src3", "s3"], || {
        revert_tmp.exists()
    }));
    let staging = backend.join("staging");
    caught.push(kill_mid_copy(
        &slow,
        &["download", s(&q), "src2", "--format", "qcow2"],
        || !ls(&staging).is_empty(),
    ));
    eprintln!("caught running: {caught:?}");
    assert!(
        caught.iter().filter(|&&c| c).count() >= 3,
        "most kills must land mid-operation: {caught:?}"
    );

    // The next process recovers; then exactly the four sources and two snapshots remain.
    let list: Vec<serde_json::Value> = listed_json(&vol(&fast, &["list", "--json"]), "volumes");
    let mut listed: Vec<_> = list
        .iter()
        .map(|v| v["display_name"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    // A clone or a volume from a snapshot killed mid-copy is resumed by the next process (file
    // backend: `do_setup` continues it from its checkpoints), so it is either complete or was
    // never started. Both copy `a` (src1, and s4 taken of src4).
    for copy in ["k-clone", "k-from"] {
        if listed.iter().any(|n| n == copy) {
            let out = work.join(format!("{copy}.out"));
            vol(&fast, &["upload", copy, s(&out)]);
            assert!(
                read_range(&out, 0, 8 * MIB) == a,
                "the resumed {copy} differs from its source"
            );
        }
    }
    listed.retain(|n| n != "k-clone" && n != "k-from");
    assert_eq!(listed, ["src1", "src2", "src3", "src4"]);
    let snaps: Vec<serde_json::Value> =
        listed_json(&vol(&fast, &["snapshots", "--json"]), "snapshots");
    let mut slisted: Vec<_> = snaps
        .iter()
        .map(|v| v["display_name"].as_str().unwrap().to_owned())
        .collect();
    slisted.sort();
    assert_eq!(slisted, ["s3", "s4"]);
    // src3: wholly before (b) or wholly after (a) the revert.
    let out = work.join("src3.out");
    vol(&fast, &["upload", "src3", s(&out)]);
    let got = read_range(&out, 0, 8 * MIB);
    assert!(got == b || got == a, "src3 is torn after a killed revert");
    // src1 and src4 untouched.
    for n in ["src1", "src4"] {
        let out = work.join(format!("{n}.out"));
        vol(&fast, &["upload", n, s(&out)]);
        assert!(read_range(&out, 0, 8 * MIB) == a, "{n} changed");
    }
    // Folders: only the live objects.
    let mut objects: BTreeSet<String> = names.values().cloned().collect();
    objects.extend(list.iter().map(|v| v["name"].as_str().unwrap().to_owned()));
    objects.extend(snaps.iter().map(|v| v["name"].as_str().unwrap().to_owned()));
    let with =
        |ext: &str| -> BTreeSet<String> { objects.iter().map(|n| format!("{n}.{ext}")).collect() };
    assert_eq!(ls(&backend.join("data")), with("raw"), "data folder");
    assert_eq!(ls(&backend.join("meta")), with("json"), "meta folder");
    let locks = ls(&backend.join("locks"));
    assert!(
        locks.is_subset(&with("lock")),
        "stale lock files: {:?}",
        locks.difference(&with("lock")).collect::<Vec<_>>()
    );
    assert!(
        ls(&staging).is_empty(),
        "staging folder: {:?}",
        ls(&staging)
    );
}

/// The list under `key` of a `--json` list document (schema 1: `{"schema": 1, key: [...]}`).
fn listed_json(out: &str, key: &str) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_str(out).unwrap();
    assert_eq!(doc["schema"], 1);
    doc[key].as_array().unwrap().clone()
}
