//! Image <-> volume: the engine entry points behind `ember image to-volume|from-volume`.
//!
//! to-volume: open image -> [`analyze`] (detection, declared format, every safety rule, the
//! whole table walk) -> for compressed images, either decode every compressed unit once
//! without writing (bombs and corrupt streams are found before the first write: block devices
//! and existing files), or, for a new file, write it under a temporary name that is linked
//! into place only once every unit decoded within its cluster -> write:
//! raw-like images as a [`Job`] from [`Source::Open`], qcow2/vmdk plans as a [`Job`] from
//! [`Source::Image`], vhd/vhdx/vdi through `qemu-img convert -f <inspected format>`.
//! Every one of them reads the image through the descriptor it was inspected by (qemu-img
//! through `/proc/self/fd/N` of an inherited duplicate), never by its path again.
//!
//! from-volume: the volume is raw and never probed; raw output is a sparse copy, qcow2 output
//! the [`super::qcow2::writer`]; both written to a temporary name and renamed into place.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::qcow2::writer::{write_qcow2, WriteOptions, WriteSummary};
use super::{analyze, verify_compressed, Analysis, FileSource, Format, InspectOptions, Reader};
use crate::copy::{Destination, Job, Source};
use crate::endpoint::Window;
use crate::options::{CopyOptions, Summary, MAX_BLOCK_SIZE};
use crate::plan::Op;
use crate::staged::{check_output, exists, Staged};
use crate::{Error, Result};

/// Options of [`image_to_volume`].
#[derive(Debug, Clone, Default)]
pub struct ToVolumeOptions {
    pub inspect: InspectOptions,
    pub copy: CopyOptions,
    /// Threads for the compressed-data precheck (0 = available parallelism).
    pub threads: usize,
}

/// What [`image_to_volume`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ToVolumeSummary {
    pub format: Format,
    pub virtual_size: u64,
    /// "ember" (native reader / raw copy) or "qemu-img".
    pub via: &'static str,
    /// The engine's summary when Ember wrote the data.
    pub copy: Option<Summary>,
    /// Seconds spent on inspection and the compressed-data precheck.
    pub inspect_seconds: f64,
    pub seconds: f64,
}

fn bad(path: &Path, e: super::ImageError) -> Error {
    e.into_engine(path)
}

/// Inspects `image` and writes its disk contents to `dest` (file or block device).
/// Nothing is written to `dest` unless inspection passes and every compressed unit decodes
/// within its cluster: checked before the first write (the precheck), or, for a new file,
/// while writing a temporary file that only then becomes `dest`.
pub fn image_to_volume(
    image: &Path,
    dest: &Path,
    opts: &ToVolumeOptions,
) -> Result<ToVolumeSummary> {
    image_to_window(image, &Window::whole(dest), opts)
}

