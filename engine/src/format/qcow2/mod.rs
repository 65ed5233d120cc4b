//! qcow2 (versions 2 and 3): header validation, reader (image -> plan) and writer
//! (volume -> image).

pub mod header;
mod placement;
pub mod reader;
mod ring_body;
pub mod writer;

pub use header::{parse as parse_header, CompressionType, Header};
pub use reader::{build_plan, WalkStats};
