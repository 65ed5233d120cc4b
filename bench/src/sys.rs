//! The few system calls std does not expose: waiting for a child without reaping it, reaping it
//! with its resource usage, killing a process group, SEEK_DATA/SEEK_HOLE and read-ahead hints.
//! All unsafe code of the harness lives in this module.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

/// A reaped child: how it ended, its peak resident set size and the CPU time it used.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    pub exit: ExitKind,
    /// `ru_maxrss` of the child (KiB). Linux reports the maximum over the child and every
    /// descendant it waited for, so `sh -c 'a && b'` or `nbdcopy` spawning a helper is covered.
    pub max_rss_kib: u64,
    /// `ru_utime` and `ru_stime` (seconds): CPU time of all the child's threads (io_uring's
    /// io-wq workers included) plus that of the descendants it waited for.
    pub user_seconds: f64,
    pub sys_seconds: f64,
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Block until child `pid` has exited, leaving it a zombie (so its pid cannot be reused yet).
pub fn wait_exited_keep_zombie(pid: u32) -> io::Result<()> {
    let id = libc::id_t::from(pid);
    loop {
        // SAFETY: siginfo_t is plain old data, all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t that outlives the call; waitid does not
        // keep the pointer.
        let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reap child `pid` (blocking) and return its exit and rusage.
pub fn reap(pid: u32) -> io::Result<Reaped> {
    let raw =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, writable and outlive the call.
        let rc = unsafe { libc::wait4(raw, &mut status, 0, &mut usage) };
        if rc == raw {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let exit = if libc::WIFEXITED(status) {
        ExitKind::Code(libc::WEXITSTATUS(status))
    } else {
        ExitKind::Signal(libc::WTERMSIG(status))
    };
    Ok(Reaped {
        exit,
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        user_seconds: seconds(usage.ru_utime),
        sys_seconds: seconds(usage.ru_stime),
    })
}

/// SIGKILL every process in process group `pgid` (the harness starts each tool as the leader of
/// its own group). Errors (group already gone) are ignored.
pub fn kill_group(pgid: u32) {
    let Ok(raw) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if raw <= 1 {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions; a negative pid addresses the group that
    // the harness itself created for this child.
    unsafe {
        libc::kill(-raw, libc::SIGKILL);
    }
}

fn lseek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek only reads its integer arguments; the fd is owned by `file`, which is alive.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if rc >= 0 {
        return Ok(Some(rc as u64));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// Data ranges of `file` within `[0, len)` via SEEK_DATA/SEEK_HOLE. A file system (or device)
/// without the interface reports everything as data.
pub fn data_ranges(file: &File, len: u64) -> io::Result<Vec<Range<u64>>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let data = match lseek(file, pos, libc::SEEK_DATA) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                return Ok(std::iter::once(0..len).collect());
            }
            Err(e) => return Err(e),
        };
        if data >= len {
            break;
        }
        let hole = lseek(file, data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        if hole <= data {
            // Should not happen; treat the rest as data rather than loop.
            out.push(data..len);
            break;
        }
        out.push(data..hole);
        pos = hole;
    }
    Ok(out)
}

/// Ask the kernel to start reading `range` of `file` into the page cache now
/// (`POSIX_FADV_WILLNEED`: asynchronous read-ahead; the call does not wait for the data).
/// A hint: errors are ignored.
pub fn will_need(file: &File, range: &Range<u64>) {
    let (Ok(off), Ok(len)) = (
        libc::off_t::try_from(range.start),
        libc::off_t::try_from(range.end - range.start),
    ) else {
        return;
    };
    // SAFETY: posix_fadvise only reads its integer arguments; the fd is owned by `file`, which
    // is alive for the call.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_WILLNEED);
    }
}

/// Make `cmd` start through fork()+exec() instead of posix_spawn's vfork-style clone.
///
/// `ru_maxrss` of a child includes the RSS high-water mark of the memory image it execs away
/// from. A vfork-style child execs away from the *harness's* address space, so every tool would
/// inherit the harness's peak RSS as a floor. A forked child has a private copy whose high-water
/// mark starts at the harness's *current* anonymous RSS, which is small between runs.
pub fn spawn_with_fork(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; it does nothing at all, so it
    // allocates nothing, takes no lock and is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| Ok(()));
    }
}

/// Give the harness's free heap back to the kernel, so a forked tool does not inherit (and get
/// charged in `ru_maxrss` for) validation buffers the harness no longer uses.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own allocator state; no pointers are passed.
    unsafe {
        libc::malloc_trim(0);
    }
}
