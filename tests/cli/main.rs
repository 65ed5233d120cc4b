//! End-to-end tests of the `ember` command against real files and loop devices.

mod contract;
mod copy;
mod image;
mod resume;
mod resume_driver;
mod stress;
mod util;
mod volume;
mod wipe;
