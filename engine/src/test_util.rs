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
