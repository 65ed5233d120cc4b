//! One error enum for every driver, classified into Cinder's exception categories.
//!
//! Each variant names the step that failed and carries the names/paths involved; the OS or engine
//! error is the `source`, never repeated in the message. [`DriverError::category`] gives the Cinder
//! exception class a caller (the CLI, a Cinder shim) reports.

use std::io;
use std::path::PathBuf;

use ember_engine::ErrorKind;

/// Result alias of the drivers.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;

/// Cinder's exception categories, as a caller matches on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum Category {
    /// `VolumeBackendAPIException`: the backend (lvm2, the filesystem) failed.
    BackendApi,
    /// `VolumeIsBusy`: the volume has snapshots or attachments.
    VolumeIsBusy,
    /// `SnapshotIsBusy`.
    SnapshotIsBusy,
    /// `NotFound` (`VolumeNotFound`, `SnapshotNotFound`, `VolumeGroupNotFound`).
    NotFound,
    /// `InvalidInput`: names, sizes, references that cannot be used.
    InvalidInput,
    /// `InvalidConfigurationValue`.
    InvalidConfiguration,
    /// `Duplicate`: the object already exists.
    AlreadyExists,
    /// `ManageExistingInvalidReference`.
    ManageExistingInvalidReference,
    /// `ManageExistingAlreadyManaged`.
    ManageExistingAlreadyManaged,
    /// `ImageUnacceptable`.
    ImageUnacceptable,
    /// `NotImplementedError` / `NotSupportedOperation`.
    NotSupported,
    /// Out of space (`VolumeSizeExceedsAvailableQuota`-like backend condition).
    NoSpace,
    /// The operation was cancelled.
    Cancelled,
}

impl Category {
    /// The Cinder exception class name for this category.
    pub fn cinder_name(self) -> &'static str {
        match self {
            Category::BackendApi => "VolumeBackendAPIException",
            Category::VolumeIsBusy => "VolumeIsBusy",
            Category::SnapshotIsBusy => "SnapshotIsBusy",
            Category::NotFound => "NotFound",
            Category::InvalidInput => "InvalidInput",
            Category::InvalidConfiguration => "InvalidConfigurationValue",
            Category::AlreadyExists => "Duplicate",
            Category::ManageExistingInvalidReference => "ManageExistingInvalidReference",
            Category::ManageExistingAlreadyManaged => "ManageExistingAlreadyManaged",
            Category::ImageUnacceptable => "ImageUnacceptable",
            Category::NotSupported => "NotSupportedOperation",
            Category::NoSpace => "VolumeBackendAPIException",
            Category::Cancelled => "Cancelled",
        }
    }
}

