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
//!   A buffer's read and write run on one worker ([`crate::uring::ThreadBackend`]: 0.82 s
//!   against 1.38 s with reads and writes on separate threads, `cp` 1.18 s, in a later set).
//! - **A block device on memory** (a loop device over a tmpfs file, a RAM disk: `ram*`,
//!   `zram*`, `pmem*`) keeps O_DIRECT: through its own page cache every byte is cached twice
//!   and written back by the loop worker (tmpfs file to a loop device over tmpfs: page cache
//!   3.0-3.7 s, O_DIRECT 0.38 s at depth 4 or 32).
//! - **Anything else** (disks, virtual disks, loop devices over disk files): O_DIRECT where the
//!   file or device allows it, so the device sees a deep queue and the page cache is neither
//!   polluted nor flooded. The kernel's `rotational` flag is not used: virtual disks report 1
//!   whatever is behind them (this machine's virtio disk does).
//! - **Between devices through O_DIRECT** (block size and depth both left to the engine):
//!   [`DEVICE_IN_FLIGHT`] bytes in flight (52 MiB) in requests as large as every device under
//!   the run accepts whole (its `max_sectors_kb`, a power of two between the asked block size
//!   and [`DEVICE_MAX_REQUEST`]). On this machine's virtio disk (4 MiB requests) a 4 GiB copy,
//!   caches dropped, five interleaved rounds, medians: 1 MiB x 32 (32 MiB in flight) 4.0 s and
//!   5.3 s in two sets; 64 MiB in flight 3.5-3.6 s as 1 MiB x 64, 2 MiB x 32 or 4 MiB x 16 in
//!   the first set, 4.4-4.5 s in the second; 4 MiB x 8 (32 MiB) 5.2 s. What counts is the bytes
//!   in flight; larger requests keep the request count (and CPU) down. Past about 48 MiB the
//!   gain stops: six rounds with the order turned each round, medians, 4 GiB disk to disk
//!   4 MiB x 13 (52 MiB) 3.78 s, x 14 3.92 s, x 16 4.16 s; sparse8g onto a loop device 1 MiB x
//!   52 0.905 s, x 64 0.905 s, x 48 0.95 s. 52 MiB keeps a whole run's peak RSS (binary, rings,
//!   decoders, the pool) under 64 MiB, the bound the engine was built to. A run with a throughput
//!   limit (`--bps-limit`) keeps what was asked. Whatever the rule, a run whose depth was not
//!   given keeps at most a quarter of the bytes it moves in flight (at least 8 MiB): its pool
//!   costs CPU to touch and pin, which a short run does not win back. Copies to a new file on
//!   this disk, seven rounds with the order turned, medians of wall and CPU time: 64 MiB of
//!   data 4 MiB x 13 0.084 s, 0.028 s; x 4 0.073 s, 0.018 s; 128 MiB x 13 0.145 s, 0.039 s;
//!   x 8 0.148 s, 0.033 s; 32 MiB x 8 0.046 s, 0.020 s; x 2 0.046 s, 0.011 s.
//!
//! - **Small pieces of data** (a fragmented source: buffers sized to pieces smaller than the
//!   block size): a deeper queue, up to 128, keeping about as many bytes in flight as asked
//!   ([`deepen_for_small_buffers`]).
//!
//! - **Pieces of data spread across a new ext4 file, far apart** (a copy's destination file on
//!   ext4 that reads zeros wherever nothing is written): the data ranges are allocated first,
//!   each exactly, in one pass before the first write ([`allocate_first_pays`]; the pipeline's
//!   `prealloc` part). A write into a hole far into a large ext4 file makes its allocator
//!   reserve the whole 8 MiB window around it ([`ALLOCATION_WINDOW`]); once those reservations
//!   add up to more than the file system's free space, every allocation searches and discards
//!   them. 4 KiB written every 1 MiB of a new file on this machine's disk (236 GB free), one
//!   write at a time, writes into holes against all allocated first: 128 GiB apart (131,072
//!   pieces) 6.8 s and 6.8 s; 192 GiB 9.8 s and 9.6 s; 256 GiB 28.7 s and 13.8 s (allocating
//!   each piece just before its write); 1 TiB 281 s and 58 s. Ember's own copy of the 1 TiB one
//!   (1,048,576 pieces): 231 s without, 19 s allocated first. Below the threshold the pass
//!   gains little and may cost: 65,536 pieces over 4 GiB 0.95 s without, 1.72 s with on one
//!   day; in one harness run on a later day (seven runs interleaved) 1.62 s and 1.48 s, on a
//!   fresh ext4 1.67-1.80 s and 1.63-1.71 s (the pass does allocate exactly the source's
//!   blocks, where writes completing out of order split extent-tree leaves). Only ext4: the same copy
//!   onto a 16 GiB XFS (a loop device over a preallocated file on the same disk) took 49.4 s
//!   into holes and 48.7 s allocated first, onto btrfs 89.5 s and 93.1 s; neither reserves
//!   around a write into a hole the way ext4 does.
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

