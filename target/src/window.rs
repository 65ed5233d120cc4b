//! Byte-window exports: a volume that lives as a byte range of a bigger device or file (an LVM
//! volume without device-mapper is a range of its PV). Neither tgt's `rdwr` backing store nor LIO's
//! `fileio` takes an offset, so the window is turned into a block device with a loop device
//! (`losetup --offset O --sizelimit L`), and that device is exported. The loop device is set up,
//! found again after a restart (by backing file + offset + size limit) and detached through
//! `losetup`, run by [`Runner`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Result, TargetError};
use crate::runner::Runner;

/// A byte window of a backing file or device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub source: PathBuf,
    pub offset: u64,
    pub len: u64,
}

#[derive(Deserialize)]
struct LoList {
    loopdevices: Vec<LoDev>,
}

#[derive(Deserialize)]
struct LoDev {
    name: String,
    #[serde(rename = "back-file")]
    back_file: Option<String>,
    offset: Option<serde_json::Value>,
    sizelimit: Option<serde_json::Value>,
}

fn as_u64(v: &Option<serde_json::Value>) -> Option<u64> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses `losetup --list --json -O NAME,BACK-FILE,OFFSET,SIZELIMIT` into
/// `(device, back file, offset, sizelimit)` tuples.
pub fn parse_losetup_json(text: &str) -> Result<Vec<(PathBuf, PathBuf, u64, u64)>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let list: LoList = serde_json::from_str(text).map_err(|_| TargetError::Parse {
        what: "losetup --list --json",
        line: text.lines().next().unwrap_or_default().to_owned(),
        reason: "not the expected JSON",
    })?;
    Ok(list
        .loopdevices
        .into_iter()
        .filter_map(|d| {
            let back = d.back_file?;
            // losetup appends " (deleted)" when the file was unlinked.
            let back = back.strip_suffix(" (deleted)").unwrap_or(&back).to_owned();
            Some((
                PathBuf::from(d.name),
                PathBuf::from(back),
                as_u64(&d.offset).unwrap_or(0),
                as_u64(&d.sizelimit).unwrap_or(0),
            ))
        })
        .collect())
}

fn list(runner: &Runner) -> Result<Vec<(PathBuf, PathBuf, u64, u64)>> {
    let out = runner.run(
        "losetup",
        &[
            "--list".into(),
            "--json".into(),
            "-O".into(),
            "NAME,BACK-FILE,OFFSET,SIZELIMIT".into(),
        ],
    )?;
    parse_losetup_json(&out.stdout)
}

/// Finds an existing loop device showing exactly `w`.
pub fn find(runner: &Runner, w: &Window) -> Result<Option<PathBuf>> {
    let source = w.source.canonicalize().unwrap_or_else(|_| w.source.clone());
    Ok(list(runner)?
        .into_iter()
        .find(|(_, back, off, lim)| *back == source && *off == w.offset && *lim == w.len)
        .map(|(dev, ..)| dev))
}

/// Returns a loop device showing exactly `w`, reusing one that already does.
pub fn ensure(runner: &Runner, w: &Window) -> Result<PathBuf> {
    if let Some(dev) = find(runner, w)? {
        return Ok(dev);
    }
    let out = runner.run(
        "losetup",
        &[
            "--find".into(),
            "--show".into(),
            "--offset".into(),
            w.offset.to_string().into(),
            "--sizelimit".into(),
            w.len.to_string().into(),
            w.source.as_path().into(),
        ],
    )?;
    let dev = out.stdout.trim();
    if !dev.starts_with("/dev/loop") {
        return Err(TargetError::Parse {
            what: "losetup --find --show",
            line: dev.to_owned(),
            reason: "no loop device name",
        });
    }
    Ok(PathBuf::from(dev))
}

/// Detaches `dev` if it is a loop device still showing `w` (never a device that was reused for
/// something else since).
pub fn detach(runner: &Runner, w: &Window) -> Result<()> {
    if let Some(dev) = find(runner, w)? {
        runner.run("losetup", &["--detach".into(), dev.as_path().into()])?;
    }
    Ok(())
}

/// True when `p` names a loop device (`/dev/loopN`).
pub fn is_loop_device(p: &Path) -> bool {
    p.to_str()
        .and_then(|s| s.strip_prefix("/dev/loop"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_losetup_json() {
        let text = r#"{
   "loopdevices": [
      {
         "name": "/dev/loop0",
         "back-file": "/tmp/pv.img",
         "offset": 1048576,
         "sizelimit": 8388608
      },{
         "name": "/dev/loop1",
         "back-file": "/tmp/gone.img (deleted)",
         "offset": "0",
         "sizelimit": "0"
      }
   ]
}"#;
        let l = parse_losetup_json(text).unwrap();
        assert_eq!(
            l[0],
            (
                PathBuf::from("/dev/loop0"),
                PathBuf::from("/tmp/pv.img"),
                1048576,
                8388608
            )
        );
        assert_eq!(l[1].1, PathBuf::from("/tmp/gone.img"));
        assert!(parse_losetup_json("").unwrap().is_empty());
        assert!(parse_losetup_json("garbage").is_err());
        assert!(is_loop_device(Path::new("/dev/loop12")));
        assert!(!is_loop_device(Path::new("/dev/loop")));
        assert!(!is_loop_device(Path::new("/dev/loop1/../sda")));
    }
}
