//! Concurrency stress on the file backend (no root): many threads running seeded random
//! create / write / snapshot / clone / extend / revert / delete cycles on one backend, a pair of
//! threads hammering one volume, then a full consistency check: the listings are exactly the
//! objects the test believes exist, every volume and snapshot reads back exactly its expected
//! bytes and size, and the backend folders hold nothing else (no orphaned data, records, temp
//! files or lock files).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ember_drivers::file::FileDriver;
use ember_drivers::*;
use nix::unistd::{lseek, Whence};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use uuid::Uuid;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Every written image is this long; its data sits in two chunks, the rest is a hole.
const IMG_LEN: u64 = 4 * MIB;
const CHUNK: usize = (64 * KIB) as usize;
const CHUNK_AT: [u64; 2] = [0, 3 * MIB];

fn driver(root: &Path) -> FileDriver {
    let d = FileDriver::new(BackendConfig::file("stress", root)).unwrap();
    d.do_setup().unwrap();
    d.check_for_setup_error().unwrap();
    d
}

fn raw(path: PathBuf) -> ImageFile {
    ImageFile {
        path,
        meta: ImageMeta::raw(),
    }
}

/// What a volume or snapshot holds: all zeros, or generation `gen` of `owner`'s pattern in
/// its first `IMG_LEN` bytes (zeros after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Zero,
    Gen(Uuid, u64),
}

/// The bytes of one pattern chunk: the owner's id, the generation, the chunk index, then
/// pseudo-random bytes seeded from all three (a torn or misplaced copy cannot match).
fn chunk_bytes(owner: Uuid, gen: u64, idx: usize) -> Vec<u8> {
    let mut b = vec![0u8; CHUNK];
    let (hi, lo) = owner.as_u64_pair();
    let seed = hi ^ lo.rotate_left(17) ^ gen.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ idx as u64;
    SmallRng::seed_from_u64(seed).fill_bytes(&mut b);
    b[..16].copy_from_slice(owner.as_bytes());
    b[16..24].copy_from_slice(&gen.to_le_bytes());
    b[24] = idx as u8;
    b
}

/// Writes the raw image of `Content::Gen(owner, gen)` (sparse between the chunks).
fn write_image(path: &Path, owner: Uuid, gen: u64) {
    let f = File::create(path).unwrap();
    f.set_len(IMG_LEN).unwrap();
    for (i, &at) in CHUNK_AT.iter().enumerate() {
        f.write_all_at(&chunk_bytes(owner, gen, i), at).unwrap();
    }
}

/// Checks that `path` is `size` bytes long and holds exactly `content`: the pattern chunks
/// where they belong and zeros everywhere else (every data extent is read; holes are zeros).
fn check_file(path: &Path, size: u64, content: Content, what: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("{what}: open {}: {e}", path.display()));
    let len = f.metadata().unwrap().len();
    assert_eq!(len, size, "{what}: length of {}", path.display());
    let expected: Vec<(u64, Vec<u8>)> = match content {
        Content::Zero => Vec::new(),
        Content::Gen(owner, gen) => CHUNK_AT
            .iter()
            .enumerate()
            .map(|(i, &at)| (at, chunk_bytes(owner, gen, i)))
            .collect(),
    };
    for (at, want) in &expected {
        let mut got = vec![0u8; want.len()];
        f.read_exact_at(&mut got, *at).unwrap();
        if &got != want {
            let (o, g) = (
                u64::from_le_bytes(got[16..24].try_into().unwrap()),
                Uuid::from_slice(&got[..16]).ok(),
            );
            panic!(
                "{what}: chunk at {at} of {} differs from {content:?} (holds owner {g:?} gen {o})",
                path.display()
            );
        }
    }
    // Everything outside the chunks is zero: walk the data extents.
    let fd = f.as_raw_fd();
    let mut pos: i64 = 0;
    let mut buf = vec![0u8; MIB as usize];
    while (pos as u64) < len {
        let start = match lseek(fd, pos, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => panic!("SEEK_DATA {}: {e}", path.display()),
        };
        let end = lseek(fd, start, Whence::SeekHole).unwrap();
        let mut off = start as u64;
        while off < end as u64 {
            let n = (end as u64 - off).min(MIB) as usize;
            f.read_exact_at(&mut buf[..n], off).unwrap();
            for (i, &byte) in buf[..n].iter().enumerate() {
                let p = off + i as u64;
                let in_chunk = expected
                    .iter()
                    .any(|(at, c)| p >= *at && p < at + c.len() as u64);
                assert!(
                    in_chunk || byte == 0,
                    "{what}: {} has byte {byte:#x} at {p}, outside {content:?}",
                    path.display()
                );
            }
            off += n as u64;
        }
        pos = end;
    }
}

