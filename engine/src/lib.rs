//! ember-engine: Ember's data path.
//!
//! ```text
//! source -> alloc (SEEK_DATA/SEEK_HOLE, zero detection) -> ExtentMap -> Plan -> io_uring -> dest
//! ```
//!
//! The engine knows files and block devices, nothing of LVM or iSCSI.

pub mod bitmap;
pub mod error;
pub mod extent;
pub mod zero;

pub use error::{Error, ErrorKind, Result};
#[doc(hidden)]
pub mod test_util;
pub mod sys;
pub mod uring;