/// Bytes in flight of a run between devices through O_DIRECT (see the module doc).
pub const DEVICE_IN_FLIGHT: u64 = 52 << 20;

/// The largest request the device rule makes.
pub const DEVICE_MAX_REQUEST: usize = 4 << 20;

/// The rules a [`Shape`] names.
pub const RULE_AS_ASKED: &str = "as asked";
pub const RULE_DEVICE: &str =
    "devices through O_DIRECT: 52 MiB in flight in requests the devices take whole";
pub const RULE_MEMORY: &str = "files on memory through the page cache; a shallow queue writing one";
pub const RULE_MEMORY_THREADS: &str = "files on memory through the page cache, on worker threads";
pub const RULE_SMALL_PIECES: &str = "small pieces of data: a deeper queue of small I/Os";

const TMPFS_MAGIC: i64 = 0x0102_1994;
const EXT4_MAGIC: i64 = 0xEF53;
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
    /// Bytes per I/O (buffers are smaller when every piece of data is).
    pub block_size: usize,
    /// Worker threads running the I/O instead of io_uring (0: io_uring).
    pub threads: u32,
    /// The media found: (source, destination); the source is `None` for wipes.
    pub media: (Option<Medium>, Medium),
    /// Why this shape.
    pub rule: &'static str,
    /// The kernel took the advice to back the buffers with transparent huge pages, so each
    /// request is a few physically contiguous segments (see [`crate::uring::BufferPool`]).
    pub huge_pages: bool,
    /// The destination's data ranges were allocated before the first write (an ext4 file
    /// that reads zeros wherever nothing is written; see the module doc).
    pub allocate_first: bool,
}

/// Which I/O settings the engine may choose from the storage (see [`crate::tuning`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tune {
    /// May use the page cache instead of O_DIRECT where the rule says (never the reverse).
    pub direct: bool,
    /// May change the queue depth where the rule says.
    pub queue_depth: bool,
    /// May use larger I/Os than asked where the rule says.
    pub block_size: bool,
    /// May run the I/O on worker threads instead of io_uring where every file is in memory.
    pub threads: bool,
    /// May allocate the destination's data ranges before writing them where the rule says.
    pub allocate: bool,
}

impl Default for Tune {
    fn default() -> Self {
        Tune {
            direct: true,
            queue_depth: true,
            block_size: true,
            threads: true,
            allocate: true,
        }
    }
}

impl Tune {
    /// Everything as given.
    pub const PINNED: Tune = Tune {
        direct: false,
        queue_depth: false,
        block_size: false,
        threads: false,
        allocate: false,
    };
}

/// What the caller asked for: O_DIRECT, the queue depth, and which of them may be tuned.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub direct: bool,
    pub queue_depth: u32,
    /// Bytes per I/O.
    pub block_size: usize,
    /// A throughput limit: the run is not after the device's pace (the device rule stays out
    /// of it, and the limit keeps its fine steps).
    pub limited: bool,
    /// Allocate a destination file's data ranges before writing them.
    pub allocate_first: bool,
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
    let mut shape = Shape {
        direct,
        threads: if in_memory { memory_threads() } else { 0 },
        queue_depth: if shallow {
            MEMORY_QUEUE_DEPTH
        } else {
            opts.queue_depth
        },
        block_size: opts.block_size,
        media,
        rule: if in_memory {
            RULE_MEMORY_THREADS
        } else if tuned {
            RULE_MEMORY
        } else {
            RULE_AS_ASKED
        },
        huge_pages: false,
        // The run decides once it knows the data ranges ([`allocate_first_pays`]).
        allocate_first: dst.kind == Kind::File
            && (opts.allocate_first
                || opts.tune.allocate
                    && sys::filesystem_type(dst.file.as_fd()).is_ok_and(|t| t == EXT4_MAGIC)),
    };
    let devices = media.1 == Medium::Device && media.0 != Some(Medium::Memory);
    let through_direct = direct.1 && src.is_none_or(|_| direct.0);
    if shape.rule == RULE_AS_ASKED
        && !opts.limited
        && opts.tune.queue_depth
        && opts.tune.block_size
        && devices
        && through_direct
    {
        let request = src
            .into_iter()
            .chain([dst])
            .map(max_request)
            .min()
            .flatten();
        for_devices(&mut shape, &opts, request);
    }
    shape
}