/// What the test believes the backend holds.
#[derive(Default)]
struct Model {
    volumes: BTreeMap<Uuid, (Volume, Content)>,
    snapshots: BTreeMap<Uuid, (Snapshot, Content)>,
}

struct Ctx {
    d: Arc<FileDriver>,
    tmp: PathBuf,
    model: Mutex<Model>,
    /// Volumes every thread clones and snapshots concurrently (never deleted during the run).
    shared: Vec<(Volume, Content)>,
}

impl Ctx {
    /// Writes generation `gen` of `owner`'s pattern into `v` through copy_image_to_volume.
    fn write(&self, v: &Volume, owner: Uuid, gen: u64) -> Content {
        let img = self.tmp.join(format!("img-{}-{gen}.raw", v.id));
        write_image(&img, owner, gen);
        self.d.copy_image_to_volume(v, &raw(img.clone())).unwrap();
        fs::remove_file(img).unwrap();
        Content::Gen(owner, gen)
    }

    /// Reads `v` back through copy_volume_to_image and checks it.
    fn verify_volume(&self, v: &Volume, content: Content, what: &str) {
        let out = self
            .tmp
            .join(format!("out-{}-{}.raw", v.id, Uuid::new_v4()));
        self.d.copy_volume_to_image(v, &raw(out.clone())).unwrap();
        check_file(&out, v.size * GIB, content, what);
        fs::remove_file(out).unwrap();
    }
}

