//! How a run drives its storage: O_DIRECT or the page cache, and how many I/Os in flight,
//! chosen from what the source and destination are unless the caller pinned them.
//!
//! The rule, each part measured (1 GiB of random data by hand; the harness's fast family in
//! the README's benchmarks):
//! - **A file on memory** (tmpfs, ramfs) is read and written through the page cache, and a
//!   run writing one keeps at most 4 I/Os in flight. O_DIRECT on tmpfs only adds work, and a
//!   deep queue of buffered writes to one file only adds io-wq workers contending for its inode
//!   (tmpfs to tmpfs: O_DIRECT at depth 32 3.8 s; page cache at depth 32 0.77 s, at depth 4
//!   0.5 s, as fast as `cp`).
//! - **Only files on memory** (every end of the run a tmpfs/ramfs file through the page
//!   cache): the I/O runs on one worker thread per core (at most 4) instead of io_uring, which
//!   cannot complete a buffered tmpfs request inline and hands each to its own workers (2 GiB
//!   tmpfs to tmpfs, medians of 7: ring at depth 4 0.98 s, two threads 0.70 s, `dd` 1.1 s).
//! - **A block device on memory** (a loop device over a tmpfs file, a RAM disk: `ram*`,
//!   `zram*`, `pmem*`) keeps O_DIRECT: through its own page cache every byte is cached twice
//!   and written back by the loop worker (tmpfs file to a loop device over tmpfs: page cache
//!   3.0-3.7 s, O_DIRECT 0.38 s at depth 4 or 32).
//! - **Anything else** (disks, virtual disks, loop devices over disk files): O_DIRECT where the
//!   file or device allows it, at the caller's depth (32 by default), so the device sees a deep
//!   queue and the page cache is neither polluted nor flooded. The kernel's `rotational` flag
//!   is not used: virtual disks report 1 whatever is behind them (this machine's virtio disk
//!   does).
//!
//! - **Small pieces of data** (a fragmented source: buffers sized to pieces smaller than the
//!   block size): a deeper queue, up to 128, keeping about as many bytes in flight as asked
//!   ([`deepen_for_small_buffers`]).
//!
//! [`Tune`] (a copy's `tune` option) says which of the two the rule may change; the CLI pins a value the
//! user gave (`--queue-depth`, `--direct`, `--no-direct`). The choice and its reason are in the
//! run's [`crate::options::Summary`].

use crate::endpoint::{Endpoint, Kind};
use crate::sys;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Queue depth on memory-backed storage.
pub const MEMORY_QUEUE_DEPTH: u32 = 4;

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// What an endpoint's bytes live on, as far as the I/O shape is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Medium {
    /// RAM: tmpfs/ramfs files, loop devices over them, RAM disks.
    Memory,
    /// A disk of some kind (or nothing better known).
    Device,
}

/// The I/O shape a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    /// O_DIRECT on the (source, destination), where the file or device allows it.
    pub direct: (bool, bool),
    /// I/Os in flight at most.
    pub queue_depth: u32,
    /// Worker threads running the I/O instead of io_uring (0: io_uring).
    pub threads: u32,
    /// The media found: (source, destination); the source is `None` for wipes.
    pub media: (Option<Medium>, Medium),
    /// Why this shape.
    pub rule: &'static str,
}

/// Which I/O settings the engine may choose from the storage (see [`crate::tuning`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tune {
    /// May use the page cache instead of O_DIRECT where the rule says (never the reverse).
    pub direct: bool,
    /// May lower the queue depth where the rule says.
    pub queue_depth: bool,
    /// May run the I/O on worker threads instead of io_uring where every file is in memory.
    pub threads: bool,
}

impl Default for Tune {
    fn default() -> Self {
        Tune {
            direct: true,
            queue_depth: true,
            threads: true,
        }
    }
}

impl Tune {
    /// Everything as given.
    pub const PINNED: Tune = Tune {
        direct: false,
        queue_depth: false,
        threads: false,
    };
}

/// What the caller asked for: O_DIRECT, the queue depth, and which of them may be tuned.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub direct: bool,
    pub queue_depth: u32,
    /// Bytes per I/O.
    pub block_size: usize,
    pub tune: Tune,
}

