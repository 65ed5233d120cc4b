//! Local attachments: a volume's bytes as a loop device on this host, Cinder's `local`
//! connection type (what os-brick's `LocalConnector` opens, and what cinderlib attaches on a
//! host without an iSCSI initiator).
//!
//! A file volume is the whole of its data file; an LV without device-mapper is a byte window of
//! its PV (`--offset`/`--sizelimit`, so the device never shows a byte of another volume). A
//! volume whose bytes are split over several PV ranges cannot be one loop device and is refused.
//! The loop devices of a volume are found again through sysfs (backing file, offset, size
//! limit), so attaching is idempotent, extending resizes them and deleting detaches them first:
//! no loop device ever outlives its volume and shows the next tenant's bytes.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::Span;
use crate::error::{DriverError, Result};
use crate::runner::{command_error, Runner};
use crate::types::Volume;
use crate::VolumeDriver;

/// Cinder's `connection_info` for a local attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalConnectionInfo {
    /// Always `"local"`.
    pub driver_volume_type: &'static str,
    /// `device_path` (the loop device) and `volume_id`.
    pub data: LocalData,
}

/// The `data` of a local `connection_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalData {
    /// The block device holding the volume's bytes.
    pub device_path: PathBuf,
    /// The volume's id.
    pub volume_id: String,
}

/// The one span a loop device can show; a split volume is refused.
fn single_span(vol: &Volume, spans: &[Span]) -> Result<Span> {
    match spans {
        [s] => Ok(s.clone()),
        _ => Err(DriverError::NotSupported {
            op: "local attach",
            reason: format!(
                "{} spans {} PV ranges; a loop device shows one range",
                vol.name,
                spans.len()
            ),
        }),
    }
}

/// A span's backing file or device as the kernel names it (what sysfs shows).
fn canonical(span: &Span) -> Result<PathBuf> {
    fs::canonicalize(&span.path).map_err(|e| DriverError::io("resolve backing path", &span.path, e))
}

/// The loop window of a span: the whole file (size limit 0) when it starts at 0 and covers the
/// file, else exactly the span.
fn window(span: &Span) -> Result<(PathBuf, u64, u64)> {
    let path = canonical(span)?;
    let meta = fs::metadata(&path).map_err(|e| DriverError::io("stat", &path, e))?;
    let whole = span.offset == 0 && meta.is_file() && meta.len() == span.len;
    Ok((path, span.offset, if whole { 0 } else { span.len }))
}

/// One loop device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoopDev {
    dev: PathBuf,
    backing: PathBuf,
    offset: u64,
    sizelimit: u64,
}

/// Every configured loop device (those with a backing file).
fn loop_devices() -> Result<Vec<LoopDev>> {
    let root = Path::new("/sys/block");
    let mut out = Vec::new();
    let rd = fs::read_dir(root).map_err(|e| DriverError::io("list", root, e))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let dir = e.path().join("loop");
        let read = |f: &str| fs::read_to_string(dir.join(f)).map(|s| s.trim_end().to_owned());
        // A loop device without a backing file has no loop/ folder: not configured.
        let Ok(backing) = read("backing_file") else {
            continue;
        };
        let num = |f: &str| {
            read(f)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.push(LoopDev {
            dev: PathBuf::from("/dev").join(&name),
            backing: PathBuf::from(backing),
            offset: num("offset"),
            sizelimit: num("sizelimit"),
        });
    }
    out.sort_by(|a, b| a.dev.cmp(&b.dev));
    Ok(out)
}

/// The loop devices showing exactly this window.
fn attached(path: &Path, offset: u64, sizelimit: u64) -> Result<Vec<LoopDev>> {
    Ok(loop_devices()?
        .into_iter()
        .filter(|l| l.backing == path && l.offset == offset && l.sizelimit == sizelimit)
        .collect())
}

/// The loop devices over `span`: those whose window starts inside it (after an extend the
/// span has grown and the devices still show the shorter window).
fn over(span: &Span) -> Result<Vec<LoopDev>> {
    let path = canonical(span)?;
    let end = span.offset.saturating_add(span.len);
    Ok(loop_devices()?
        .into_iter()
        .filter(|l| l.backing == path && l.offset >= span.offset && l.offset < end)
        .collect())
}

/// Attaches `vol` as a loop device (or returns the one already showing it).
pub fn connect(d: &dyn VolumeDriver, vol: &Volume) -> Result<LocalConnectionInfo> {
    let span = single_span(vol, &d.data_layout(vol)?.spans)?;
    let (path, offset, sizelimit) = window(&span)?;
    let dev = match attached(&path, offset, sizelimit)?.into_iter().next() {
        Some(l) => l.dev,
        None => {
            let (o, s) = (offset.to_string(), sizelimit.to_string());
            let p = path.to_string_lossy();
            let mut argv = vec!["losetup", "--find", "--show"];
            if offset != 0 {
                argv.extend(["--offset", &o]);
            }
            if sizelimit != 0 {
                argv.extend(["--sizelimit", &s]);
            }
            argv.push(&p);
            let out = Runner::new().output("local attach", &argv)?;
            if !out.success() {
                return Err(command_error("local attach", &argv, &out));
            }
            PathBuf::from(out.stdout.trim())
        }
    };
    Ok(LocalConnectionInfo {
        driver_volume_type: "local",
        data: LocalData {
            device_path: dev,
            volume_id: vol.id.to_string(),
        },
    })
}

/// Detaches every loop device over `vol`'s bytes; returns how many there were.
pub fn disconnect(d: &dyn VolumeDriver, vol: &Volume) -> Result<usize> {
    let mut n = 0;
    for span in &d.data_layout(vol)?.spans {
        for l in over(span)? {
            let dev = l.dev.to_string_lossy();
            let argv = ["losetup", "--detach", &dev];
            let out = Runner::new().output("local detach", &argv)?;
            // Gone meanwhile (another detach won): fine.
            if !out.success() && l.dev.exists() && loop_devices()?.contains(&l) {
                return Err(command_error("local detach", &argv, &out));
            }
            n += 1;
        }
    }
    Ok(n)
}

/// After an extend: every loop device over `vol` shows its new size.
pub fn refresh(d: &dyn VolumeDriver, vol: &Volume) -> Result<()> {
    let spans = d.data_layout(vol)?.spans;
    let mut devs = Vec::new();
    for s in &spans {
        devs.extend(over(s)?);
    }
    if devs.is_empty() {
        return Ok(());
    }
    // Attached, so it was one range: it must still be one to stay attached.
    let span = single_span(vol, &spans).map_err(|e| DriverError::NotSupported {
        op: "extend while attached",
        reason: e.to_string(),
    })?;
    let (_, offset, sizelimit) = window(&span)?;
    for l in devs {
        let f = fs::OpenOptions::new()
            .read(true)
            .open(&l.dev)
            .map_err(|e| DriverError::io("open", &l.dev, e))?;
        ember_engine::sys::loop_set_window(f.as_fd(), offset, sizelimit)
            .map_err(|e| DriverError::io("resize loop device", &l.dev, e))?;
    }
    Ok(())
}
