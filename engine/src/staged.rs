//! New output files that appear at their final path only once complete.
//!
//! A [`Staged`] file is written unnamed where the filesystem allows it (`O_TMPFILE` in the
//! destination's directory): a run that is killed, crashes or loses power leaves nothing
//! behind, and [`Staged::publish`] links the finished, flushed inode into place with
//! `linkat`, which never replaces a file that appeared meanwhile (unless asked to). Where
//! the filesystem has no `O_TMPFILE` the file is a hidden `.NAME.PID.N.tmp` beside the output,
//! created exclusively (never through a symlink planted there), removed when the run fails or
//! unwinds, and moved into place with `renameat2(RENAME_NOREPLACE)` (or a hard link, or a
//! checked rename where the filesystem has neither).

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{renameat2, AtFlags, RenameFlags};
use nix::unistd::linkat;

use crate::{Error, Result};

/// A new file being written for `out`.
#[derive(Debug)]
pub struct Staged {
    file: File,
    out: PathBuf,
    /// The hidden name of the fallback route; `None` for an unnamed (`O_TMPFILE`) file.
    named: Option<PathBuf>,
}

/// Tells apart the temporary names one process makes for one output.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// `dir/.NAME.PID.N.tmp` beside `out`.
fn hidden_name(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    out.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// True when something (even a dangling symlink) is at `path`.
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Checks `out` may receive a new output before any work: nothing is there (not even a
/// dangling symlink) unless `force`, and never something other than a regular file (a
/// device node is not replaced by an image file).
pub fn check_output(out: &Path, force: bool) -> Result<()> {
    if exists(out) && !force {
        return Err(Error::invalid(format!(
            "{} exists (use --force to replace it)",
            out.display()
        )));
    }
    match std::fs::metadata(out) {
        Ok(m) if !m.file_type().is_file() => Err(Error::invalid(format!(
            "{} is not a regular file; an image is written to a file",
            out.display()
        ))),
        _ => Ok(()),
    }
}

/// This process's umask, from /proc/self/status (reading it with umask(2) would change it for
/// every thread meanwhile).
fn umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// The directory `out` goes in (`.` for a bare name).
fn dir_of(out: &Path) -> &Path {
    match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

impl Staged {
    /// Starts a new, empty file for `out` (read-write, mode 0666 less the umask).
    pub fn create(out: &Path) -> Result<Staged> {
        let dir = dir_of(out);
        let unnamed = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o666)
            .custom_flags(libc::O_TMPFILE)
            .open(dir);
        match unnamed {
            // Publishing links the file through /proc/self/fd: without /proc (a bare chroot
            // or container) the named route is taken, rather than failing after the write.
            Ok(file) if Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())).exists() => {
                // Some kernels skip the umask for O_TMPFILE on filesystems without POSIX ACLs:
                // apply it here, so an image is never created more open than `open` makes it.
                if let Some(mask) = umask() {
                    file.set_permissions(std::fs::Permissions::from_mode(0o666 & !mask))
                        .map_err(|e| Error::open("set the mode of the new file in", dir, e))?;
                }
                return Ok(Staged {
                    file,
                    out: out.to_path_buf(),
                    named: None,
                });
            }
            Ok(_) => {
                tracing::debug!("no /proc/self/fd; using a hidden name");
            }
            // No O_TMPFILE on this filesystem (or kernel): the named route.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS)
                ) =>
            {
                tracing::debug!(dir = %dir.display(), error = %e, "no O_TMPFILE; using a hidden name");
            }
            Err(e) => return Err(Error::open("create a file in", dir, e)),
        }
        Self::create_named(out)
    }

    /// The fallback route: a hidden name beside `out`, created exclusively.
    fn create_named(out: &Path) -> Result<Staged> {
        Self::create_at(out, hidden_name(out))
    }

    fn create_at(out: &Path, tmp: PathBuf) -> Result<Staged> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o666)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::open("create", &tmp, e))?;
        Ok(Staged {
            file,
            out: out.to_path_buf(),
            named: Some(tmp),
        })
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The final path (what messages name).
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// A path that opens this very file (for a second, O_DIRECT descriptor).
    pub fn reopen_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Flushes the file and puts it at its final path, replacing what is there only when
    /// `replace`; then flushes the directory entry. Fails, leaving `out` as it is, when `out`
    /// exists and `replace` is false. (Replacing links the unnamed file under a hidden name,
    /// then renames that over `out`: a kill between the two leaves that complete, flushed
    /// hidden file behind.)
    pub fn publish(mut self, replace: bool) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::Flush {
            path: self.out.clone(),
            source: e,
        })?;
        let exists_err = |out: &Path| {
            Error::invalid(format!(
                "{} appeared while it was being written (use --force to replace it)",
                out.display()
            ))
        };
        let out = self.out.clone();
        match self.named.take() {
            None => {
                let by_fd = self.reopen_path();
                let link = |to: &Path| {
                    linkat(None, by_fd.as_path(), None, to, AtFlags::AT_SYMLINK_FOLLOW)
                        .map_err(std::io::Error::from)
                };
                if replace {
                    // Link under a hidden name, then rename over the output in one step.
                    let tmp = hidden_name(&out);
                    link(&tmp).map_err(|e| Error::open("link", &tmp, e))?;
                    if let Err(e) = std::fs::rename(&tmp, &out) {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(Error::open("rename into place", &out, e));
                    }
                } else {
                    match link(&out) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                            return Err(exists_err(&out))
                        }
                        Err(e) => return Err(Error::open("link into place", &out, e)),
                    }
                }
            }
            Some(tmp) => {
                // From here the hidden file is ours to remove whatever happens.
                let guard = RemoveOnDrop(Some(tmp.clone()));
                if replace {
                    std::fs::rename(&tmp, &out)
                        .map_err(|e| Error::open("rename into place", &out, e))?;
                } else {
                    no_replace_rename(&tmp, &out).map_err(|e| match e.kind() {
                        ErrorKind::AlreadyExists => exists_err(&out),
                        _ => Error::open("move into place", &out, e),
                    })?;
                }
                std::mem::forget(guard);
            }
        }
        if let Ok(d) = File::open(dir_of(&out)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Moves `tmp` to `out` unless `out` exists: `renameat2(RENAME_NOREPLACE)`, else a hard link
/// and unlink, else (a filesystem with neither) a rename after a last check.
fn no_replace_rename(tmp: &Path, out: &Path) -> std::io::Result<()> {
    match renameat2(None, tmp, None, out, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::hard_link(tmp, out) {
        Ok(()) => {
            let _ = std::fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(e),
        Err(e) => {
            if std::fs::symlink_metadata(out).is_ok() {
                return Err(ErrorKind::AlreadyExists.into());
            }
            tracing::debug!(error = %e, "no hard links; renaming into place");
            std::fs::rename(tmp, out)
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Not published: an unnamed file goes with its descriptor; a named one is removed.
        if let Some(p) = self.named.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

struct RemoveOnDrop(Option<PathBuf>);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn unpublished_leaves_nothing_and_published_appears_whole() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("vol.raw");
        let mut s = Staged::create(&out).unwrap();
        s.file.write_all(b"first").unwrap();
        assert!(names(d.path()).is_empty(), "{:?}", names(d.path()));
        drop(s);
        assert!(names(d.path()).is_empty());

        let mut s = Staged::create(&out).unwrap();
        s.file.write_all(b"second").unwrap();
        s.publish(false).unwrap();
        assert_eq!(names(d.path()), vec!["vol.raw"]);
        let mut got = String::new();
        File::open(&out).unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "second");
    }

    #[test]
    fn never_replaces_unless_asked() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("img");
        let mut s = Staged::create(&out).unwrap();
        s.file.write_all(b"new").unwrap();
        // Someone else creates the output meanwhile.
        std::fs::write(&out, b"theirs").unwrap();
        let e = s.publish(false).unwrap_err().to_string();
        assert!(e.contains("appeared while it was being written"), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), b"theirs");
        assert_eq!(names(d.path()), vec!["img"]);

        let mut s = Staged::create(&out).unwrap();
        s.file.write_all(b"new").unwrap();
        s.publish(true).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert_eq!(names(d.path()), vec!["img"]);
    }

    #[test]
    fn named_route_is_exclusive_and_cleaned_up() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("x");
        // Unpublished: removed.
        let s = Staged::create_named(&out).unwrap();
        assert_eq!(names(d.path()).len(), 1);
        drop(s);
        assert!(names(d.path()).is_empty());
        // Someone else's output is never replaced; with replace it is.
        let mut s = Staged::create_named(&out).unwrap();
        s.file.write_all(b"data").unwrap();
        std::fs::write(&out, b"theirs").unwrap();
        let e = s.publish(false).unwrap_err().to_string();
        assert!(e.contains("appeared while it was being written"), "{e}");
        assert_eq!(names(d.path()), vec!["x"]);
        assert_eq!(std::fs::read(&out).unwrap(), b"theirs");
        let mut s = Staged::create_named(&out).unwrap();
        s.file.write_all(b"data").unwrap();
        s.publish(true).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"data");
        assert_eq!(names(d.path()), vec!["x"]);
        std::fs::remove_file(&out).unwrap();
        let mut s = Staged::create_named(&out).unwrap();
        s.file.write_all(b"mine").unwrap();
        s.publish(false).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"mine");
        assert_eq!(names(d.path()), vec!["x"]);
    }

    #[test]
    fn hidden_names_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let planted = d.path().join("victim");
        std::fs::write(&planted, b"keep").unwrap();
        let out = d.path().join("x");
        let tmp = hidden_name(&out);
        std::os::unix::fs::symlink(&planted, &tmp).unwrap();
        let e = Staged::create_at(&out, tmp.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("create"), "{e}");
        assert_eq!(std::fs::read(&planted).unwrap(), b"keep");
        assert!(tmp.symlink_metadata().unwrap().file_type().is_symlink());
    }

    #[test]
    fn published_mode_follows_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("m");
        Staged::create(&out).unwrap().publish(false).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask().unwrap(), "{mode:o}");
    }

    #[test]
    fn bare_name_goes_in_the_current_directory() {
        assert_eq!(dir_of(Path::new("img.qcow2")), Path::new("."));
        assert_eq!(dir_of(Path::new("/a/b")), Path::new("/a"));
    }
}
