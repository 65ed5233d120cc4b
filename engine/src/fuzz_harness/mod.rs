//! Fuzz harnesses: the logic of each `fuzz/fuzz_targets/*` target lives here, so that a normal
//! `cargo test` can replay the checked-in corpus through exactly the same code.
//!
//! Not a public API: hidden from the docs, used by the fuzz crate and the engine's tests.

pub mod extents;
pub mod images;