/// Errors of the volume drivers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The backend refused or failed an operation.
    #[error("backend error during {op}: {reason}")]
    BackendApi { op: &'static str, reason: String },
    /// A backend command ran and failed.
    #[error("{op}: `{command}` exited with {status}: {stderr}")]
    Command {
        op: &'static str,
        command: String,
        status: String,
        stderr: String,
    },
    /// A backend command could not be started or did not finish in time.
    #[error("{op}: cannot run `{command}`")]
    Spawn {
        op: &'static str,
        command: String,
        #[source]
        source: io::Error,
    },
    /// A backend tool printed output that does not parse.
    #[error("{op}: cannot parse the output of `{command}`: {reason}")]
    BadOutput {
        op: &'static str,
        command: String,
        reason: String,
    },
    /// The volume cannot be changed now.
    #[error("volume {name} is busy: {reason}")]
    VolumeIsBusy { name: String, reason: String },
    /// The snapshot cannot be changed now.
    #[error("snapshot {name} is busy: {reason}")]
    SnapshotIsBusy { name: String, reason: String },
    /// An object does not exist.
    #[error("{what} {name} not found")]
    NotFound { what: &'static str, name: String },
    /// An object already exists.
    #[error("{what} {name} already exists")]
    AlreadyExists { what: &'static str, name: String },
    /// Bad input (name, size, reference), refused before any change.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    InvalidConfiguration(String),
    /// `manage_existing` got a reference it cannot use.
    #[error("invalid manage reference: {reason}")]
    ManageExistingInvalidReference { reason: String },
    /// `manage_existing` got an object that is already managed.
    #[error("{name} is already managed as volume {id}")]
    ManageExistingAlreadyManaged { name: String, id: String },
    /// An image cannot be used.
    #[error("image {path} is unacceptable: {reason}")]
    ImageUnacceptable { path: PathBuf, reason: String },
    /// The backend cannot do this here.
    #[error("{op} is not supported: {reason}")]
    NotSupported { op: &'static str, reason: String },
    /// A filesystem operation on the backend's own files failed.
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Metadata of the backend does not parse.
    #[error("metadata {path} is corrupt")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The engine failed to move data.
    #[error("data path")]
    Engine(#[from] ember_engine::Error),
    /// The iSCSI target helper failed.
    #[error("iSCSI target")]
    Target(#[from] ember_target::TargetError),
}

impl DriverError {
    /// Cinder's category of this error.
    pub fn category(&self) -> Category {
        match self {
            DriverError::BackendApi { .. }
            | DriverError::Command { .. }
            | DriverError::Spawn { .. }
            | DriverError::BadOutput { .. }
            | DriverError::Metadata { .. }
            | DriverError::Target(_) => Category::BackendApi,
            DriverError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => Category::NoSpace,
                Some(libc::ENOENT) => Category::NotFound,
                _ => Category::BackendApi,
            },
            DriverError::VolumeIsBusy { .. } => Category::VolumeIsBusy,
            DriverError::SnapshotIsBusy { .. } => Category::SnapshotIsBusy,
            DriverError::NotFound { .. } => Category::NotFound,
            DriverError::AlreadyExists { .. } => Category::AlreadyExists,
            DriverError::InvalidInput(_) => Category::InvalidInput,
            DriverError::InvalidConfiguration(_) => Category::InvalidConfiguration,
            DriverError::ManageExistingInvalidReference { .. } => {
                Category::ManageExistingInvalidReference
            }
            DriverError::ManageExistingAlreadyManaged { .. } => {
                Category::ManageExistingAlreadyManaged
            }
            DriverError::ImageUnacceptable { .. } => Category::ImageUnacceptable,
            DriverError::NotSupported { .. } => Category::NotSupported,
            DriverError::Engine(e) => category_of_engine(e.kind()),
        }
    }

    /// Shorthand for [`DriverError::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DriverError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`DriverError::InvalidInput`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        DriverError::InvalidInput(msg.into())
    }

    /// Shorthand for a volume [`DriverError::NotFound`].
    pub fn volume_not_found(name: impl Into<String>) -> Self {
        DriverError::NotFound {
            what: "volume",
            name: name.into(),
        }
    }

    /// Shorthand for a snapshot [`DriverError::NotFound`].
    pub fn snapshot_not_found(name: impl Into<String>) -> Self {
        DriverError::NotFound {
            what: "snapshot",
            name: name.into(),
        }
    }
}

/// Maps the engine's stable kinds onto Cinder's categories.
pub fn category_of_engine(kind: ErrorKind) -> Category {
    match kind {
        ErrorKind::NotFound => Category::NotFound,
        ErrorKind::InvalidInput => Category::InvalidInput,
        ErrorKind::NoSpace => Category::NoSpace,
        ErrorKind::Cancelled => Category::Cancelled,
        ErrorKind::BadImage => Category::ImageUnacceptable,
        ErrorKind::Unsupported => Category::NotSupported,
        _ => Category::BackendApi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_by_kind() {
        let e: DriverError = ember_engine::Error::invalid("bad size").into();
        assert_eq!(e.category(), Category::InvalidInput);
        let e: DriverError =
            ember_engine::Error::io("write", "/x", 0, io::Error::from_raw_os_error(libc::ENOSPC))
                .into();
        assert_eq!(e.category(), Category::NoSpace);
        let e: DriverError = ember_engine::Error::BadImage {
            path: "/i".into(),
            reason: "qed".into(),
        }
        .into();
        assert_eq!(e.category(), Category::ImageUnacceptable);
        assert_eq!(
            Category::BackendApi.cinder_name(),
            "VolumeBackendAPIException"
        );
    }
}
