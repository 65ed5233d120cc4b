//! `ember compare A B`: exit 0 when identical, 1 when different, 2 on error (like cmp).

use super::common::report_error;
use std::path::PathBuf;
use std::process::ExitCode;

/// Report whether two files/devices hold identical content (holes read as zeros).
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// First file or block device.
    pub a: PathBuf,
    /// Second file or block device.
    pub b: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CompareArgs) -> ExitCode {
    match ember_engine::verify::compare(&a.a, &a.b) {
        Ok(c) => {
            if a.json {
                if let Err(e) = super::json::print(&c) {
                    report_error(&e);
                    return ExitCode::from(2);
                }
            } else if c.identical {
                println!("identical ({} bytes)", c.size_a);
            } else if c.size_a != c.size_b && c.first_difference == Some(c.size_a.min(c.size_b)) {
                println!(
                    "different: sizes differ ({} vs {} bytes), identical up to {}",
                    c.size_a,
                    c.size_b,
                    c.size_a.min(c.size_b)
                );
            } else {
                println!(
                    "different: first difference at offset {}",
                    c.first_difference.unwrap_or(0)
                );
            }
            if c.identical {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            if a.json {
                let doc = super::json::error_document(&e, super::common::error_chain(&e));
                println!("{doc}");
            }
            report_error(&e);
            ExitCode::from(2)
        }
    }
}
