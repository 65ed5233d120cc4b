//! `ember demo`: Ember's main job on the embedded default — the file backend in a local folder,
//! no root, no config. Builds a sparse sample volume, copies and compares it with the engine,
//! turns it into a qcow2 image, then runs a volume's whole life on the file backend: create,
//! write the image, snapshot, clone, extend, stats, delete with a zero-wipe.

use super::common::human;
use super::CliResult;
use ember_drivers::config::BackendConfig;
use ember_drivers::{driver_for, ImageFile, ImageMeta, Snapshot, Volume};
use ember_engine::alloc::data_map;
use ember_engine::copy::copy;
use ember_engine::format::convert::{volume_to_image, FromVolumeOptions};
use ember_engine::format::Format;
use ember_engine::options::CopyOptions;
use ember_engine::verify::compare;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

/// Build a sparse sample volume in a local folder, copy and compare it, then run a volume's
/// lifecycle on the file backend there; print figures.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Folder for the demo's files and volumes (created if missing).
    #[arg(long, default_value = "ember-data/demo")]
    pub dir: PathBuf,
    /// Logical size of the sample volume.
    #[arg(long, value_parser = super::common::parse_size, default_value = "1G")]
    pub size: u64,
}

fn step<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, Box<dyn std::error::Error + Send + Sync>>,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    let t = Instant::now();
    let r = f()?;
    println!("  {what:<48} {:>8.3} s", t.elapsed().as_secs_f64());
    Ok(r)
}

pub fn run(a: DemoArgs) -> CliResult {
    if a.size < 16 << 20 || a.size > 64 << 30 {
        return Err("the demo's --size must be from 16M to 64G".into());
    }
    std::fs::create_dir_all(&a.dir)?;
    let src = a.dir.join("sample.raw");
    let dst = a.dir.join("copy.raw");
    let image = a.dir.join("sample.qcow2");
    for p in [&src, &dst, &image] {
        let _ = std::fs::remove_file(p);
    }
    // A sparse volume: 1 MiB of data every 16 MiB, plus one all-zero block written as data.
    let f = std::fs::File::create(&src)?;
    f.set_len(a.size)?;
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 | 1)
        .collect();
    let mut off = 0;
    while off + (1 << 20) <= a.size {
        f.write_at(&block, off)?;
        off += 16 << 20;
    }
    f.write_at(&vec![0u8; 1 << 20], 2 << 20)?;
    f.sync_all()?;
    drop(f);
    println!(
        "sample volume {}: {} logical, {} allocated",
        src.display(),
        human(a.size),
        human(data_map(&src)?.total_len())
    );

    println!("engine:");
    let s = step("copy (io_uring, sparse-preserving)", || {
        Ok(copy(
            &src,
            &dst,
            &CopyOptions {
                verify: true,
                ..CopyOptions::default()
            },
        )?)
    })?;
    println!(
        "    {} data written, {} left as holes, {} extents, verified {}, {} backend",
        human(s.bytes_written),
        human(s.bytes_skipped),
        s.extents,
        human(s.verified_bytes.unwrap_or(0)),
        s.backend
    );
    let c = step("compare source and copy", || Ok(compare(&src, &dst)?))?;
    if !c.identical {
        return Err(format!(
            "copy differs from the source at offset {:?}",
            c.first_difference
        )
        .into());
    }
    println!(
        "    identical; the copy allocates {} (the source {})",
        human(data_map(&dst)?.total_len()),
        human(data_map(&src)?.total_len())
    );
    step("volume -> qcow2 image (native writer)", || {
        let opts = FromVolumeOptions {
            format: Some(Format::Qcow2),
            compress: false,
            threads: 2,
            copy: CopyOptions::default(),
        };
        Ok(volume_to_image(&src, &image, &opts)?)
    })?;

    println!(
        "file backend (the embedded default) in {}:",
        a.dir.join("volumes").display()
    );
    let cfg = BackendConfig::file("demo", std::path::absolute(a.dir.join("volumes"))?);
    let driver = driver_for(&cfg)?;
    driver.do_setup()?;
    driver.check_for_setup_error()?;
    let gib = a.size.div_ceil(1 << 30);
    let vol = Volume::new(gib, Some("demo-db"))?;
    step(
        &format!("create volume demo-db ({gib} GiB, sparse)"),
        || Ok(driver.create_volume(&vol)?),
    )?;
    step("write the qcow2 image into it", || {
        let img = ImageFile {
            path: image.clone(),
            meta: ImageMeta {
                disk_format: "qcow2".into(),
                container_format: "bare".into(),
            },
        };
        Ok(driver.copy_image_to_volume(&vol, &img)?)
    })?;
    let snap = Snapshot::new(&vol, Some("demo-snap"))?;
    step("snapshot (reflink where the filesystem can)", || {
        Ok(driver.create_snapshot(&snap)?)
    })?;
    let clone = Volume::new(gib, Some("demo-clone"))?;
    step("clone", || Ok(driver.create_cloned_volume(&clone, &vol)?))?;
    step(&format!("extend the clone to {} GiB", gib + 1), || {
        Ok(driver.extend_volume(&clone, gib + 1)?)
    })?;
    let stats = step("stats (Cinder's keys)", || {
        Ok(driver.get_volume_stats(true)?)
    })?;
    let j = serde_json::to_value(&stats)?;
    println!(
        "    total_volumes={} provisioned_capacity_gb={} sparse_copy_volume={} storage_protocol={}",
        j["total_volumes"],
        j["provisioned_capacity_gb"],
        j["sparse_copy_volume"],
        j["storage_protocol"]
    );
    step("delete snapshot, clone and volume (zero-wiped)", || {
        driver.delete_snapshot(&snap)?;
        driver.delete_volume(&clone)?;
        driver.delete_volume(&vol)?;
        Ok(())
    })?;
    println!("done: `ember volume --help` drives the same backend from the shell.");
    Ok(())
}