/// The device rule: [`DEVICE_IN_FLIGHT`] bytes in flight (or what was asked, if more) in
/// requests of `request` bytes (the largest every device takes whole, when known) within the
/// asked block size and [`DEVICE_MAX_REQUEST`].
fn for_devices(shape: &mut Shape, asked: &Asked, request: Option<u64>) {
    let floor = |n: u64| 1u64 << (63 - n.leading_zeros());
    let block = match request {
        Some(r) if r > 0 => {
            (floor(r) as usize).clamp(asked.block_size, DEVICE_MAX_REQUEST.max(asked.block_size))
        }
        _ => asked.block_size,
    };
    let asked_bytes = u64::from(asked.queue_depth) * asked.block_size as u64;
    let depth = (asked_bytes.max(DEVICE_IN_FLIGHT) / block as u64).clamp(2, u64::from(u32::MAX));
    shape.block_size = block;
    shape.queue_depth = depth as u32;
    shape.rule = RULE_DEVICE;
}

/// The logical span ext4 reserves for a small write into a hole of a large file (its
/// allocator rounds such a request up to an 8 MiB preallocation, aligned in the file).
pub const ALLOCATION_WINDOW: u64 = 8 << 20;

/// The distinct [`ALLOCATION_WINDOW`]s that destination ranges, given in ascending order, touch.
#[derive(Debug, Default)]
pub struct Windows {
    count: u64,
    last: Option<u64>,
}

impl Windows {
    /// Counts the windows of `dst..dst + len` not counted yet.
    pub fn add(&mut self, dst: u64, len: u64) {
        if len == 0 {
            return;
        }
        let last = (dst + len - 1) / ALLOCATION_WINDOW;
        let first = match self.last {
            Some(w) if w >= dst / ALLOCATION_WINDOW => w + 1,
            _ => dst / ALLOCATION_WINDOW,
        };
        self.count += (last + 1).saturating_sub(first);
        self.last = Some(self.last.map_or(last, |w| w.max(last)));
    }
}

/// Whether allocating the destination's data ranges first pays, for a destination on ext4
/// whose data lies in `windows`: when reserving each window would take more than the file
/// system's free space (see the module doc).
pub fn allocate_first_pays(windows: &Windows, dst: &Endpoint) -> bool {
    match sys::free_space(dst.file.as_fd()) {
        Ok((_, free)) => windows.count.saturating_mul(ALLOCATION_WINDOW) > free,
        Err(_) => false,
    }
}

/// The deepest queue of small requests (see [`deepen_for_small_buffers`]).
pub const SMALL_IO_QUEUE_DEPTH: u32 = 128;

/// A run whose pieces of data are small gets buffers sized to them (`buffer` bytes, less than
/// the shape's block size): its queue deepens so about as many bytes stay in flight as the
/// shape has (depth times block size), up to [`SMALL_IO_QUEUE_DEPTH`], unless the depth was
/// pinned or a memory rule chose it. Each small I/O is a round trip to the device, and more of
/// them in flight hide it: a 4 GiB file with 4 KiB of data every 64 KiB copied to a new file on
/// this machine's disk took 1.9 s at depth 32, 1.6 s at 64, 1.4 s at 128, 1.4-1.5 s at 256 and
/// 512.
pub fn deepen_for_small_buffers(shape: &mut Shape, asked: &Asked, buffer: usize) {
    let devices = shape.rule == RULE_AS_ASKED || shape.rule == RULE_DEVICE;
    if !asked.tune.queue_depth || !devices || buffer == 0 || buffer >= shape.block_size {
        return;
    }
    let bytes = u64::from(shape.queue_depth) * shape.block_size as u64;
    let depth = (bytes / buffer as u64).min(u64::from(SMALL_IO_QUEUE_DEPTH)) as u32;
    if depth > shape.queue_depth {
        shape.queue_depth = depth;
        shape.rule = RULE_SMALL_PIECES;
    }
}

