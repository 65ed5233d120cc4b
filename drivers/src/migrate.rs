//! Moving a volume from one backend to another on the same host (Cinder's driver-assisted
//! `migrate_volume`): the volume keeps its id and name, its bytes are copied by the engine, and
//! the source is deleted (wiped as its backend is configured) only once the copy is flushed.
//!
//! The destination decides sparseness, never the source: on a destination that may hold old
//! bytes (a thick LV on extents another volume used) every hole of the source is written as
//! zeros, so no stale byte survives where the source reads zeros.

use crate::data::{copy_layout, CopyMode};
use crate::error::{DriverError, Result};
use crate::types::Volume;
use crate::VolumeDriver;

/// Moves `vol` from `src` to `dst`. The volume must have no snapshots (they cannot follow it);
/// on any failure the half-made destination volume is removed and the source is untouched.
pub fn migrate(
    src: &dyn VolumeDriver,
    dst: &dyn VolumeDriver,
    vol: &Volume,
    bps_limit: u64,
) -> Result<()> {
    vol.validate()?;
    if src.backend_name() == dst.backend_name() {
        return Err(DriverError::invalid(format!(
            "{} is already on backend {:?}",
            vol.name,
            dst.backend_name()
        )));
    }
    let from = src.data_layout(vol)?;
    let snaps: Vec<String> = src
        .list_snapshots()?
        .into_iter()
        .filter(|s| s.volume_id == vol.id)
        .map(|s| s.name)
        .collect();
    if !snaps.is_empty() {
        return Err(DriverError::VolumeIsBusy {
            name: vol.name.clone(),
            reason: format!("it has snapshots, which cannot move: {}", snaps.join(", ")),
        });
    }
    let plain = Volume {
        provider_location: None,
        provider_auth: None,
        ..vol.clone()
    };
    dst.create_volume(&plain)?;
    let moved = dst
        .data_layout(&plain)
        .and_then(|to| {
            copy_layout(
                &from.spans,
                &to.spans,
                vol.size_bytes(),
                CopyMode {
                    dest_zeroed: to.fresh_reads_zeros,
                    bps_limit,
                },
            )
        })
        // The source goes only once the copy is flushed; if it cannot go (attached, busy),
        // the copy goes instead and the volume stays where it was.
        .and_then(|()| src.delete_volume(vol));
    if let Err(e) = moved {
        if let Err(undo) = dst.delete_volume(&plain) {
            tracing::warn!(volume = %vol.name, error = %undo, "could not remove the destination copy");
        }
        return Err(e);
    }
    Ok(())
}
