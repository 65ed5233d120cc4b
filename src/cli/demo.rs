//! `ember demo`: Ember's main job on the embedded default, no root, no config.

use super::common::human;
use super::CliResult;
use ember_engine::copy::{compare, copy, data_map, CopyOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Build a sparse sample volume in a local folder, copy and compare it, print figures.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Folder for the demo's files (created if missing).
    #[arg(long, default_value = "ember-data/demo")]
    pub dir: PathBuf,
    /// Logical size of the sample volume.
    #[arg(long, value_parser = super::common::parse_size, default_value = "1G")]
    pub size: u64,
}

pub fn run(a: DemoArgs) -> CliResult {
    std::fs::create_dir_all(&a.dir)?;
    let src = a.dir.join("sample.raw");
    let dst = a.dir.join("copy.raw");
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    // A sparse volume: 1 MiB of data every 16 MiB, plus one all-zero block written as data.
    let f = std::fs::File::create(&src)?;
    f.set_len(a.size)?;
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut off = 0;
    while off + (1 << 20) <= a.size {
        f.write_at(&block, off)?;
        off += 16 << 20;
    }
    if a.size >= 3 << 20 {
        f.write_at(&vec![0u8; 1 << 20], 2 << 20)?;
    }
    f.sync_all()?;
    drop(f);
    let alloc_src = data_map(&src)?.total_len();
    println!(
        "sample volume {}: {} logical, {} allocated",
        src.display(),
        human(a.size),
        human(alloc_src)
    );
    let s = copy(&src, &dst, &CopyOptions::default())?;
    println!(
        "copy -> {}: {} data written, {} left as holes, {} extents, {:.3} s ({:.0} MB/s logical, {} backend)",
        dst.display(),
        human(s.bytes_written),
        human(s.bytes_skipped),
        s.extents,
        s.seconds,
        s.mb_per_s,
        s.backend
    );
    let c = compare(&src, &dst)?;
    let alloc_dst = data_map(&dst)?.total_len();
    println!(
        "compare: {} ({} read from each side); destination allocates {}",
        if c.identical {
            "identical"
        } else {
            "DIFFERENT"
        },
        human(c.bytes_compared),
        human(alloc_dst)
    );
    if !c.identical {
        return Err(format!(
            "copy differs from the source at offset {:?}",
            c.first_difference
        )
        .into());
    }
    Ok(())
}
