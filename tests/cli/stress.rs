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
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&vol(&cfg, &["list", "--json"])).unwrap();
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
        serde_json::from_str(&vol(&cfg, &["snapshots", "--json"])).unwrap();
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
