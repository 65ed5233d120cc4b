//! `ember wipe TARGET`: zero-on-delete wipes with proof.

use super::common::{block_and_depth, cancel_flag, human, parse_size, progress_bar};
use super::CliResult;
use ember_engine::wipe::{wipe, Verify, WipeMethod, WipeOptions};
use std::path::PathBuf;

/// Make a block device, a file, or a byte range of either read back as zeros.
#[derive(clap::Args, Debug)]
pub struct WipeArgs {
    /// Block device or regular file to wipe.
    pub target: PathBuf,
    /// Start of the range to wipe (bytes, or with a K/M/G/T suffix).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub offset: u64,
    /// Length of the range (default: to the end).
    #[arg(long, value_parser = parse_size)]
    pub length: Option<u64>,
    /// How to zero: auto picks the fastest method that guarantees zeros on read.
    #[arg(long, value_enum, default_value = "auto")]
    pub method: MethodArg,
    /// Wipe only the first N MiB of the range (Cinder's volume_clear_size; 0 = all).
    #[arg(long, value_name = "MIB")]
    pub clear_size: Option<u64>,
    /// Limit throughput to this many bytes per second.
    #[arg(long, value_parser = parse_size)]
    pub bps_limit: Option<u64>,
    /// Read back and prove the range is zero: every byte, or a seeded sample plus the first and
    /// last MiB.
    #[arg(long, value_enum)]
    pub verify: Option<VerifyArg>,
    /// Seed of the sample verification.
    #[arg(long, default_value_t = 0x0065_6d62_6572)]
    pub seed: u64,
    /// Bytes per I/O for zero writes and verification [default: 1M, or as the engine's rule
    /// chooses for the storage unless this or --queue-depth is given].
    #[arg(long, value_parser = parse_size)]
    pub block_size: Option<u64>,
    /// I/Os in flight [default: 32, or as the engine's rule chooses unless given].
    #[arg(long)]
    pub queue_depth: Option<u32>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum MethodArg {
    Auto,
    Zeroout,
    ZeroRange,
    Punch,
    Write,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum VerifyArg {
    Full,
    Sample,
}

pub fn run(a: WipeArgs) -> CliResult {
    let clear_size = match a.clear_size {
        None | Some(0) => None,
        Some(mib) => Some(
            mib.checked_mul(1 << 20)
                .ok_or_else(|| format!("invalid --clear-size {mib}: too large"))?,
        ),
    };
    let defaults = WipeOptions::default();
    let (block_size, queue_depth, tune) = block_and_depth(
        a.block_size,
        a.queue_depth,
        (defaults.block_size, defaults.queue_depth),
    )?;
    let mut opts = WipeOptions {
        offset: a.offset,
        length: a.length,
        method: match a.method {
            MethodArg::Auto => WipeMethod::Auto,
            MethodArg::Zeroout => WipeMethod::Zeroout,
            MethodArg::ZeroRange => WipeMethod::ZeroRange,
            MethodArg::Punch => WipeMethod::Punch,
            MethodArg::Write => WipeMethod::Write,
        },
        clear_size,
        bps_limit: a.bps_limit,
        verify: match a.verify {
            None => Verify::None,
            Some(VerifyArg::Full) => Verify::Full,
            Some(VerifyArg::Sample) => Verify::Sample,
        },
        sample_seed: a.seed,
        block_size,
        queue_depth,
        tune,
        cancel: Some(cancel_flag()),
        ..defaults
    };
    let bar = progress_bar("wipe", a.json);
    opts.progress = bar.as_ref().map(|(_, f)| f.clone());
    let res = wipe(&a.target, &opts);
    if let Some((b, _)) = bar {
        b.finish_and_clear();
    }
    let s = res?;
    if a.json {
        super::json::print(&s)?;
    } else {
        let methods: Vec<String> = {
            let mut m: Vec<String> = s
                .ranges
                .iter()
                .map(|r| serde_json::to_value(r.method).unwrap_or_default())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            m.dedup();
            m
        };
        println!(
            "wiped {} of {} at offset {} ({} zeroed, {} already holes; method {}) in {:.3} s, {:.0} MB/s{}",
            human(s.length),
            s.target.display(),
            s.offset,
            human(s.bytes_zeroed),
            human(s.bytes_skipped),
            if methods.is_empty() { "none needed".to_string() } else { methods.join("+") },
            s.seconds,
            s.mb_per_s,
            match &s.verified {
                Some(v) => format!("; verified zero ({} read back)", human(v.bytes_checked)),
                None => String::new(),
            }
        );
    }
    Ok(())
}