/// One thread's seeded random cycles. Objects it keeps go into the model.
fn worker(ctx: &Ctx, seed: u64, cycles: usize) -> usize {
    let mut rng = SmallRng::seed_from_u64(seed);
    let d = &*ctx.d;
    let mut ops = 0;
    for cycle in 0..cycles {
        let mut gen = (seed << 32) | (cycle as u64) << 8;
        let mut next_gen = || {
            gen += 1;
            gen
        };
        // create -> write
        let mut v = Volume::new(rng.gen_range(1..=2), Some(&format!("w{seed}-{cycle}"))).unwrap();
        d.create_volume(&v).unwrap();
        let mut vc = if rng.gen_bool(0.2) {
            Content::Zero // snapshots and clones of an empty volume
        } else {
            ctx.write(&v, v.id, next_gen())
        };
        ops += 2;
        // snapshot, then change the volume so the snapshot differs
        let s = Snapshot::new(&v, None).unwrap();
        d.create_snapshot(&s).unwrap();
        let sc = vc;
        vc = ctx.write(&v, v.id, next_gen());
        ops += 2;
        // a volume that has a snapshot cannot be deleted
        assert_eq!(
            d.delete_volume(&v).unwrap_err().category(),
            Category::VolumeIsBusy
        );
        // clone (maybe bigger), maybe extend
        let mut c = Volume::new(v.size + rng.gen_range(0..=1), None).unwrap();
        d.create_cloned_volume(&c, &v).unwrap();
        let mut cc = vc;
        ops += 1;
        if rng.gen_bool(0.5) {
            let n = v.size + 1;
            d.extend_volume(&v, n).unwrap();
            v.size = n;
            ops += 1;
        }
        if rng.gen_bool(0.3) {
            cc = ctx.write(&c, c.id, next_gen());
            ops += 1;
        }
        // maybe a volume from the snapshot
        let mut from = None;
        if rng.gen_bool(0.5) {
            let f = Volume::new(s.volume_size + rng.gen_range(0..=1), None).unwrap();
            d.create_volume_from_snapshot(&f, &s).unwrap();
            from = Some((f, sc));
            ops += 1;
        }
        // maybe revert the volume to the snapshot (size kept)
        if rng.gen_bool(0.3) {
            d.revert_to_snapshot(&v, &s).unwrap();
            vc = sc;
            ops += 1;
        }
        // work on the shared volumes: clone one, snapshot one
        let (sv, svc) = &ctx.shared[rng.gen_range(0..ctx.shared.len())];
        let sclone = Volume::new(sv.size, None).unwrap();
        d.create_cloned_volume(&sclone, sv).unwrap();
        let ssnap = Snapshot::new(sv, None).unwrap();
        d.create_snapshot(&ssnap).unwrap();
        ops += 2;
        // spot checks of data while others run
        if rng.gen_bool(0.3) {
            ctx.verify_volume(&v, vc, "volume mid-run");
            ctx.verify_volume(&sclone, *svc, "shared clone mid-run");
            check_file(
                &d.data_path(&s.name),
                s.volume_size * GIB,
                sc,
                "snapshot mid-run",
            );
            ops += 2;
        }
        // tear down at random; what stays goes to the model
        let mut keep_v = Vec::new();
        let mut keep_s = Vec::new();
        let keep_snap = rng.gen_bool(0.25);
        if keep_snap {
            keep_s.push((s.clone(), sc));
        } else {
            d.delete_snapshot(&s).unwrap();
            d.delete_snapshot(&s).unwrap(); // absent: success
            ops += 1;
        }
        if keep_snap || rng.gen_bool(0.3) {
            keep_v.push((v.clone(), vc));
        } else {
            d.delete_volume(&v).unwrap();
            d.delete_volume(&v).unwrap(); // absent: success
            assert!(!d.data_path(&v.name).exists());
            ops += 1;
        }
        for (x, xc) in [Some((c.clone(), cc)), from, Some((sclone, *svc))]
            .into_iter()
            .flatten()
        {
            if rng.gen_bool(0.3) {
                keep_v.push((x, xc));
            } else {
                d.delete_volume(&x).unwrap();
                ops += 1;
            }
        }
        if rng.gen_bool(0.3) {
            keep_s.push((ssnap, *svc));
        } else {
            d.delete_snapshot(&ssnap).unwrap();
            ops += 1;
        }
        // grow a kept clone after the fact
        if let Some((x, _)) = keep_v.iter_mut().find(|(x, _)| x.id == c.id) {
            if rng.gen_bool(0.5) {
                d.extend_volume(x, x.size + 1).unwrap();
                x.size += 1;
                c.size = x.size;
                ops += 1;
            }
        }
        let mut m = ctx.model.lock().unwrap();
        for (x, xc) in keep_v {
            m.volumes.insert(x.id, (x, xc));
        }
        for (x, xc) in keep_s {
            m.snapshots.insert(x.id, (x, xc));
        }
    }
    ops
}

