//! End-to-end tests of the `ember` command against real files and loop devices.

mod copy;
mod image;
mod resume;
mod util;
mod volume;
mod wipe;
