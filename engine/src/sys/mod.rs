//! The only place in the engine that makes raw syscalls and ioctls.
//!
//! Each call is wrapped once, in a typed function taking a [`BorrowedFd`], so the rest of the
//! engine is plain Rust. Functions return `io::Error` and leave the path/offset context to callers.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

// Block-device ioctls (linux/fs.h).
nix::ioctl_read!(ioctl_blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(
    ioctl_blksszget,
    nix::request_code_none!(0x12, 104),
    libc::c_int
);
nix::ioctl_write_ptr_bad!(
    ioctl_blkzeroout,
    nix::request_code_none!(0x12, 127),
    [u64; 2]
);
nix::ioctl_write_int!(ioctl_ficlone, 0x94, 9);
nix::ioctl_read_bad!(
    ioctl_blkroget,
    nix::request_code_none!(0x12, 94),
    libc::c_int
);

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// `lseek(fd, offset, SEEK_DATA)`: the start of the next data region at or after `offset`, or
/// `None` when there is no data after it (ENXIO).
pub fn seek_data(fd: BorrowedFd<'_>, offset: u64) -> io::Result<Option<u64>> {
    seek(fd, offset, nix::unistd::Whence::SeekData)
}

/// `lseek(fd, offset, SEEK_HOLE)`: the start of the next hole at or after `offset` (the end of
/// the file counts as a hole). `None` when `offset` is at or past the end (ENXIO).
pub fn seek_hole(fd: BorrowedFd<'_>, offset: u64) -> io::Result<Option<u64>> {
    seek(fd, offset, nix::unistd::Whence::SeekHole)
}

fn seek(fd: BorrowedFd<'_>, offset: u64, whence: nix::unistd::Whence) -> io::Result<Option<u64>> {
    match nix::unistd::lseek(fd.as_raw_fd(), to_off(offset)?, whence) {
        Ok(pos) => Ok(Some(pos as u64)),
        Err(nix::errno::Errno::ENXIO) => Ok(None),
        Err(e) => Err(errno(e)),
    }
}

/// The file system type (`f_type` of `fstatfs`) of the file behind `fd`.
pub fn filesystem_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    nix::sys::statfs::fstatfs(fd)
        .map(|s| s.filesystem_type().0)
        .map_err(errno)
}

/// Size in bytes of a block device (BLKGETSIZE64).
pub fn block_device_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at a live local.
    unsafe { ioctl_blkgetsize64(fd.as_raw_fd(), &mut size) }.map_err(errno)?;
    Ok(size)
}

/// Logical sector size of a block device (BLKSSZGET): the O_DIRECT alignment it needs.
pub fn logical_block_size(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at a live local.
    unsafe { ioctl_blksszget(fd.as_raw_fd(), &mut size) }.map_err(errno)?;
    Ok(size.max(512) as u32)
}

/// BLKROGET: true when the block device is read-only.
pub fn block_device_read_only(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut ro: libc::c_int = 0;
    // SAFETY: BLKROGET writes one int through the pointer, which points at a live local.
    unsafe { ioctl_blkroget(fd.as_raw_fd(), &mut ro) }.map_err(errno)?;
    Ok(ro != 0)
}

/// BLKZEROOUT: make `[offset, offset+len)` of a block device read as zeros (the kernel uses
/// write-zeroes offload where the device has it, else writes zeros itself).
pub fn blk_zeroout(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let range = [offset, len];
    // SAFETY: BLKZEROOUT reads two u64s (start, length) from the pointer, which points at a
    // live local array of exactly that shape.
    unsafe { ioctl_blkzeroout(fd.as_raw_fd(), &range) }.map_err(errno)?;
    Ok(())
}