/// The backend holds exactly the model: listings, sizes, bytes, and no other file in its folders.
fn check_consistency(ctx: &Ctx, root: &Path) {
    let d = &*ctx.d;
    let m = ctx.model.lock().unwrap();
    let listed: BTreeMap<Uuid, Volume> = d
        .list_volumes()
        .unwrap()
        .into_iter()
        .map(|v| (v.id, v))
        .collect();
    let want: BTreeSet<Uuid> = m.volumes.keys().copied().collect();
    assert_eq!(
        listed.keys().copied().collect::<BTreeSet<_>>(),
        want,
        "listed volumes"
    );
    for (id, (v, c)) in &m.volumes {
        let l = &listed[id];
        assert_eq!(l.size, v.size, "size of {}", v.name);
        assert_eq!(l.display_name, v.display_name);
        ctx.verify_volume(v, *c, "volume at the end");
        check_file(&d.data_path(&v.name), v.size * GIB, *c, "volume file");
    }
    let snaps: BTreeMap<Uuid, Snapshot> = d
        .list_snapshots()
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    assert_eq!(
        snaps.keys().copied().collect::<BTreeSet<_>>(),
        m.snapshots.keys().copied().collect::<BTreeSet<_>>(),
        "listed snapshots"
    );
    for (id, (s, c)) in &m.snapshots {
        let l = &snaps[id];
        assert_eq!(l.volume_id, s.volume_id);
        assert_eq!(l.volume_size, s.volume_size, "size of {}", s.name);
        assert!(
            m.volumes.contains_key(&s.volume_id),
            "{} outlived its volume",
            s.name
        );
        check_file(&d.data_path(&s.name), s.volume_size * GIB, *c, "snapshot");
    }
    // The folders hold exactly these objects: no orphans, no temp files, no stale locks.
    let names: BTreeSet<String> = m
        .volumes
        .values()
        .map(|(v, _)| v.name.clone())
        .chain(m.snapshots.values().map(|(s, _)| s.name.clone()))
        .collect();
    let ls = |dir: &str| -> BTreeSet<String> {
        let p = root.join(dir);
        if !p.exists() {
            return BTreeSet::new();
        }
        fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    let with =
        |ext: &str| -> BTreeSet<String> { names.iter().map(|n| format!("{n}.{ext}")).collect() };
    assert_eq!(ls("data"), with("raw"), "data folder");
    assert_eq!(ls("meta"), with("json"), "meta folder");
    let locks = ls("locks");
    let want_locks = with("lock");
    let stale: Vec<_> = locks.difference(&want_locks).collect();
    assert!(
        stale.is_empty(),
        "lock files of objects that no longer exist: {} of {}: {:?}",
        stale.len(),
        locks.len(),
        &stale[..stale.len().min(5)]
    );
    assert!(ls("staging").is_empty(), "staging folder");
    // Resumable copies keep their state in resume/<volume>/ only while they run.
    if root.join("resume").exists() {
        assert!(
            ls("resume").is_empty(),
            "resume state left: {:?}",
            ls("resume")
        );
    }
    let top: BTreeSet<String> = ls(".")
        .into_iter()
        .filter(|n| !["data", "meta", "locks", "staging", "resume", ".lock"].contains(&n.as_str()))
        .collect();
    assert!(
        top.is_empty(),
        "unexpected files in the backend folder: {top:?}"
    );
}

fn seed() -> u64 {
    std::env::var("EMBER_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_e4be)
}

#[test]
fn many_threads_random_cycles_then_consistency() {
    let threads: u64 = 8;
    let cycles: usize = std::env::var("EMBER_STRESS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let base = seed();
    eprintln!("stress seed {base} (EMBER_STRESS_SEED), {threads} threads x {cycles} cycles");
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("backend");
    let tmp = t.path().join("work");
    fs::create_dir(&tmp).unwrap();
    let d = Arc::new(driver(&root));
    let mut ctx = Ctx {
        d: d.clone(),
        tmp,
        model: Mutex::new(Model::default()),
        shared: Vec::new(),
    };
    // Shared volumes with data, before the threads start.
    for i in 0..3u64 {
        let v = Volume::new(1 + i % 2, Some(&format!("shared{i}"))).unwrap();
        d.create_volume(&v).unwrap();
        let c = ctx.write(&v, v.id, 1);
        ctx.shared.push((v, c));
    }
    let ctx = Arc::new(ctx);
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                worker(&ctx, base.wrapping_add(i * 7919) & 0xffff_ffff, cycles)
            })
        })
        .collect();
    let ops: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!("{ops} driver operations in {:?}", start.elapsed());
    let kept = {
        let mut m = ctx.model.lock().unwrap();
        for (v, c) in &ctx.shared {
            m.volumes.insert(v.id, (v.clone(), *c));
        }
        eprintln!(
            "kept {} volumes, {} snapshots",
            m.volumes.len(),
            m.snapshots.len()
        );
        m.volumes.keys().copied().collect::<Vec<_>>()
    };
    check_consistency(&ctx, &root);
    // A restart (recovery) finds nothing to roll back and changes nothing.
    let d2 = driver(&root);
    let mut a: Vec<_> = d2
        .list_volumes()
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    a.sort();
    assert_eq!(a, kept);
    check_consistency(&ctx, &root);
    // Tear everything down: snapshots first, then volumes; the folders end up empty.
    let mut m = ctx.model.lock().unwrap();
    for (s, _) in m.snapshots.values() {
        d.delete_snapshot(s).unwrap();
    }
    for (v, _) in m.volumes.values() {
        d.delete_volume(v).unwrap();
    }
    m.volumes.clear();
    m.snapshots.clear();
    drop(m);
    check_consistency(&ctx, &root);
}

