//! Helpers for tests that need root or a system tool.
//!
//! A test that cannot run here prints why and returns, unless `EMBER_REQUIRE_SYSTEM_TESTS=1`
//! (set by CI): then the missing prerequisite is a failure. Used by every crate's tests through
//! [`require_root!`](crate::require_root) and [`require_tool!`](crate::require_tool).

use std::path::PathBuf;

/// True when CI demands that system tests run instead of skipping.
pub fn system_tests_required() -> bool {
    std::env::var("EMBER_REQUIRE_SYSTEM_TESTS").is_ok_and(|v| v == "1")
}

/// Skips the calling test with `reason`, or panics when system tests are required.
/// Returns `false` so callers can write `if !ok { return skip(..) }`-style code.
pub fn skip(test: &str, reason: &str) {
    if system_tests_required() {
        panic!("{test}: required system test cannot run: {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Finds `tool` on PATH (plus the sbin folders, where lvm2 and tgt live).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The data ranges of the file at `path` as the kernel reports them (SEEK_DATA/SEEK_HOLE),
/// as (offset, len). Unwritten (allocated, never written) blocks count as data only where
/// their pages are cached: see [`unwritten_extents`] for those.
pub fn data_ranges(path: &std::path::Path) -> Vec<(u64, u64)> {
    use std::os::fd::AsFd;
    let f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(start) = crate::sys::seek_data(f.as_fd(), pos).unwrap() {
        let end = crate::sys::seek_hole(f.as_fd(), start).unwrap().unwrap();
        out.push((start, end - start));
        pos = end;
    }
    out
}

/// Runs `cmd` with `args`, which must succeed; its trimmed stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let o = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// How many extents of the file at `path` are allocated but unwritten (`filefrag -v`, FIEMAP's
/// `unwritten` flag).
pub fn unwritten_extents(path: &std::path::Path) -> usize {
    let path = path.to_str().expect("a UTF-8 path");
    run("filefrag", &["-v", path])
        .lines()
        .filter(|l| l.contains("unwritten"))
        .count()
}

/// The first offset where the contents of `a` and `b` differ (a shorter file differs where it
/// ends), or `None` when they are byte-identical. The independent oracle of copy, image and
/// iSCSI tests: plain buffered `std::fs` reads of both paths (files or block devices), none of
/// the engine's code (no extent maps, no io_uring, no `verify::compare`).
pub fn first_difference(a: &std::path::Path, b: &std::path::Path) -> Option<u64> {
    use std::io::Read;
    let open = |p: &std::path::Path| {
        std::fs::File::open(p).unwrap_or_else(|e| panic!("cannot open {}: {e}", p.display()))
    };
    let (mut fa, mut fb) = (open(a), open(b));
    // Fills `buf` as far as the file goes; returns how much was read.
    let fill = |f: &mut std::fs::File, buf: &mut [u8], p: &std::path::Path| {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("cannot read {}: {e}", p.display()),
            }
        }
        n
    };
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0u64;
    loop {
        let na = fill(&mut fa, &mut ba, a);
        let nb = fill(&mut fb, &mut bb, b);
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Some(at + i as u64);
        }
        if na != nb {
            return Some(at + n as u64);
        }
        if na == 0 {
            return None;
        }
        at += na as u64;
    }
}

/// Panics naming the first differing offset unless `a` and `b` hold the same bytes (see
/// [`first_difference`]).
pub fn assert_same_bytes(a: &std::path::Path, b: &std::path::Path) {
    if let Some(off) = first_difference(a, b) {
        panic!(
            "{} and {} differ at offset {off} ({off:#x})",
            a.display(),
            b.display()
        );
    }
}

/// Returns from the calling test (after printing why) unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::test_util::is_root() {
            $crate::test_util::skip(module_path!(), "needs root");
            return;
        }
    };
}

/// Returns from the calling test (after printing why) unless every named tool is installed.
#[macro_export]
macro_rules! require_tool {
    ($($tool:expr),+ $(,)?) => {
        $(
            if $crate::test_util::find_tool($tool).is_none() {
                $crate::test_util::skip(module_path!(), &format!("{} is not installed", $tool));
                return;
            }
        )+
    };
}

/// Replays every checked-in input of `fuzz/corpus/<target>` through a fuzz `harness`, so a
/// normal `cargo test` re-checks what the fuzzer found. A panicking input fails the test and
/// is named. Returns how many inputs were replayed.
pub fn replay_corpus(target: &str, harness: fn(&[u8])) -> usize {
    let dir =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus")).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {}", dir.display());
    for p in &files {
        let data = std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
        let r = std::panic::catch_unwind(|| harness(&data));
        assert!(r.is_ok(), "corpus input {} fails", p.display());
    }
    println!("replayed {} {target} corpus inputs", files.len());
    files.len()
}

#[cfg(test)]
mod tests {
    use super::first_difference;

    #[test]
    fn first_difference_finds_the_offset_and_a_length_mismatch() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let mut data = vec![7u8; (3 << 20) + 5];
        std::fs::write(&a, &data).unwrap();
        std::fs::write(&b, &data).unwrap();
        assert_eq!(first_difference(&a, &b), None);
        data[(2 << 20) + 3] = 8;
        std::fs::write(&b, &data).unwrap();
        assert_eq!(first_difference(&a, &b), Some((2 << 20) + 3));
        data[(2 << 20) + 3] = 7;
        std::fs::write(&b, &data[..data.len() - 1]).unwrap();
        assert_eq!(first_difference(&a, &b), Some((3 << 20) + 4));
    }
}
