//! The small file-system steps every other module builds on: flocks, atomic JSON records,
//! folder fsyncs, sparse files, the host name. It imports nothing from the rest of the crate
//! but the error type, so the data path (`data.rs`, `image.rs`), the shared backend layer
//! (`backend.rs`) and the backends all depend on it, never the other way round.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{DriverError, Result};

/// A held flock (released on drop).
pub(crate) struct Lock {
    _f: Flock<File>,
}

/// Takes an exclusive flock on `path` (created if missing); `None` when `nonblock` and held
/// elsewhere. flock locks belong to the open file description, so they serialize threads of one
/// process as well as processes.
pub(crate) fn lock_path(path: &Path, nonblock: bool) -> Result<Option<Lock>> {
    let arg = if nonblock {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockExclusive
    };
    loop {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| DriverError::io("open lock", path, e))?;
        match Flock::lock(f, arg) {
            Ok(l) => {
                // The holder may have removed the file (its object is gone) while we waited:
                // that lock guards nothing any more; lock the file now at the path instead.
                let held = l
                    .metadata()
                    .map_err(|e| DriverError::io("stat lock", path, e))?;
                if fs::metadata(path).is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino())
                {
                    return Ok(Some(Lock { _f: l }));
                }
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if nonblock => return Ok(None),
            Err((_, e)) => {
                return Err(DriverError::io(
                    "lock",
                    path,
                    std::io::Error::from_raw_os_error(e as i32),
                ))
            }
        }
    }
}

/// Reads a JSON file; `None` when it does not exist.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| DriverError::Metadata {
                path: path.to_owned(),
                source: e,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DriverError::io("read", path, e)),
    }
}

/// Writes `dir/file_name` atomically: temp file, fsync, rename, fsync the folder. A crash leaves
/// either the old or the new content, plus at worst a `.tmp-*` file that recovery removes.
pub(crate) fn write_json_atomic<T: Serialize>(dir: &Path, file_name: &str, rec: &T) -> Result<()> {
    let tmp = dir.join(format!(
        ".tmp-{file_name}.{}.{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let body = serde_json::to_vec_pretty(rec).map_err(|e| DriverError::Metadata {
        path: tmp.clone(),
        source: e,
    })?;
    let res = (|| {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| DriverError::io("create", &tmp, e))?;
        f.write_all(&body)
            .map_err(|e| DriverError::io("write", &tmp, e))?;
        f.sync_all()
            .map_err(|e| DriverError::io("fsync", &tmp, e))?;
        let dst = dir.join(file_name);
        fs::rename(&tmp, &dst).map_err(|e| DriverError::io("rename into place", &dst, e))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Creates the folders (and their parents) that do not exist yet.
pub(crate) fn create_dirs(dirs: &[PathBuf]) -> Result<()> {
    for d in dirs {
        fs::create_dir_all(d).map_err(|e| DriverError::io("create folder", d, e))?;
    }
    Ok(())
}

/// fsyncs a folder (after a create, rename or remove in it).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DriverError::io("fsync folder", dir, e))
}

/// Removes a file; absent is success.
pub(crate) fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DriverError::io("remove", p, e)),
    }
}

/// Removes a folder and its content; absent is success.
pub(crate) fn remove_dir_if_exists(p: &Path) -> Result<()> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DriverError::io("remove", p, e)),
    }
}

/// Creates (or truncates) `p` as a sparse file of `size` bytes, synced.
pub(crate) fn create_sparse(p: &Path, size: u64) -> Result<()> {
    let mut o = File::options();
    o.write(true).create(true).truncate(true);
    sized_sync(
        o.open(p).map_err(|e| DriverError::io("create", p, e))?,
        p,
        size,
    )
}

/// Creates `p`, which must not exist, as a sparse file of `size` bytes, synced.
pub(crate) fn create_new_sparse(p: &Path, size: u64) -> Result<()> {
    let mut o = File::options();
    o.write(true).create_new(true);
    let f = o
        .open(p)
        .map_err(|e| DriverError::io("create (must not exist)", p, e))?;
    sized_sync(f, p, size)
}

/// Sets the length of the existing file `p` and syncs it.
pub(crate) fn set_len_sync(p: &Path, size: u64) -> Result<()> {
    let f = File::options()
        .write(true)
        .open(p)
        .map_err(|e| DriverError::io("open", p, e))?;
    sized_sync(f, p, size)
}

fn sized_sync(f: File, p: &Path, size: u64) -> Result<()> {
    f.set_len(size)
        .map_err(|e| DriverError::io("set length of", p, e))?;
    f.sync_all().map_err(|e| DriverError::io("fsync", p, e))
}

/// This host's name (for `location_info` and local attachments).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