/// The generation of `owner`'s pattern a file holds at offset 0 (after checking it is one).
fn gen_of(path: &Path, owner: Uuid) -> u64 {
    let mut h = [0u8; 24];
    File::open(path).unwrap().read_exact_at(&mut h, 0).unwrap();
    assert_eq!(&h[..16], owner.as_bytes(), "{}", path.display());
    u64::from_le_bytes(h[16..24].try_into().unwrap())
}

/// Three threads on ONE volume: extends, snapshots and image writes serialize. The final size is
/// the sum of the extends, every snapshot holds one whole generation (never a torn mix) at the
/// size the volume had then, and sizes and generations only grow in snapshot order.
#[test]
fn one_volume_hammered_by_extend_snapshot_and_writes() {
    const N: u64 = 10;
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("backend");
    let tmp = t.path().join("work");
    fs::create_dir(&tmp).unwrap();
    let d = Arc::new(driver(&root));
    let ctx = Arc::new(Ctx {
        d: d.clone(),
        tmp,
        model: Mutex::new(Model::default()),
        shared: Vec::new(),
    });
    let v = Volume::new(1, Some("hot")).unwrap();
    d.create_volume(&v).unwrap();
    ctx.write(&v, v.id, 0);
    let (c1, c2, c3) = (ctx.clone(), ctx.clone(), ctx.clone());
    let (v1, v2, v3) = (v.clone(), v.clone(), v.clone());
    let ext = std::thread::spawn(move || {
        for i in 0..N {
            c1.d.extend_volume(&v1, 2 + i).unwrap();
        }
    });
    let snap = std::thread::spawn(move || {
        (0..N)
            .map(|_| {
                let s = Snapshot::new(&v2, None).unwrap();
                c2.d.create_snapshot(&s).unwrap();
                s
            })
            .collect::<Vec<_>>()
    });
    let wr = std::thread::spawn(move || {
        for g in 1..=N {
            c3.write(&v3, v3.id, g);
        }
    });
    ext.join().unwrap();
    wr.join().unwrap();
    let snaps = snap.join().unwrap();
    let listed = d.list_volumes().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 1 + N, "every extend counted once");
    let final_v = Volume {
        size: 1 + N,
        ..v.clone()
    };
    let listed_snaps: BTreeMap<Uuid, Snapshot> = d
        .list_snapshots()
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    assert_eq!(listed_snaps.len(), N as usize);
    let (mut last_size, mut last_gen) = (0, 0);
    let mut m = ctx.model.lock().unwrap();
    for s in &snaps {
        let l = &listed_snaps[&s.id];
        assert!(l.volume_size >= last_size && l.volume_size <= 1 + N);
        let g = gen_of(&d.data_path(&s.name), v.id);
        assert!(g >= last_gen && g <= N, "generation {g} after {last_gen}");
        (last_size, last_gen) = (l.volume_size, g);
        m.snapshots.insert(s.id, (l.clone(), Content::Gen(v.id, g)));
    }
    m.volumes.insert(v.id, (final_v, Content::Gen(v.id, N)));
    drop(m);
    check_consistency(&ctx, &root);
}

