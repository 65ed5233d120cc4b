//! Harness errors: each variant names the step that failed.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("unknown case {name:?} (known: {known})")]
    UnknownCase { name: String, known: String },
    #[error("fixture {name}: {detail}")]
    Fixture { name: String, detail: String },
    /// The case cannot run here (not root, tool missing): reported as skipped, not failed.
    #[error("case {case} skipped: {reason}")]
    Skipped { case: String, reason: String },
    #[error("cannot reserve {bytes} bytes of huge pages: {detail}")]
    HugePages { bytes: u64, detail: String },
    #[error("cannot encode results")]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, BenchError>;

/// Shorthand for an [`BenchError::Io`] builder: `.map_err(io_err("open", &path))`.
pub fn io_err(what: &'static str, path: &std::path::Path) -> impl FnOnce(io::Error) -> BenchError {
    let path = path.to_path_buf();
    move |source| BenchError::Io { what, path, source }
}
