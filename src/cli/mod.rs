//! Command-line interface: parsed args -> validated options -> engine call -> one-line errors.

mod common;
mod compare;
mod copy;
mod demo;
mod image;
mod json;
mod volume;
mod wipe;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub(crate) type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Ember: fast, sparse-aware, safe volume data movement.
#[derive(Parser, Debug)]
#[command(name = "ember", version, about, propagate_version = true)]
struct Cli {
    /// Log verbosity for diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Copy a file or block device, keeping holes and zeroing where needed.
    Copy(copy::CopyArgs),
    /// Report whether two files/devices hold identical content (holes read as zeros).
    Compare(compare::CompareArgs),
    /// Make a block device, file or byte range read back as zeros (zero-on-delete), with proof.
    Wipe(wipe::WipeArgs),
    /// Inspect images safely; image to volume, volume to image (raw, qcow2).
    Image(image::ImageArgs),
    /// Build a sparse sample volume in a local folder, copy and compare it, print figures.
    Demo(demo::DemoArgs),
    /// Manage volumes on the file or LVM backend (Cinder's driver operations).
    Volume(volume::VolumeArgs),
}

/// Entry point: runs the command and turns any error into one line and a non-zero exit.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // Usage errors: one line (clap's first), exit 2. Help and --version print as usual.
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("ember: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    init_logging(&cli.log);
    let json = cli.command.json();
    let res = match cli.command {
        Command::Copy(a) => copy::run(a),
        Command::Compare(a) => return compare::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Wipe(a) => wipe::run(a),
        Command::Image(a) => image::run(a),
        Command::Volume(a) => volume::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json && !json::printed() {
                let doc = json::error_document(e.as_ref(), common::error_chain(e.as_ref()));
                println!("{doc}");
            }
            common::report_error(e.as_ref())
        }
    }
}

impl Command {
    /// True when the command was asked for JSON (its errors are then JSON documents too).
    fn json(&self) -> bool {
        match self {
            Command::Copy(a) => a.io.json,
            Command::Compare(a) => a.json,
            Command::Wipe(a) => a.json,
            Command::Image(a) => a.json(),
            Command::Demo(_) => false,
            Command::Volume(a) => a.json,
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
