//! ember-engine: Ember's data path.
//!
//! ```text
//! source -> alloc (SEEK_DATA/SEEK_HOLE, zero detection) -> ExtentMap -> Plan -> io_uring -> dest
//! ```
//!
//! One entry point moves data: [`copy::Job`] (`Job { source, destination, options }.run()`),
//! with [`copy::copy`] as the path-to-path shorthand; [`verify::compare`] and [`wipe::wipe`]
//! run on the same runner. See ARCHITECTURE.md for the layers.
//!
//! The engine knows files and block devices, nothing of LVM or iSCSI.

pub mod bitmap;
pub mod error;
pub mod extent;
pub mod format;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fuzz_harness;
pub mod zero;
pub mod zeroing;

pub use error::{Error, ErrorKind, Result};
pub mod alloc;
pub mod checkpoint;
pub mod codec;
pub mod copy;
pub mod dest;
pub mod endpoint;
pub mod options;
pub mod pagecache;
pub mod pipeline;
pub mod plan;
mod run;
pub mod staged;
pub mod sys;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod test_util;
pub mod tuning;
pub mod uring;
pub mod verify;
pub mod wipe;