/// The largest request, in bytes, the device under `ep` takes whole (the kernel's
/// `max_sectors_kb` of the device itself, or of the disk holding the file's file system);
/// `None` when there is no such device (network or FUSE file systems, several devices).
pub fn max_request(ep: &Endpoint) -> Option<u64> {
    let dev = match ep.kind {
        Kind::Block => ep.identity.1,
        Kind::File => ep.identity.0,
    };
    if nix::sys::stat::major(dev) == 0 {
        return None;
    }
    let dir = std::fs::canonicalize(sys_block_dir(dev)).ok()?;
    // A partition's limits are its disk's.
    let queue = [dir.join("queue"), dir.parent()?.join("queue")]
        .into_iter()
        .find(|q| q.is_dir())?;
    let kb: u64 = std::fs::read_to_string(queue.join("max_sectors_kb"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024).filter(|&b| b > 0)
}

/// The sysfs folder of the block device numbered `dev` (a link into the device tree).
pub(crate) fn sys_block_dir(dev: u64) -> PathBuf {
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    PathBuf::from(format!("/sys/dev/block/{major}:{minor}"))
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
    let sys_dir = sys_block_dir(rdev);
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn shape(block_size: usize, queue_depth: u32) -> (Shape, Asked) {
        let asked = Asked {
            direct: true,
            queue_depth,
            block_size,
            limited: false,
            allocate_first: false,
            tune: Tune::default(),
        };
        let shape = Shape {
            direct: (true, true),
            queue_depth,
            block_size,
            threads: 0,
            media: (Some(Medium::Device), Medium::Device),
            rule: RULE_AS_ASKED,
            huge_pages: false,
            allocate_first: false,
        };
        (shape, asked)
    }

    #[test]
    fn windows_count_each_8_mib_window_holding_data_once() {
        const W: u64 = ALLOCATION_WINDOW;
        let mut w = Windows::default();
        w.add(0, 4096);
        w.add(4096, 4096);
        assert_eq!(w.count, 1);
        w.add(W - 4096, 8192); // ends in the second window
        assert_eq!(w.count, 2);
        w.add(10 * W, 3 * W); // windows 10, 11, 12
        w.add(12 * W + 1, 0);
        assert_eq!(w.count, 5);
        w.add(100 * W + 5, 1);
        assert_eq!(w.count, 6);
    }

    fn devices(asked: (usize, u32), request: Option<u64>) -> (usize, u32) {
        let (mut s, a) = shape(asked.0, asked.1);
        for_devices(&mut s, &a, request);
        assert_eq!(s.rule, RULE_DEVICE);
        (s.block_size, s.queue_depth)
    }

    #[test]
    fn devices_get_52_mib_in_flight_in_requests_they_take_whole() {
        // This machine's virtio disk: 4 MiB requests.
        assert_eq!(devices((MIB, 32), Some(4 << 20)), (4 * MIB, 13));
        // A loop device (1280 KiB): the largest power of two below, 1 MiB.
        assert_eq!(devices((MIB, 32), Some(1280 << 10)), (MIB, 52));
        // Beyond the largest request the rule makes.
        assert_eq!(devices((MIB, 32), Some(32 << 20)), (4 * MIB, 13));
        // Smaller than asked, or unknown: the asked block, more of them.
        assert_eq!(devices((MIB, 32), Some(128 << 10)), (MIB, 52));
        assert_eq!(devices((MIB, 32), None), (MIB, 52));
        // A caller's larger block (an image's big clusters) is never cut.
        assert_eq!(devices((8 * MIB, 32), Some(4 << 20)), (8 * MIB, 32));
        // More in flight than the rule's already asked: kept.
        assert_eq!(devices((MIB, 128), Some(4 << 20)), (4 * MIB, 32));
    }

    #[test]
    fn small_buffers_deepen_from_the_bytes_the_shape_keeps_in_flight() {
        let (mut s, a) = shape(MIB, 32);
        for_devices(&mut s, &a, Some(4 << 20));
        deepen_for_small_buffers(&mut s, &a, 64 << 10);
        assert_eq!(
            (s.queue_depth, s.rule),
            (SMALL_IO_QUEUE_DEPTH, RULE_SMALL_PIECES)
        );

        let (mut s, a) = shape(MIB, 32);
        deepen_for_small_buffers(&mut s, &a, 512 << 10);
        assert_eq!(s.queue_depth, 64);

        // Buffers as large as the blocks: nothing to do.
        let (mut s, a) = shape(MIB, 32);
        deepen_for_small_buffers(&mut s, &a, MIB);
        assert_eq!((s.queue_depth, s.rule), (32, RULE_AS_ASKED));

        // A memory rule's depth stays.
        let (mut s, a) = shape(MIB, 32);
        (s.queue_depth, s.rule) = (MEMORY_QUEUE_DEPTH, RULE_MEMORY);
        deepen_for_small_buffers(&mut s, &a, 64 << 10);
        assert_eq!(s.queue_depth, MEMORY_QUEUE_DEPTH);
    }
}
