//! Pieces shared by subcommands: size parsing, the copy flags, progress bars, signals, errors.

use ember_engine::options::{CopyOptions, ProgressFn};
use ember_engine::tuning::Tune;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Parses a size: plain bytes or with a K/M/G/T suffix (powers of 1024; "KiB", "MB" etc. too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid size '{s}': expected a number with an optional K/M/G/T suffix"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size '{s}': number too large"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("invalid size '{s}': unknown unit '{other}'")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size '{s}': too large"))
}

/// The flags every data-moving command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct IoArgs {
    /// Bytes per I/O (power of two, 4K to 64M) [default: 1M; between devices through O_DIRECT,
    /// unless this or --queue-depth is given: as large as the devices take whole, up to 4M].
    #[arg(long, value_parser = parse_size)]
    pub block_size: Option<u64>,
    /// I/Os in flight [default: 32; at most 4 on memory-backed storage; between devices through
    /// O_DIRECT, 52 MiB in flight; deeper for small pieces of data; unless given].
    #[arg(long)]
    pub queue_depth: Option<u32>,
    /// Do not use O_DIRECT (use the page cache).
    #[arg(long, conflicts_with = "direct")]
    pub no_direct: bool,
    /// Use O_DIRECT wherever the file or device allows it, also on memory-backed storage
    /// (by default the page cache is used there).
    #[arg(long)]
    pub direct: bool,
    /// Allocate a new destination file's data ranges before writing them, each exactly
    /// [default: on ext4, when the 8 MiB ext4 reserves around each write into a hole, counted
    /// per 8 MiB window holding data, would exceed its free space].
    #[arg(long)]
    pub allocate_first: bool,
    /// Never allocate the destination's data ranges before writing them.
    #[arg(long, conflicts_with = "allocate_first")]
    pub no_allocate_first: bool,
    /// Limit throughput to this many bytes per second (e.g. 100M), like Cinder's
    /// volume_copy_bps_limit.
    #[arg(long, value_parser = parse_size)]
    pub bps_limit: Option<u64>,
    /// Print a JSON summary on stdout instead of the human one.
    #[arg(long)]
    pub json: bool,
}

/// A block size and queue depth from the command line: what the user gave is pinned (used as
/// given), the rest is `default` and left to the engine's rule; `Tune`'s other fields tunable.
pub fn block_and_depth(
    block_size: Option<u64>,
    queue_depth: Option<u32>,
    default: (usize, u32),
) -> Result<(usize, u32, Tune), String> {
    let block = match block_size {
        Some(b) => usize::try_from(b).map_err(|_| format!("invalid block size {b}"))?,
        None => default.0,
    };
    let tune = Tune {
        block_size: block_size.is_none(),
        queue_depth: queue_depth.is_none(),
        ..Tune::default()
    };
    Ok((block, queue_depth.unwrap_or(default.1), tune))
}

impl IoArgs {
    /// Copy options carrying these flags (others at their defaults).
    pub fn options(&self) -> Result<CopyOptions, String> {
        let defaults = CopyOptions::default();
        let (block_size, queue_depth, tune) = block_and_depth(
            self.block_size,
            self.queue_depth,
            (defaults.block_size, defaults.queue_depth),
        )?;
        Ok(CopyOptions {
            block_size,
            queue_depth,
            direct: !self.no_direct,
            allocate_first: self.allocate_first,
            // What the user gave is used as given; the rest the engine may choose.
            tune: Tune {
                direct: !self.no_direct && !self.direct,
                allocate: !self.allocate_first && !self.no_allocate_first,
                ..tune
            },
            bps_limit: self.bps_limit,
            ..defaults
        })
    }
}

/// A flag set by SIGINT/SIGTERM: the engine stops cleanly and says how far it got.
pub fn cancel_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping kills the process the default way.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 1, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// A progress bar on a terminal (none when stderr is piped or JSON was asked for).
pub fn progress_bar(label: &str, json: bool) -> Option<(indicatif::ProgressBar, ProgressFn)> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    let b = bar.clone();
    let f: ProgressFn = Arc::new(move |done, total| {
        b.set_length(total);
        b.set_position(done);
    });
    Some((bar, f))
}

/// Formats bytes for people.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints an error chain as one line on stderr and returns the exit code: 130 for a
/// cancellation (as shells report SIGINT), 1 otherwise.
pub fn report_error(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("ember: {}", error_chain(e));
    let cancelled = e
        .downcast_ref::<ember_engine::Error>()
        .is_some_and(|e| e.kind() == ember_engine::ErrorKind::Cancelled)
        || e.to_string().starts_with("cancelled after");
    if cancelled {
        ExitCode::from(130)
    } else {
        ExitCode::FAILURE
    }
}

/// An error and its sources, joined with ": ".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        line.push_str(": ");
        line.push_str(&s.to_string());
        src = s.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
