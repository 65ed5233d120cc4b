//! ember-target: iSCSI target management (tgt first, LIO second) for Ember volumes.
//!
//! The drivers' export methods call a [`TargetHelper`]:
//!
//! ```text
//! driver.create_export  -> TargetHelper::create_export  -> ExportModel (provider_location / provider_auth,
//!                                                          stored by the caller, Cinder's formats)
//! driver.ensure_export  -> TargetHelper::ensure_export   (re-creates the target from the stored model,
//!                                                          e.g. after a tgtd restart)
//! driver.initialize_connection -> ConnectionInfo         (Cinder's connection_info dict, exact keys)
//! driver.terminate_connection / remove_export / extend_volume -> the matching target calls
//! ```
//!
//! Layout (Cinder's `volume/targets/{driver,iscsi,tgt,lio}.py`: a base contract, shared iSCSI
//! logic, one module per implementation):
//!
//! ```text
//! lib.rs       the TargetHelper contract (below)
//! types.rs     the data passed across it: ExportVolume, ExportModel, ConnectionInfo, TargetConfig,
//!              provider_location / provider_auth formats
//! iscsi.rs     iSCSI logic every implementation shares: path and volume id checks, the 0700
//!              state folder, a volume's IQN and byte window, the model built and checked,
//!              "in use", Cinder's connection_info
//! iqn.rs       IQN building and validation       chap.rs   CHAP credentials, Secret, 0600 files
//! runner.rs    the one command wrapper (argv only, time limits, redacted errors)
//! window.rs    loop devices showing a byte window of a backing device
//! tgt/         the tgt implementation (TgtAdm), tested end to end against a real tgtd:
//!   mod.rs       TgtAdm, its construction and lock     helper.rs  the TargetHelper impl
//!   conf.rs      per-volume config file                ledger.rs  target id ledger
//!   adm.rs       tgtadm calls + reconciliation         show.rs    `tgtadm --op show` parser
//! tgtd_ipc.rs  tgtd's management socket (CHAP accounts without a command line)
//! lio.rs       the LIO implementation (LioAdm) through configfs; configfs is absent on the
//!              development machine, so its kernel path is untested
//! ```
//!
//! A new target implementation is a new module with a type implementing [`TargetHelper`] over
//! [`iscsi`]; only how it drives its daemon or kernel and its LUN numbering should be its own.

pub mod chap;
pub mod error;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fuzz_harness;
pub mod iqn;
pub mod iscsi;
pub mod lio;
pub mod runner;
pub mod tgt;
pub mod tgtd_ipc;
pub mod types;
pub mod window;

pub use chap::{Chap, Secret};
pub use error::{Result, TargetError};
pub use lio::LioAdm;
pub use tgt::TgtAdm;
pub use types::{
    parse_provider_auth, parse_provider_location, ConnectionInfo, Connector, ExportModel,
    ExportVolume, IscsiData, ProviderLocation, TargetConfig,
};

/// The export contract between a volume driver and an iSCSI target implementation.
///
/// Every method validates its inputs (IQN, names, paths, connector strings) before touching the
/// target, never passes user strings through a shell, and never puts CHAP secrets into logs or
/// error messages.
pub trait TargetHelper: Send + Sync {
    /// Exports `vol` as a new iSCSI target (LUN 1 on tgt, LUN 0 on LIO) with fresh CHAP
    /// credentials and returns the model the caller must persist.
    fn create_export(&self, vol: &ExportVolume) -> Result<ExportModel>;

    /// Makes sure the export described by `model` exists (idempotent); re-creates it, with the
    /// same IQN and CHAP credentials, when the target daemon lost it (e.g. after a restart).
    fn ensure_export(&self, vol: &ExportVolume, model: &ExportModel) -> Result<()>;

    /// Removes the export of `vol`. Fails with [`TargetError::TargetInUse`] while initiators are
    /// logged in, unless `force` (which closes their sessions). A missing export is success.
    fn remove_export(&self, vol: &ExportVolume, force: bool) -> Result<()>;

    /// Grants `connector` access and returns Cinder's connection_info.
    fn initialize_connection(
        &self,
        vol: &ExportVolume,
        model: &ExportModel,
        connector: &Connector,
    ) -> Result<ConnectionInfo>;

    /// Removes the access `initialize_connection` granted to `connector`.
    fn terminate_connection(
        &self,
        vol: &ExportVolume,
        model: &ExportModel,
        connector: &Connector,
    ) -> Result<()>;

    /// Makes the target report the new size of `vol` after the volume was extended.
    fn extend_target(&self, vol: &ExportVolume, model: &ExportModel) -> Result<()>;
}