/// The shape for a run from `src` (none for wipes) to `dst`, given what was asked.
pub fn choose(src: Option<&Endpoint>, dst: &Endpoint, opts: Asked) -> Shape {
    let media = (src.map(medium), medium(dst));
    let memory_file = |ep: Option<&Endpoint>, m: Option<Medium>| {
        ep.is_some_and(|e| e.kind == Kind::File) && m == Some(Medium::Memory)
    };
    let files = (
        memory_file(src, media.0),
        memory_file(Some(dst), Some(media.1)),
    );
    let direct = |memory_file: bool| opts.direct && !(opts.tune.direct && memory_file);
    let shallow = files.1 && opts.tune.queue_depth && opts.queue_depth > MEMORY_QUEUE_DEPTH;
    let tuned = (opts.direct && opts.tune.direct && (files.0 || files.1)) || shallow;
    let direct = (direct(files.0), direct(files.1));
    // Every file in memory and buffered: io_uring would hand each request to a worker.
    let in_memory =
        opts.tune.threads && (src.is_none() || (files.0 && !direct.0)) && files.1 && !direct.1;
    Shape {
        direct,
        threads: if in_memory { memory_threads() } else { 0 },
        queue_depth: if shallow {
            MEMORY_QUEUE_DEPTH
        } else {
            opts.queue_depth
        },
        media,
        rule: if in_memory {
            "files on memory through the page cache, on worker threads"
        } else if tuned {
            "files on memory through the page cache; a shallow queue writing one"
        } else {
            "as asked"
        },
    }
}

/// The deepest queue of small requests (see [`deepen_for_small_buffers`]).
pub const SMALL_IO_QUEUE_DEPTH: u32 = 128;

/// A run whose pieces of data are small gets buffers sized to them (`buffer` bytes, less than
/// the block size asked): its queue deepens so about as many bytes stay in flight as asked
/// (depth times block size), up to [`SMALL_IO_QUEUE_DEPTH`], unless the depth was pinned or
/// the rule already changed it (memory). Each small I/O is a round trip to the device, and more of them in flight
/// hide it: a 4 GiB file with 4 KiB of data every 64 KiB copied to a new file on this
/// machine's disk took 1.9 s at depth 32, 1.6 s at 64, 1.4 s at 128, 1.4-1.5 s at 256 and 512.
pub fn deepen_for_small_buffers(shape: &mut Shape, asked: &Asked, buffer: usize) {
    let as_asked = shape.queue_depth == asked.queue_depth && shape.threads == 0;
    if !asked.tune.queue_depth || !as_asked || buffer == 0 || buffer >= asked.block_size {
        return;
    }
    let bytes = u64::from(asked.queue_depth) * asked.block_size as u64;
    let depth = (bytes / buffer as u64).min(u64::from(SMALL_IO_QUEUE_DEPTH)) as u32;
    if depth > shape.queue_depth {
        shape.queue_depth = depth;
        shape.rule = "small pieces of data: a deeper queue of small I/Os";
    }
}

/// Worker threads for a run whose files are all in memory: one per core, at most
/// [`MEMORY_QUEUE_DEPTH`].
fn memory_threads() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores as u32).clamp(1, MEMORY_QUEUE_DEPTH)
}

/// What `ep` lives on.
pub fn medium(ep: &Endpoint) -> Medium {
    match ep.kind {
        Kind::File => fs_medium(&ep.file),
        Kind::Block => device_medium(ep.identity.1, 0),
    }
}

/// A regular file's medium, from its file system type.
fn fs_medium(file: &std::fs::File) -> Medium {
    match sys::filesystem_type(file.as_fd()) {
        Ok(TMPFS_MAGIC | RAMFS_MAGIC) => Medium::Memory,
        _ => Medium::Device,
    }
}

/// A block device by its `st_rdev`: a RAM disk, or a loop device over a file on memory.
fn device_medium(rdev: u64, depth: u32) -> Medium {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let sys_dir = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let name = std::fs::read_link(&sys_dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if ["ram", "zram", "pmem"].iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    }) {
        return Medium::Memory;
    }
    let backing = std::fs::read_to_string(sys_dir.join("loop/backing_file")).ok();
    match backing {
        Some(b) if depth < 4 => backing_medium(Path::new(b.trim_end()), depth),
        _ => Medium::Device,
    }
}

/// A loop device's backing file: its file system, or the device it is itself.
fn backing_medium(path: &Path, depth: u32) -> Medium {
    let Ok(file) = std::fs::File::open(path) else {
        return Medium::Device;
    };
    match file.metadata() {
        Ok(m) if m.file_type().is_file() => fs_medium(&file),
        Ok(m) => {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            if m.file_type().is_block_device() {
                device_medium(m.rdev(), depth + 1)
            } else {
                Medium::Device
            }
        }
        Err(_) => Medium::Device,
    }
}
