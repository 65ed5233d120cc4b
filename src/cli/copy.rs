//! `ember copy SRC DST`.

use super::common::{cancel_flag, human, progress_bar, IoArgs};
use super::CliResult;
use std::path::PathBuf;

/// Copy a file or block device, keeping holes and zeroing where needed.
#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// Source file or block device.
    pub src: PathBuf,
    /// Destination file (created if missing) or block device.
    pub dst: PathBuf,
    #[command(flatten)]
    pub io: IoArgs,
    /// The destination already reads as zeros: do not zero holes.
    #[arg(long)]
    pub dest_zeroed: bool,
    /// Keep the source's allocation exactly (write all-zero blocks instead of making holes).
    #[arg(long)]
    pub preserve_allocation: bool,
    /// Overwrite an existing non-empty regular file.
    #[arg(long)]
    pub force: bool,
    /// Do not fdatasync the destination at the end.
    #[arg(long)]
    pub no_sync: bool,
    /// Make the copy resumable: persist progress in FILE (continues from FILE if it exists;
    /// removed when the copy completes).
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub checkpoint: Option<PathBuf>,
    /// Continue an interrupted copy from its checkpoint FILE (which must exist).
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// After the final flush, read the destination back and prove it: every written block
    /// against the CRC32C of the source bytes, every other byte zero.
    #[arg(long)]
    pub verify: bool,
    /// Milliseconds between checkpoints.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub checkpoint_interval: u64,
}

pub fn run(a: CopyArgs) -> CliResult {
    let mut opts = a.io.options()?;
    opts.dest_zeroed = a.dest_zeroed;
    opts.preserve_allocation = a.preserve_allocation;
    opts.force = a.force;
    opts.sync = !a.no_sync;
    opts.verify = a.verify;
    opts.cancel = Some(cancel_flag());
    if let Some(f) = &a.resume {
        if !f.exists() {
            return Err(format!(
                "checkpoint {} does not exist: nothing to resume",
                f.display()
            )
            .into());
        }
    }
    let cp_path = a.resume.clone().or(a.checkpoint.clone());
    opts.checkpoint = cp_path
        .clone()
        .map(|path| ember_engine::options::Checkpoint {
            path,
            interval: std::time::Duration::from_millis(a.checkpoint_interval.max(10)),
        });
    let bar = progress_bar("copy", a.io.json);
    opts.progress = bar.as_ref().map(|(_, f)| f.clone());
    let res = ember_engine::copy::copy(&a.src, &a.dst, &opts);
    if let Some((b, _)) = bar {
        b.finish_and_clear();
    }
    let s = match (res, &cp_path) {
        (Err(e), Some(cp)) if cp.exists() => {
            return Err(format!(
                "{}; resume with: ember copy {} {} --resume {}",
                super::common::error_chain(&e),
                a.src.display(),
                a.dst.display(),
                cp.display()
            )
            .into())
        }
        (res, _) => res?,
    };
    if a.io.json {
        super::json::print(&s)?;
    } else {
        println!(
            "copied {} ({} data in {} extents, {} zeroed, {} left as holes) in {:.3} s, {:.0} MB/s{}",
            human(s.logical_size),
            human(s.bytes_written),
            s.extents,
            human(s.bytes_zeroed),
            human(s.bytes_skipped),
            s.seconds,
            s.mb_per_s,
            match s.verified_bytes {
                Some(n) => format!("; verified ({} read back)", human(n)),
                None => String::new(),
            }
        );
    }
    Ok(())
}