/// [`image_to_volume`] into a window of an existing file or device (a volume larger than the
/// image, or one that is a byte range of a PV): the image's holes read as zeros there, the
/// bytes around the image stay as they are. vhd, vhdx and vdi (written by qemu-img) are
/// refused here: qemu-img writes whole files.
pub fn image_to_window(
    image: &Path,
    dest: &Window,
    opts: &ToVolumeOptions,
) -> Result<ToVolumeSummary> {
    let windowed = dest.offset != 0 || dest.len.is_some();
    let offset = dest.offset;
    let window = dest;
    let dest = dest.path.as_path();
    let started = Instant::now();
    opts.copy.validate()?;
    let src = FileSource::open(image).map_err(|e| Error::open("open", image, e))?;
    let a: Analysis = analyze(&src, &opts.inspect).map_err(|e| bad(image, e))?;
    let decodes = matches!(&a.reader, Reader::Native(plan)
        if plan.ops.iter().any(|o| matches!(o, Op::Decode { .. })));
    // A new file is written unnamed and linked into place only when complete: a failed or
    // killed run leaves nothing at `dest`, and a refused compressed unit never reaches it, so
    // each unit is decoded once. Anything else (a block device, an existing file, a resumable
    // job) is written in place, so every unit is decoded first, without writing. qemu-img
    // (vhd, vhdx, vdi) writes a staged file through an inherited descriptor the same way.
    let staged = opts.copy.checkpoint.is_none() && !windowed && !exists(dest);
    if windowed && matches!(a.reader, Reader::Qemu(_)) {
        return Err(Error::invalid(format!(
            "{} is {}: qemu-img writes it into whole files or devices, not into the first bytes of {}",
            image.display(),
            a.format,
            dest.display()
        )));
    }
    if decodes && !staged {
        if let Reader::Native(plan) = &a.reader {
            let threads = if opts.threads == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                opts.threads
            };
            verify_compressed(&src, plan, a.cluster_size.unwrap_or(0), threads)
                .map_err(|e| bad(image, e))?;
        }
    }
    // From here on the image is read through the descriptor it was inspected by: replacing
    // the file at its path after inspection changes nothing.
    let file = src.into_file();
    let inspect_seconds = started.elapsed().as_secs_f64();
    let mut summary = ToVolumeSummary {
        format: a.format,
        virtual_size: a.virtual_size,
        via: "ember",
        copy: None,
        inspect_seconds,
        seconds: 0.0,
    };
    // A new file: written unnamed (or hidden) and put in place only when whole and flushed; a
    // file that appeared at `dest` meanwhile is someone else's and is kept.
    let write = |source: Source<'_>, c: &CopyOptions| -> Result<Summary> {
        if staged {
            let out = Staged::create(dest)?;
            let s = Job::new(source, Destination::Staged(&out), c).run()?;
            out.publish(false)?;
            Ok(s)
        } else {
            Job::new(source, Destination::Path(window.clone()), c).run()
        }
    };
    match &a.reader {
        Reader::Raw => summary.copy = Some(write(Source::Open(file, image), &opts.copy)?),
        Reader::Native(plan) => {
            let mut c = opts.copy.clone();
            if opts.threads != 0 {
                c.decode_threads = opts.threads;
            }
            // Each Decode op must fit one pipeline block.
            let biggest = plan
                .ops
                .iter()
                .map(|o| match *o {
                    Op::Decode { src_len, len, .. } => src_len.max(len),
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            while (c.block_size as u64) < biggest && c.block_size < MAX_BLOCK_SIZE {
                c.block_size *= 2;
            }
            // Larger blocks, fewer of them (at least two): the bytes in flight, and so the
            // memory, stay as asked (2 MiB clusters at the default depth would pin 64 MiB),
            // unless the depth was given.
            if c.tune.queue_depth && c.block_size > opts.copy.block_size {
                let asked = u64::from(opts.copy.queue_depth) * opts.copy.block_size as u64;
                c.queue_depth = (asked / c.block_size as u64).max(2) as u32;
            }
            let shifted;
            let plan = if offset == 0 {
                plan
            } else {
                shifted = plan.shifted(offset).map_err(Error::invalid)?;
                &shifted
            };
            summary.copy = Some(write(Source::Image(file, image, plan), &c)?);
        }
        Reader::Qemu(fmt) => {
            if let Some(dev_size) = block_device_size(dest)? {
                if dev_size < a.virtual_size {
                    return Err(Error::invalid(format!(
                        "destination {} ({dev_size} bytes) is smaller than the image ({} bytes)",
                        dest.display(),
                        a.virtual_size
                    )));
                }
            }
            if staged {
                let out = Staged::create(dest)?;
                out.file()
                    .set_len(a.virtual_size)
                    .map_err(|e| Error::io("set the size of", dest, a.virtual_size, e))?;
                qemu_convert(&file, image, *fmt, QemuTarget::Staged(&out), &opts.copy)?;
                out.publish(false)?;
            } else {
                qemu_convert(&file, image, *fmt, QemuTarget::Path(dest), &opts.copy)?;
            }
            summary.via = "qemu-img";
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The size of `path` when it is a block device.
fn block_device_size(path: &Path) -> Result<Option<u64>> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => {
            let mut f = std::fs::File::open(path).map_err(|e| Error::open("open", path, e))?;
            let n = f
                .seek(SeekFrom::End(0))
                .map_err(|e| Error::io("seek", path, 0, e))?;
            Ok(Some(n))
        }
        _ => Ok(None),
    }
}

/// Where qemu-img writes: an existing path (file or block device), or a staged new file
/// (already sized), which it reaches through an inherited descriptor.
enum QemuTarget<'a> {
    Path(&'a Path),
    Staged(&'a Staged),
}

/// A duplicate of `file` without close-on-exec, so a child inherits it.
fn inheritable(file: &File, path: &Path) -> Result<File> {
    file.try_clone()
        .and_then(|f| {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            fcntl(f.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
            Ok(f)
        })
        .map_err(|e| Error::open("duplicate the descriptor of", path, e))
}

/// `qemu-img convert -f <fmt> -O raw`, the format pinned to what inspection found, reading
/// the inspected file itself: qemu-img gets a duplicate of its descriptor and opens
/// `/proc/self/fd/N`, never the path.
fn qemu_convert(
    file: &File,
    image: &Path,
    fmt: Format,
    target: QemuTarget<'_>,
    opts: &CopyOptions,
) -> Result<()> {
    let (dest, meta) = match target {
        QemuTarget::Path(p) => (p, std::fs::metadata(p).ok()),
        QemuTarget::Staged(st) => (st.out(), None),
    };
    let is_block = meta.as_ref().is_some_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device()
    });
    if let Some(m) = &meta {
        if m.is_file() && m.len() > 0 && !opts.force {
            return Err(Error::invalid(format!(
                "{} exists and is not empty (use --force to overwrite it)",
                dest.display()
            )));
        }
    }
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-q", "-f", fmt.qemu_name(), "-O", "raw"]);
    if is_block {
        cmd.args(["-n", "-t", "none"]);
    }
    if opts.sync && !is_block {
        cmd.args(["-t", "writeback"]);
    }
    let inherited = inheritable(file, image)?;
    cmd.arg(format!("/proc/self/fd/{}", inherited.as_raw_fd()));
    // A staged file is new, sized and sparse: qemu-img writes into it (-n) and need not zero
    // what is already zero.
    let staged_fd = match target {
        QemuTarget::Path(p) => {
            cmd.arg(p);
            None
        }
        QemuTarget::Staged(st) => {
            cmd.args(["-n", "--target-is-zero"]);
            let fd = inheritable(st.file(), dest)?;
            cmd.arg(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            Some(fd)
        }
    };
    let out = cmd.output();
    drop(inherited);
    drop(staged_fd);
    let out = out.map_err(|e| Error::open("run qemu-img for", image, e))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(Error::BadImage {
            path: image.to_path_buf(),
            reason: format!(
                "qemu-img convert -f {} failed: {}",
                fmt.qemu_name(),
                msg.lines().next().unwrap_or("").trim()
            ),
        });
    }
    // (A staged file is flushed when it is published.)
    if let (true, QemuTarget::Path(dest)) = (opts.sync, target) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dest)
            .map_err(|e| Error::open("open", dest, e))?;
        f.sync_all().map_err(|e| Error::Flush {
            path: dest.to_path_buf(),
            source: e,
        })?;
    }
    Ok(())
}

