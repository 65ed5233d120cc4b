//! Side-by-side harness: Ember against the tools operators use today.
//!
//! ```text
//! cargo build --release
//! cargo run --release -p ember-bench -- compare [--cases sparse8g,full4g,frag,...] [--runs 3]
//!     [--dir DIR] [--ember PATH] [--timeout SECS] [--quick] [--bps-limit BYTES]
//! ```
//!
//! See bench/README.md for the families, the columns, the goals and the exact command lines.

mod cases;
mod error;
mod fixture;
mod goals;
mod harness;
mod report;
mod runner;
mod sys;
mod units;
mod util;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

use cases::concurrent::ConcurrentCase;
use cases::copy::CopyCase;
use cases::fast::FastCase;
use cases::image::{Direction, ImageCase};
use cases::wipe::WipeCase;
use cases::{concurrent, fast, frag, Case, Ctx, Ember, Scale};
use error::{io_err, BenchError, Result};
use harness::{error_chain, run_case};
use report::CaseResult;

/// Tests that hold large buffers take this, so the RSS test does not see them in a fork.
#[cfg(test)]
pub static BIG_MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The groups `--cases` accepts (besides `all`), each with its cases in run order.
const GROUPS: [(&str, &[&str]); 6] = [
    ("copy", &["sparse8g", "full4g", "sparse4t", "copy-to-loop"]),
    ("wipe", &["wipe-file", "wipe-loop"]),
    (
        "image",
        &[
            "img-to-file",
            "img-to-loop",
            "imgc-to-file",
            "imgc-to-loop",
            "imgz-to-file",
            "imgz-to-loop",
            "img-from-vol",
        ],
    ),
    ("fast", &fast::CASES),
    ("frag", &frag::CASES),
    ("concurrent", &concurrent::CASES),
];

/// Every case, in run order.
fn all_cases() -> impl Iterator<Item = &'static str> {
    GROUPS.iter().flat_map(|(_, cases)| cases.iter().copied())
}

#[derive(Parser)]
#[command(name = "ember-bench", about = "Ember side-by-side benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Race ember against dd, cp, qemu-img, nbdcopy and the fio device reference on seeded
    /// fixtures.
    Compare(CompareArgs),
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Comma-separated cases or groups. Cases: sparse8g, full4g, sparse4t, copy-to-loop,
    /// wipe-file, wipe-loop, img-to-file, img-to-loop, imgc-to-file, imgc-to-loop,
    /// imgz-to-file, imgz-to-loop, img-from-vol, fast-full2g, fast-sparse4g, fast-loop-full2g,
    /// fast-loop-sparse4g, frag64k, frag1m, concurrent4; groups copy, wipe, image, fast, frag,
    /// concurrent, all.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    cases: Vec<String>,
    /// Timed runs per tool (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Work directory for fixtures and destinations (created; fixtures are reused).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The ember binary (default: build/release/ember in the repository).
    #[arg(long)]
    ember: Option<PathBuf>,
    /// Per-tool, per-run timeout in seconds; a timed-out tool is recorded as such and not rerun.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Small fixtures (512 MiB / 256 MiB / 64 GiB / 256 MiB text logical, 256 MiB wipes, and
    /// the smaller sizes of the fast, frag and concurrent families) to try the harness.
    #[arg(long)]
    quick: bool,
    /// Per-copy limit of `ember x4 --bps-limit` in concurrent4, bytes per second
    /// [default: 64 MiB/s; with --quick: 16 MiB/s].
    #[arg(long)]
    bps_limit: Option<u64>,
    /// Where compare-<timestamp>.json and latest.json (a copy of the latest run) are written
    /// [default: bench/results; with --quick: DIR/results].
    #[arg(long)]
    results: Option<PathBuf>,
    /// Do not drop the page cache before each run.
    #[arg(long)]
    no_drop_caches: bool,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn select_cases(list: &[String]) -> Result<Vec<&'static str>> {
    let mut out: Vec<&'static str> = Vec::new();
    for raw in list {
        let name = raw.trim();
        let add: Vec<&'static str> = if name == "all" {
            all_cases().collect()
        } else if let Some((_, cases)) = GROUPS.iter().find(|(g, _)| *g == name) {
            cases.to_vec()
        } else if let Some(c) = all_cases().find(|c| *c == name) {
            vec![c]
        } else {
            let groups: Vec<&str> = GROUPS.iter().map(|(g, _)| *g).collect();
            return Err(BenchError::UnknownCase {
                name: name.to_string(),
                known: format!(
                    "{}, {}, all",
                    all_cases().collect::<Vec<_>>().join(", "),
                    groups.join(", ")
                ),
            });
        };
        for c in add {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// The case `name`; `bps_limit` is concurrent4's per-copy limit.
fn make_case(name: &str, scale: Scale, dir: &Path, bps_limit: u64) -> Box<dyn Case> {
    let wipe = scale.wipe_size();
    match name {
        n if fast::CASES.contains(&n) => Box::new(FastCase::new(name, scale, dir)),
        n if frag::CASES.contains(&n) => Box::new(frag::case(name, scale, dir)),
        n if concurrent::CASES.contains(&n) => {
            Box::new(ConcurrentCase::new(name, scale, dir, bps_limit))
        }
        "sparse8g" => Box::new(CopyCase::new(
            name,
            scale.sparse8g(),
            scale.full4g(),
            dir,
            false,
        )),
        "full4g" => Box::new(CopyCase::new(
            name,
            scale.full4g(),
            scale.full4g(),
            dir,
            false,
        )),
        "sparse4t" => Box::new(CopyCase::new(
            name,
            scale.sparse4t(),
            scale.full4g(),
            dir,
            false,
        )),
        "copy-to-loop" => Box::new(CopyCase::new(
            name,
            scale.sparse8g(),
            scale.full4g(),
            dir,
            true,
        )),
        "wipe-file" => Box::new(WipeCase::new(name, false, wipe, dir)),
        "wipe-loop" => Box::new(WipeCase::new(name, true, wipe, dir)),
        "img-to-file" | "imgc-to-file" => Box::new(ImageCase::new(
            name,
            Direction::ToFile,
            name.starts_with("imgc"),
            scale.sparse8g(),
            scale.full4g(),
            dir,
        )),
        "img-to-loop" | "imgc-to-loop" => Box::new(ImageCase::new(
            name,
            Direction::ToLoop,
            name.starts_with("imgc"),
            scale.sparse8g(),
            scale.full4g(),
            dir,
        )),
        // Compressed images of compressible data: the clusters really are compressed.
        "imgz-to-file" => Box::new(ImageCase::new(
            name,
            Direction::ToFile,
            true,
            scale.text4g(),
            scale.full4g(),
            dir,
        )),
        "imgz-to-loop" => Box::new(ImageCase::new(
            name,
            Direction::ToLoop,
            true,
            scale.text4g(),
            scale.full4g(),
            dir,
        )),
        _ => Box::new(ImageCase::new(
            name,
            Direction::FromVolume,
            false,
            scale.sparse8g(),
            scale.full4g(),
            dir,
        )),
    }
}

#[derive(Serialize)]
struct Document<'a> {
    timestamp: String,
    scale: Scale,
    runs: usize,
    timeout_seconds: u64,
    caches_dropped: bool,
    interrupted: bool,
    rss_floor_kib: u64,
    ember_binary: String,
    environment: serde_json::Value,
    definitions: serde_json::Value,
    cases: &'a [CaseResult],
    goals: &'a [goals::Goal],
}

