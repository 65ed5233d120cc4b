//! The drivers' side of iSCSI exports: one [`Exporter`] wraps an `ember_target::TargetHelper`
//! and translates volumes and model updates (provider_location / provider_auth, Cinder's formats,
//! persisted by the driver) to the target crate's types.

use std::sync::Arc;

use ember_target::{ConnectionInfo, Connector, ExportModel, ExportVolume, TargetHelper};

use crate::error::{DriverError, Result};
use crate::types::{ModelUpdate, Volume};

/// A target helper as the drivers use it.
pub struct Exporter {
    helper: Arc<dyn TargetHelper>,
}

impl Exporter {
    /// Wraps a target helper.
    pub fn new(helper: Arc<dyn TargetHelper>) -> Self {
        Exporter { helper }
    }

    fn model(vol: &Volume) -> Result<ExportModel> {
        let loc = vol
            .provider_location
            .clone()
            .ok_or_else(|| DriverError::BackendApi {
                op: "export",
                reason: format!("volume {} is not exported (no provider_location)", vol.name),
            })?;
        Ok(ExportModel {
            provider_location: loc,
            provider_auth: vol.provider_auth.clone(),
        })
    }

    /// Creates the export; the model update to persist.
    pub fn create(&self, ev: &ExportVolume, vol: &Volume) -> Result<ModelUpdate> {
        if vol.provider_location.is_some() {
            let m = Self::model(vol)?;
            self.helper.ensure_export(ev, &m)?;
            return Ok(ModelUpdate {
                provider_location: Some(m.provider_location),
                provider_auth: m.provider_auth,
            });
        }
        let m = self.helper.create_export(ev)?;
        Ok(ModelUpdate {
            provider_location: Some(m.provider_location),
            provider_auth: m.provider_auth,
        })
    }

    /// Re-creates a lost export from the stored model.
    pub fn ensure(&self, ev: &ExportVolume, vol: &Volume) -> Result<()> {
        Ok(self.helper.ensure_export(ev, &Self::model(vol)?)?)
    }

    /// Removes the export (missing: success).
    pub fn remove(&self, ev: &ExportVolume, force: bool) -> Result<()> {
        Ok(self.helper.remove_export(ev, force)?)
    }

    /// connection_info for a connector.
    pub fn connect(
        &self,
        ev: &ExportVolume,
        vol: &Volume,
        connector: &Connector,
    ) -> Result<ConnectionInfo> {
        Ok(self
            .helper
            .initialize_connection(ev, &Self::model(vol)?, connector)?)
    }

    /// Revokes a connector.
    pub fn disconnect(&self, ev: &ExportVolume, vol: &Volume, connector: &Connector) -> Result<()> {
        Ok(self
            .helper
            .terminate_connection(ev, &Self::model(vol)?, connector)?)
    }

    /// Tells the target about a new size.
    pub fn extend(&self, ev: &ExportVolume, vol: &Volume) -> Result<()> {
        Ok(self.helper.extend_target(ev, &Self::model(vol)?)?)
    }
}
