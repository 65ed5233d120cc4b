//! The engine's error type: every variant names the step that failed and carries the path and
//! offset it failed at. The OS error is the `source`, never repeated inside the message: the CLI
//! prints the whole chain.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A small, stable classification that callers (drivers, the CLI) match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A path does not exist.
    NotFound,
    /// Bad arguments: sizes, ranges, paths that cannot be used as asked.
    InvalidInput,
    /// The destination (or its filesystem) ran out of space.
    NoSpace,
    /// Permission denied or read-only target.
    PermissionDenied,
    /// An I/O operation failed.
    Io,
    /// The operation was cancelled by the caller (Ctrl-C, SIGTERM).
    Cancelled,
    /// An I/O did not complete within its deadline.
    TimedOut,
    /// An image is malformed or refused by the safety rules.
    BadImage,
    /// Read-back verification found data that should not be there.
    VerifyFailed,
    /// The kernel or filesystem does not offer what was asked.
    Unsupported,
}

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening or probing a file or device failed.
    #[error("cannot {op} {path}")]
    Open {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A positioned operation (read, write, zeroout, punch, seek) failed.
    #[error("{op} failed at offset {offset} ({offset:#x}) in {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// Flushing data to stable storage failed: the copy or wipe did not fully happen.
    #[error("flush (fdatasync) failed for {path}")]
    Flush {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The arguments cannot work (sizes, ranges, same file twice, ...).
    #[error("{0}")]
    Invalid(String),
    /// The operation was cancelled; `done` bytes of `total` were processed.
    #[error("cancelled after {done} of {total} bytes")]
    Cancelled { done: u64, total: u64 },
    /// An I/O never completed.
    #[error("{op} at offset {offset} in {path} did not complete within {secs} s")]
    TimedOut {
        op: &'static str,
        path: PathBuf,
        offset: u64,
        secs: u64,
    },
    /// Setting up io_uring failed.
    #[error("io_uring setup failed")]
    Ring(#[source] io::Error),
    /// An image failed inspection or could not be decoded.
    #[error("{path}: {reason}")]
    BadImage { path: PathBuf, reason: String },
    /// Verification found a byte that is not what it must be.
    #[error("verification failed: {path} differs at offset {offset} ({offset:#x})")]
    VerifyFailed { path: PathBuf, offset: u64 },
    /// The target does not support the requested method.
    #[error("{what} is not supported on {path}")]
    Unsupported {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Option<io::Error>,
    },
}

impl Error {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Open { source, .. } | Error::Io { source, .. } | Error::Flush { source, .. } => {
                kind_of_io(source)
            }
            Error::Ring(_) => ErrorKind::Unsupported,
            Error::Invalid(_) => ErrorKind::InvalidInput,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::TimedOut { .. } => ErrorKind::TimedOut,
            Error::BadImage { .. } => ErrorKind::BadImage,
            Error::VerifyFailed { .. } => ErrorKind::VerifyFailed,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
        }
    }

    /// Shorthand for an [`Error::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    /// Shorthand for an [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, offset: u64, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            offset,
            source,
        }
    }

    /// Shorthand for an [`Error::Open`].
    pub fn open(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Open {
            op,
            path: path.into(),
            source,
        }
    }
}

fn kind_of_io(e: &io::Error) -> ErrorKind {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
        Some(libc::ENOENT) => ErrorKind::NotFound,
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => ErrorKind::PermissionDenied,
        Some(libc::EOPNOTSUPP) => ErrorKind::Unsupported,
        Some(libc::ETIMEDOUT) => ErrorKind::TimedOut,
        _ => match e.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_no_space_and_message_names_path_and_offset() {
        let e = Error::io(
            "write",
            "/dev/loop9",
            4096,
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        let msg = e.to_string();
        assert!(msg.contains("/dev/loop9") && msg.contains("4096"), "{msg}");
    }
}
