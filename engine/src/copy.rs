//! The engine's one entry point for moving volume data: a [`Job`] reads a [`Source`] and
//! writes a [`Destination`] as its [`CopyOptions`] say.
//!
//! ```text
//! Job { source, destination, options }.run()
//!   source: Path(window) | Open(file)      -> allocation discovery -> Plan::from_data
//!           Image(file, plan)              -> the image's plan (validated)
//!   destination: Path(window) | Staged     -> dest::Opened (how holes read as zeros)
//!   options.checkpoint                     -> checkpoint::copy_resumable (path to path)
//!   then run::run_plan: the pipeline on the ring, flush, optional read-back (`verify`)
//! ```
//!
//! What a destination does with the bytes the job does not write is documented in
//! [`crate::dest`]. All-zero blocks read from the source become holes on destinations that
//! must read as zeros anyway, unless `preserve_allocation` asks for the source's allocation to
//! be kept exactly. [`copy`] is the path-to-path shorthand; [`crate::verify::compare`] and
//! [`crate::wipe::wipe`] run on the same ring and runner.

use crate::alloc;
use crate::endpoint::{Endpoint, Window};
use crate::error::{Error, Result};
use crate::options::{CopyOptions, Summary};
use crate::plan::{Op, Plan};
use crate::run::run_plan;
use std::borrow::Cow;
use std::fs::File;
use std::path::Path;
use std::time::Instant;

pub use crate::dest::Destination;

/// Where a job reads.
#[derive(Debug)]
pub enum Source<'a> {
    /// A file or device by path, whole or a byte window of it; its allocation is discovered
    /// (SEEK_DATA/SEEK_HOLE) and only data is read.
    Path(Window),
    /// The whole of a file already open for reading (one inspected through this descriptor:
    /// what is read is that file, whatever happens to its path); the path names it in
    /// messages.
    Open(File, &'a Path),
    /// An image: the plan made from the open file (its `Copy`/`Decode` source offsets index
    /// that file), written as the plan's `logical_size` bytes at the plan's `dst_base`.
    Image(File, &'a Path, &'a Plan),
}

impl Source<'_> {
    /// The whole file or device at `path`.
    pub fn path(path: impl Into<std::path::PathBuf>) -> Self {
        Source::Path(Window::whole(path))
    }
}

/// One copy: what to read, where to write, how.
#[derive(Debug)]
pub struct Job<'a> {
    /// Where the bytes come from.
    pub source: Source<'a>,
    /// Where they go.
    pub destination: Destination<'a>,
    /// How: block size, depth, O_DIRECT, zeroing, checkpoint, verification, limits.
    pub options: &'a CopyOptions,
}

impl<'a> Job<'a> {
    /// A job of `source` to `destination` with `options`.
    pub fn new(source: Source<'a>, destination: Destination<'a>, options: &'a CopyOptions) -> Self {
        Job {
            source,
            destination,
            options,
        }
    }

    /// Runs the job: validates the options and both ends, writes, flushes (and with
    /// `verify`, reads back). A destination file this job created is removed when it fails.
    pub fn run(self) -> Result<Summary> {
        let started = Instant::now();
        let opts = self.options;
        opts.validate()?;
        if let Some(cp) = &opts.checkpoint {
            return match (&self.source, &self.destination) {
                (Source::Path(s), Destination::Path(d)) => {
                    crate::checkpoint::copy_resumable(s, d, opts, cp, started)
                }
                _ => Err(Error::invalid(
                    "a resumable copy opens its source and destination by path; it cannot read an open file or an image, nor write a staged file",
                )),
            };
        }
        let (src, layout) = match self.source {
            Source::Path(w) => (
                Endpoint::open_source(&w.path, opts.direct)?,
                Layout::Allocation(w),
            ),
            Source::Open(file, path) => (
                Endpoint::from_open_file(file, path, opts.direct)?,
                Layout::Allocation(Window::whole(path)),
            ),
            Source::Image(file, path, plan) => {
                plan.validate().map_err(|reason| Error::BadImage {
                    path: path.to_path_buf(),
                    reason,
                })?;
                (
                    Endpoint::from_open_file(file, path, opts.direct)?,
                    Layout::Image(plan),
                )
            }
        };
        let len = match &layout {
            Layout::Allocation(w) => w.len_on(&src)?,
            Layout::Image(plan) => plan.logical_size,
        };
        let mut dest = crate::dest::Opened::open(&self.destination, len, opts)?;
        let res = (|| {
            let dst = dest.window.clone();
            if let Layout::Image(plan) = layout {
                if plan.dst_base != dst.offset {
                    return Err(Error::invalid(format!(
                        "an image plan for destination offset {} must start there, not at {}",
                        dst.offset, plan.dst_base
                    )));
                }
            }
            // An image's plan reads anywhere in the image: any sharing is refused. A window
            // only conflicts with an overlapping window of the same file.
            let same = src.identity == dest.ep.identity
                && match &layout {
                    Layout::Allocation(w) => {
                        w.offset < dst.offset + len && dst.offset < w.offset + len
                    }
                    Layout::Image(_) => true,
                };
            if same {
                return Err(Error::invalid(format!(
                    "{} {} and destination {} are the same file",
                    match layout {
                        Layout::Allocation(_) => "source",
                        Layout::Image(_) => "image",
                    },
                    src.path.display(),
                    dst.path.display()
                )));
            }
            dest.prepare(len)?;
            let (plan, extents) = match &layout {
                Layout::Allocation(w) => {
                    // Straight from discovery into the plan: no map of the extents beside it.
                    let mut plan = Plan::copying(dst.offset, len);
                    let window = w.offset..w.offset + len;
                    alloc::data_ranges_each(&src, window, |r| plan.push_data(r, w.offset))?;
                    let extents = plan.ops.len() as u64;
                    (Cow::Owned(plan), extents)
                }
                Layout::Image(plan) => {
                    let reads = plan
                        .ops
                        .iter()
                        .filter(|o| matches!(o, Op::Copy { .. } | Op::Decode { .. }))
                        .count();
                    (Cow::Borrowed(*plan), reads as u64)
                }
            };
            let mut summary = run_plan(Some(&src), &dest, &plan, opts, started)?;
            summary.extents = extents;
            Ok(summary)
        })();
        // Any failure after the destination was created (sizing, discovery, the copy itself)
        // removes it, so nothing half-done looks like a volume.
        dest.discard_if_failed(&res);
        res
    }
}

/// What the destination receives: the source window's own allocation (discovered), or an
/// image's plan.
enum Layout<'a> {
    Allocation(Window),
    Image(&'a Plan),
}

/// Copies `src` to `dst` (files or block devices, whole): the path-to-path [`Job`].
pub fn copy(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<Summary> {
    Job::new(Source::path(src), Destination::path(dst), opts).run()
}