fn compare(args: CompareArgs) -> Result<bool> {
    let root = repo_root();
    let dir = args.dir.unwrap_or_else(|| root.join("build/bench-work"));
    if dir.to_string_lossy().contains(':') {
        return Err(BenchError::Fixture {
            name: "work dir".into(),
            detail: format!(
                "{} contains ':', which fio reads as a file separator",
                dir.display()
            ),
        });
    }
    std::fs::create_dir_all(&dir).map_err(io_err("create work directory", &dir))?;
    let dir = dir.canonicalize().map_err(io_err("resolve", &dir))?;
    // Quick runs are for trying the harness: keep them out of the checked-in results.
    let results_dir = args.results.unwrap_or_else(|| {
        if args.quick {
            dir.join("results")
        } else {
            root.join("bench/results")
        }
    });
    let selected = select_cases(&args.cases)?;
    if args.runs == 0 {
        return Err(BenchError::Fixture {
            name: "runs".into(),
            detail: "--runs must be at least 1".into(),
        });
    }
    let scale = if args.quick {
        Scale::Quick
    } else {
        Scale::Full
    };
    let bps_limit = args.bps_limit.unwrap_or_else(|| scale.bps_limit());
    let default_ember = args.ember.is_none();
    let ember_path = args
        .ember
        .unwrap_or_else(|| root.join("build/release/ember"));
    if default_ember {
        let sources: Vec<PathBuf> = ["src", "engine/src", "drivers/src"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        let built = std::fs::metadata(&ember_path)
            .and_then(|m| m.modified())
            .ok();
        if let (Some(built), Some(newest)) = (built, util::newest_source(&sources)) {
            if newest > built {
                eprintln!(
                    "warning: {} is older than the sources; run `cargo build --release` first",
                    ember_path.display()
                );
            }
        }
    }
    let root_user = util::is_root();
    let mut drop = !args.no_drop_caches;
    if drop && !util::drop_caches() {
        eprintln!("note: cannot drop caches (not root?); runs will be warm");
        drop = false;
    }
    let ctx = Ctx {
        dir: dir.clone(),
        ember: Ember::new(ember_path.clone()),
        timeout: Duration::from_secs(args.timeout),
        root: root_user,
    };
    let floor = runner::run_steps(&[vec!["true".into()]], Duration::from_secs(10)).max_rss_kib;
    eprintln!("RSS floor (ru_maxrss of `true` spawned the same way): {floor} KiB");
    let (stamp, iso) = util::timestamps();
    let environment = util::environment(&dir);
    let mut results = Vec::new();
    runner::install_interrupt_handler();
    for name in selected {
        if runner::interrupted() {
            break;
        }
        let mut case = make_case(name, scale, &dir, bps_limit);
        let r = run_case(case.as_mut(), &ctx, args.runs, drop);
        report::print_case(&r, args.runs);
        results.push(r);
    }
    let interrupted = runner::interrupted();
    if interrupted {
        eprintln!("interrupted: cases cleaned up; partial results follow");
    }
    let goals = goals::goals(&results);
    goals::print_goals(&goals);
    let doc = Document {
        timestamp: iso,
        scale,
        runs: args.runs,
        timeout_seconds: args.timeout,
        caches_dropped: drop,
        interrupted,
        rss_floor_kib: floor,
        ember_binary: ember_path.display().to_string(),
        environment,
        definitions: serde_json::json!({
            "median_seconds": "median wall time over the successful runs, spawn to exit of the last step, data made durable (fdatasync/O_DIRECT+flush or `sync FILE`, an fsync of what the peer wrote)",
            "mb_per_s": "data_bytes / 1e6 / median_seconds; data_bytes is the allocated source data for sparse sources and the logical size otherwise",
            "mb_per_s (tools with bytes)": "a tool that moves other bytes than the case's (concurrent4's single copy) has them in `bytes`; its MB/s and ratios use them",
            "time_vs_ember": "(tool median time / its bytes) / (ember median time / its bytes): the time ratio when both move the same bytes (> 1 means ember is faster)",
            "time_vs_best_peer": "as time_vs_ember, against the fastest validated peer",
            "median_cpu_seconds": "median over the successful runs of user + sys CPU seconds (wait4 ru_utime + ru_stime of every step and job, with the processes they reaped; io_uring workers are the tool's threads; kernel writeback threads are nobody's)",
            "cpu_seconds_per_gb": "median_cpu_seconds / (bytes / 1e9)",
            "cpu_vs_best_peer": "cpu_seconds_per_gb / that of the validated peer with the least CPU per GB",
            "peak_rss_kib": "max over runs of wait4 ru_maxrss (covers every step and the processes it reaped; includes rss_floor_kib, the harness's resident anonymous memory copied at fork); several jobs: the largest one's",
            "reference_seconds": "device reference tools (role reference, one per fio configuration): max of fio's job_runtime over its jobs (time until all finished, end_fsync included); fio_wall_seconds has the process wall time; the case's device reference is the fastest configuration",
            "job_seconds": "several jobs at once: each job's finishing time from the common start",
            "evenness": "median over the runs of last job finishing time / first job finishing time",
            "job_rates": "tools with rate_limit: each job's bytes / its finishing time, every successful run (bytes/s)",
            "dst_allocated": "st_blocks * 512 of the destination (loop devices: of the backing file), max over runs",
            "dst_mapped": "bytes of the destination inside SEEK_DATA ranges (no file-system metadata, no unwritten preallocation), max over runs",
        }),
        cases: &results,
        goals: &goals,
    };
    std::fs::create_dir_all(&results_dir).map_err(io_err("create", &results_dir))?;
    let json = serde_json::to_string_pretty(&doc)?;
    let prefix = if args.quick {
        "compare-quick"
    } else {
        "compare"
    };
    let file = results_dir.join(format!("{prefix}-{stamp}.json"));
    std::fs::write(&file, &json).map_err(io_err("write", &file))?;
    println!("\nresults: {}", file.display());
    // latest.json is always the latest run written to this folder (a partial, quick or
    // interrupted one too: the document says which); older runs are quoted by file name.
    let latest = results_dir.join("latest.json");
    std::fs::write(&latest, &json).map_err(io_err("write", &latest))?;
    println!("         {}", latest.display());
    Ok(!interrupted && results.iter().all(|c| c.error.is_none()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Compare(args) => match compare(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("some cases could not be set up (see above)");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {}", error_chain(&e));
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_cases() {
        let image = select_cases(&["image".into()]).unwrap();
        assert_eq!(image.first(), Some(&"img-to-file"));
        assert!(image.contains(&"imgz-to-file") && image.contains(&"imgz-to-loop"));
        let all = select_cases(&["all".into()]).unwrap();
        assert_eq!(all, all_cases().collect::<Vec<_>>());
        assert_eq!(all.len(), 20);
        assert_eq!(
            select_cases(&["frag".into(), "concurrent".into()]).unwrap(),
            ["frag64k", "frag1m", "concurrent4"]
        );
        assert_eq!(
            select_cases(&["imgz-to-loop".into(), "image".into()]).unwrap()[0],
            "imgz-to-loop"
        );
        assert!(select_cases(&["imgz".into()]).is_err());
        for name in all_cases() {
            assert_eq!(
                make_case(name, Scale::Quick, Path::new("/nonexistent"), 1).name(),
                name
            );
        }
    }
}
