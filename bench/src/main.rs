//! Side-by-side harness: Ember against the tools operators use today.
fn main() {}