/// Options of [`volume_to_image`].
#[derive(Debug, Clone, Default)]
pub struct FromVolumeOptions {
    pub format: Option<Format>,
    pub compress: bool,
    pub threads: usize,
    pub copy: CopyOptions,
}

/// What [`volume_to_image`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FromVolumeSummary {
    pub format: Format,
    pub virtual_size: u64,
    pub file_size: u64,
    pub qcow2: Option<WriteSummary>,
    pub copy: Option<Summary>,
    pub seconds: f64,
}

/// Writes the volume `src` (read as raw, never probed) as an image `out` (raw or qcow2).
pub fn volume_to_image(
    src: &Path,
    out: &Path,
    opts: &FromVolumeOptions,
) -> Result<FromVolumeSummary> {
    let started = Instant::now();
    let format = opts.format.unwrap_or(Format::Raw);
    if opts.compress && format != Format::Qcow2 {
        return Err(Error::invalid("--compress needs --format qcow2"));
    }
    if same_file(src, out) {
        return Err(Error::invalid(format!(
            "{} and {} are the same file",
            src.display(),
            out.display()
        )));
    }
    match format {
        Format::Qcow2 => {
            let w = write_qcow2(
                src,
                out,
                &WriteOptions {
                    compress: opts.compress,
                    threads: opts.threads,
                    force: opts.copy.force,
                    cancel: opts.copy.cancel.clone(),
                    progress: opts.copy.progress.clone(),
                },
            )?;
            Ok(FromVolumeSummary {
                format,
                virtual_size: w.virtual_size,
                file_size: w.file_size,
                qcow2: Some(w),
                copy: None,
                seconds: started.elapsed().as_secs_f64(),
            })
        }
        Format::Raw => {
            check_output(out, opts.copy.force)?;
            let volume = File::open(src).map_err(|e| Error::open("open source", src, e))?;
            let staged = Staged::create(out)?;
            let mut c = opts.copy.clone();
            c.sync = true;
            let s = Job::new(Source::Open(volume, src), Destination::Staged(&staged), &c).run()?;
            staged.publish(opts.copy.force)?;
            let file_size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
            Ok(FromVolumeSummary {
                format,
                virtual_size: s.logical_size,
                file_size,
                qcow2: None,
                copy: Some(s),
                seconds: started.elapsed().as_secs_f64(),
            })
        }
        f => Err(Error::invalid(format!(
            "cannot write {f} images: use raw or qcow2"
        ))),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