/// `fallocate(PUNCH_HOLE | KEEP_SIZE)`: deallocate a file range; it reads back as zeros.
pub fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::FallocateFlags as F;
    fallocate(
        fd,
        F::FALLOC_FL_PUNCH_HOLE | F::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

/// `fallocate(KEEP_SIZE)`: allocate a file range's blocks (unwritten: it still reads as
/// zeros, and as holes did), without changing the file's size.
pub fn allocate(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    fallocate(
        fd,
        nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

/// Space on the file system behind `fd` (`fstatvfs`), in bytes: (what an unprivileged writer
/// may still allocate, what is free at all).
pub fn free_space(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let s = nix::sys::statvfs::fstatvfs(fd).map_err(errno)?;
    let bytes = |blocks: u64| blocks.saturating_mul(s.fragment_size() as u64);
    Ok((
        bytes(s.blocks_available() as u64),
        bytes(s.blocks_free() as u64),
    ))
}

/// `fallocate(ZERO_RANGE | KEEP_SIZE)`: the range reads as zeros and stays allocated.
pub fn zero_range(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::FallocateFlags as F;
    fallocate(
        fd,
        F::FALLOC_FL_ZERO_RANGE | F::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

fn fallocate(
    fd: BorrowedFd<'_>,
    flags: nix::fcntl::FallocateFlags,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    nix::fcntl::fallocate(fd.as_raw_fd(), flags, to_off(offset)?, to_off(len)?).map_err(errno)
}

/// `fdatasync(fd)`.
pub fn fdatasync(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::unistd::fdatasync(fd.as_raw_fd()).map_err(errno)
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: starts writeback of the dirty pages of a range
/// without waiting for it (not a durability point: fdatasync still is).
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    sync_file_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE)
}

/// `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`: writes the dirty pages of a range and
/// waits until they are on the device (their I/O errors are reported here; still not a
/// durability point for metadata or the device's cache: fdatasync is).
pub fn finish_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    sync_file_range(
        fd,
        offset,
        len,
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
    )
}

fn sync_file_range(fd: BorrowedFd<'_>, offset: u64, len: u64, flags: u32) -> io::Result<()> {
    let (off, n) = (to_off(offset)?, to_off(len)?);
    // SAFETY: sync_file_range takes plain integers and touches no user memory; the fd is
    // borrowed, so it stays open for the call.
    let r = unsafe { libc::sync_file_range(fd.as_raw_fd(), off, n, flags) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `posix_fadvise(POSIX_FADV_DONTNEED)`: drops the clean cached pages of a range (advice:
/// errors are ignored by callers).
pub fn drop_cached(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    nix::fcntl::posix_fadvise(
        fd.as_raw_fd(),
        to_off(offset)?,
        to_off(len)?,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(errno)
}

/// A file offset or length as the kernel's signed type (EINVAL past `i64::MAX`).
fn to_off(v: u64) -> io::Result<i64> {
    i64::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// FICLONE: make `dst` share all of `src`'s blocks (reflink). Fails with EOPNOTSUPP/EXDEV/EINVAL
/// where the filesystem cannot.
pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its integer argument and touches no user memory;
    // both fds are borrowed, so they stay open for the call.
    unsafe { ioctl_ficlone(dst.as_raw_fd(), src.as_raw_fd() as libc::c_ulong) }.map_err(errno)?;
    Ok(())
}

/// True when `fd` (a block device) is in use by a mount or another exclusive holder: probed by
/// an O_EXCL open of the same device, which the kernel refuses with EBUSY in that case.
pub fn block_device_busy(path: &std::path::Path) -> io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
    {
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(true),
        Err(e) => Err(e),
    }
}

// Loop-device ioctls (linux/loop.h): "bad" ioctls, their numbers carry no size.
/// `struct loop_info64` of linux/loop.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}
nix::ioctl_read_bad!(ioctl_loop_get_status64, 0x4C05, LoopInfo64);
nix::ioctl_write_ptr_bad!(ioctl_loop_set_status64, 0x4C04, LoopInfo64);
nix::ioctl_none_bad!(ioctl_loop_set_capacity, 0x4C07);

fn loop_get_status(fd: BorrowedFd<'_>) -> io::Result<LoopInfo64> {
    // SAFETY: all-zero bytes are a valid LoopInfo64 (integers and byte arrays only).
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one struct loop_info64 through the pointer, which points
    // at a live local of exactly that layout (#[repr(C)], fields as in linux/loop.h).
    unsafe { ioctl_loop_get_status64(fd.as_raw_fd(), &mut info) }.map_err(errno)?;
    Ok(info)
}

/// What LOOP_GET_STATUS64 tells of a loop device: which file backs it and where it starts in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopStatus {
    /// `st_dev` of the backing file.
    pub backing_dev: u64,
    /// `st_ino` of the backing file.
    pub backing_ino: u64,
    /// Where in the backing file the device's first byte is.
    pub offset: u64,
    /// An old cryptoloop transfer: the device's bytes are not the file's.
    pub transformed: bool,
}

/// LOOP_GET_STATUS64 of `fd` (ENXIO/ENOTTY: not a bound loop device).
pub fn loop_status(fd: BorrowedFd<'_>) -> io::Result<LoopStatus> {
    let info = loop_get_status(fd)?;
    Ok(LoopStatus {
        backing_dev: info.lo_device,
        backing_ino: info.lo_inode,
        offset: info.lo_offset,
        transformed: info.lo_encrypt_type != 0,
    })
}

/// Makes a loop device show `sizelimit` bytes of its backing file from `offset` (0 = to the
/// end of the file), re-reading the backing file's size: LOOP_GET_STATUS64, then
/// LOOP_SET_STATUS64 with the new window (the kernel resizes the device when the window
/// changes), then LOOP_SET_CAPACITY (for a file that grew under an unchanged window).
pub fn loop_set_window(fd: BorrowedFd<'_>, offset: u64, sizelimit: u64) -> io::Result<()> {
    let mut info = loop_get_status(fd)?;
    if info.lo_offset != offset || info.lo_sizelimit != sizelimit {
        info.lo_offset = offset;
        info.lo_sizelimit = sizelimit;
        // SAFETY: LOOP_SET_STATUS64 reads one struct loop_info64 from the pointer, a live local
        // filled by LOOP_GET_STATUS64 above with only the window changed.
        unsafe { ioctl_loop_set_status64(fd.as_raw_fd(), &info) }.map_err(errno)?;
    }
    // SAFETY: LOOP_SET_CAPACITY takes no argument and touches no user memory.
    unsafe { ioctl_loop_set_capacity(fd.as_raw_fd()) }.map_err(errno)?;
    Ok(())
}