/// Runs `f` on a thread; fails the test if it does not finish within `secs` (a deadlock).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: no answer in {secs} s (deadlock)"))
}

/// Operations that name the same objects in different roles must not deadlock: a volume from a
/// snapshot onto the snapshot's own origin (one object named twice), and two such creates
/// crossing each other (origin of one = target of the other). All are refused: the targets exist.
#[test]
fn crossing_operations_do_not_deadlock() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("backend");
    let d = Arc::new(driver(&root));
    let a = Volume::new(1, Some("a")).unwrap();
    let b = Volume::new(1, Some("b")).unwrap();
    d.create_volume(&a).unwrap();
    d.create_volume(&b).unwrap();
    let sa = Snapshot::new(&a, None).unwrap();
    let sb = Snapshot::new(&b, None).unwrap();
    d.create_snapshot(&sa).unwrap();
    d.create_snapshot(&sb).unwrap();
    let (d1, a1, sa1) = (d.clone(), a.clone(), sa.clone());
    let e = within(30, "volume from snapshot onto its origin", move || {
        d1.create_volume_from_snapshot(&a1, &sa1).unwrap_err()
    });
    assert!(matches!(e, DriverError::AlreadyExists { .. }), "{e}");
    let mut hs = Vec::new();
    for (v, s) in [(b.clone(), sa.clone()), (a.clone(), sb.clone())] {
        let d = d.clone();
        hs.push(std::thread::spawn(move || {
            for _ in 0..100 {
                let e = d.create_volume_from_snapshot(&v, &s).unwrap_err();
                assert!(matches!(e, DriverError::AlreadyExists { .. }), "{e}");
                let e = d.create_cloned_volume(&v, &Volume::with_id(s.volume_id, 1, None).unwrap());
                assert!(matches!(e, Err(DriverError::AlreadyExists { .. })), "{e:?}");
            }
        }));
    }
    within(60, "crossing creates", move || {
        for h in hs {
            h.join().unwrap();
        }
    });
    let ctx = Ctx {
        d: d.clone(),
        tmp: t.path().to_owned(),
        model: Mutex::new(Model {
            volumes: [(a.id, (a, Content::Zero)), (b.id, (b, Content::Zero))].into(),
            snapshots: [(sa.id, (sa, Content::Zero)), (sb.id, (sb, Content::Zero))].into(),
        }),
        shared: Vec::new(),
    };
    check_consistency(&ctx, &root);
}

/// Recovery removes what killed processes leave outside the records: a half-built revert of a
/// volume nobody holds, staged images of processes that are gone; a live process's staged
/// image stays.
#[test]
fn recovery_removes_leftovers_of_killed_processes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("backend");
    let d = driver(&root);
    let v = Volume::new(1, None).unwrap();
    d.create_volume(&v).unwrap();
    let revert = root.join("data").join(format!(".revert-{}.raw", v.name));
    fs::write(&revert, b"half").unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let mut live = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    fs::create_dir_all(root.join("staging")).unwrap();
    let gone = root
        .join("staging")
        .join(format!(".stage-in-{dead_pid}-0000abcd.raw"));
    let kept = root
        .join("staging")
        .join(format!(".stage-in-{}-0000abcd.raw", live.id()));
    fs::write(&gone, b"x").unwrap();
    fs::write(&kept, b"x").unwrap();
    d.do_setup().unwrap();
    let _ = live.kill();
    let _ = live.wait();
    assert!(!revert.exists(), "interrupted revert removed");
    assert!(!gone.exists(), "staged file of a dead process removed");
    assert!(kept.exists(), "staged file of a live process kept");
    assert_eq!(d.list_volumes().unwrap(), vec![v]);
}
