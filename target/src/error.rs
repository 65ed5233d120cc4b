//! The crate's error type. Variants name the step that failed and carry the context as fields.
//! No variant ever carries a CHAP secret: command lines and outputs are redacted by
//! [`runner`](crate::runner) before they get here.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, TargetError>;

/// Everything a target helper call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// An IQN (built or given) breaks RFC 3720's `iqn.yyyy-mm.reverse.domain[:unique]` shape or
    /// Ember's restricted character set.
    #[error("invalid IQN {iqn:?}: {reason}")]
    InvalidIqn { iqn: String, reason: &'static str },

    /// A value that would be written into a target config or passed to a tool is unsafe.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    /// A CHAP user name or secret is unusable (the secret itself is never shown).
    #[error("invalid CHAP credentials: {reason}")]
    InvalidChap { reason: &'static str },

    /// `provider_location` does not have Cinder's format.
    #[error("cannot parse provider_location {location:?}: {reason}")]
    ProviderLocation {
        location: String,
        reason: &'static str,
    },

    /// `provider_auth` does not have Cinder's format (the value holds a secret, so it is not shown).
    #[error("cannot parse provider_auth: {reason}")]
    ProviderAuth { reason: &'static str },

    /// The connector lacks a key the call needs (Cinder's InvalidConnectorException).
    #[error("connector is missing {missing}")]
    InvalidConnector { missing: &'static str },

    /// The model passed back does not belong to this volume.
    #[error("export model of {volume} names IQN {iqn}, expected {expected}")]
    ModelMismatch {
        volume: String,
        iqn: String,
        expected: String,
    },

    /// A tool could not be started.
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// A tool ran past its time limit and was killed.
    #[error("{command} timed out after {timeout:?}")]
    Timeout { command: String, timeout: Duration },

    /// A tool exited non-zero. `command` and `stderr` are redacted.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stdout: String,
        stderr: String,
    },

    /// Tool output could not be parsed.
    #[error("cannot parse output of {what}: {reason} (line {line:?})")]
    Parse {
        what: &'static str,
        line: String,
        reason: &'static str,
    },

    /// A file operation on the helper's state failed.
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The target daemon does not know the target.
    #[error("target {iqn} not found")]
    TargetNotFound { iqn: String },

    /// The target was created but is not usable (e.g. its LUN never appeared).
    #[error("creating target {iqn} failed: {reason}")]
    CreateFailed { iqn: String, reason: String },

    /// Initiators are logged in and `force` was not given.
    #[error(
        "target {iqn} is in use by {sessions} session(s) ({initiators}); not removed without force"
    )]
    TargetInUse {
        iqn: String,
        sessions: usize,
        initiators: String,
    },

    /// Removal was requested but the target is still listed afterwards.
    #[error("target {iqn} is still present after removal")]
    RemoveFailed { iqn: String },

    /// The operation is not supported by this implementation or machine.
    #[error("{what} is not supported: {reason}")]
    Unsupported {
        what: &'static str,
        reason: &'static str,
    },
}

/// Maps an I/O error of the step `op` on `path` into [`TargetError::Io`].
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TargetError {
    let path = path.to_owned();
    move |source| TargetError::Io { op, path, source }
}
