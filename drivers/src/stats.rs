//! `get_volume_stats`: Cinder's capability dict, with Cinder's exact key names.
//!
//! The top level carries the backend keys and (as single-pool drivers report them) the pool's
//! capacity keys; `pools` carries the per-pool keys the scheduler reads. Capacities are in GiB
//! (floats, rounded to two decimals as Cinder's LVM driver does).

use serde::{Deserialize, Serialize};

/// One pool's capabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStats {
    pub pool_name: String,
    pub total_capacity_gb: f64,
    pub free_capacity_gb: f64,
    pub reserved_percentage: u32,
    pub location_info: String,
    #[serde(rename = "QoS_support")]
    pub qos_support: bool,
    pub provisioned_capacity_gb: f64,
    pub max_over_subscription_ratio: String,
    pub thin_provisioning_support: bool,
    pub thick_provisioning_support: bool,
    pub total_volumes: u64,
    pub filter_function: Option<String>,
    pub goodness_function: Option<String>,
    pub multiattach: bool,
    pub backend_state: String,
}

/// The whole stats dict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeStats {
    pub volume_backend_name: String,
    pub vendor_name: String,
    pub driver_version: String,
    pub storage_protocol: String,
    pub total_capacity_gb: f64,
    pub free_capacity_gb: f64,
    pub reserved_percentage: u32,
    pub location_info: String,
    #[serde(rename = "QoS_support")]
    pub qos_support: bool,
    pub provisioned_capacity_gb: f64,
    pub max_over_subscription_ratio: String,
    pub thin_provisioning_support: bool,
    pub thick_provisioning_support: bool,
    pub total_volumes: u64,
    pub filter_function: Option<String>,
    pub goodness_function: Option<String>,
    pub multiattach: bool,
    /// Copies into this backend keep holes (Cinder's migration reads it from the destination).
    pub sparse_copy_volume: bool,
    pub online_extend_support: bool,
    pub shared_targets: bool,
    pub pools: Vec<PoolStats>,
    /// Backend-specific capability notes (Cinder passes unknown keys through to the scheduler);
    /// empty unless a backend has something honest to say, e.g. LVM without device-mapper.
    #[serde(flatten)]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The vendor name Ember reports.
pub const VENDOR_NAME: &str = "Open Source";
/// Bytes to GiB, rounded to two decimals.
pub fn gib(bytes: u64) -> f64 {
    round2(bytes as f64 / (1u64 << 30) as f64)
}

/// Rounds to two decimals, as Cinder's LVM helpers do.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl VolumeStats {
    /// Builds the dict from one pool: the top level mirrors the pool's keys.
    pub fn single_pool(
        backend: &str,
        driver_version: &str,
        storage_protocol: &str,
        sparse_copy_volume: bool,
        online_extend_support: bool,
        pool: PoolStats,
    ) -> Self {
        VolumeStats {
            volume_backend_name: backend.to_owned(),
            vendor_name: VENDOR_NAME.to_owned(),
            driver_version: driver_version.to_owned(),
            storage_protocol: storage_protocol.to_owned(),
            total_capacity_gb: pool.total_capacity_gb,
            free_capacity_gb: pool.free_capacity_gb,
            reserved_percentage: pool.reserved_percentage,
            location_info: pool.location_info.clone(),
            qos_support: pool.qos_support,
            provisioned_capacity_gb: pool.provisioned_capacity_gb,
            max_over_subscription_ratio: pool.max_over_subscription_ratio.clone(),
            thin_provisioning_support: pool.thin_provisioning_support,
            thick_provisioning_support: pool.thick_provisioning_support,
            total_volumes: pool.total_volumes,
            filter_function: pool.filter_function.clone(),
            goodness_function: pool.goodness_function.clone(),
            multiattach: pool.multiattach,
            sparse_copy_volume,
            online_extend_support,
            shared_targets: false,
            pools: vec![pool],
            extra: Default::default(),
        }
    }
}

/// Cinder's top-level stats keys, in the order the issue lists them (tests compare to this).
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "volume_backend_name",
    "vendor_name",
    "driver_version",
    "storage_protocol",
    "total_capacity_gb",
    "free_capacity_gb",
    "reserved_percentage",
    "location_info",
    "QoS_support",
    "provisioned_capacity_gb",
    "max_over_subscription_ratio",
    "thin_provisioning_support",
    "thick_provisioning_support",
    "total_volumes",
    "filter_function",
    "goodness_function",
    "multiattach",
    "sparse_copy_volume",
    "online_extend_support",
    "shared_targets",
    "pools",
];

/// Cinder's per-pool keys.
pub const POOL_KEYS: &[&str] = &[
    "pool_name",
    "total_capacity_gb",
    "free_capacity_gb",
    "reserved_percentage",
    "location_info",
    "QoS_support",
    "provisioned_capacity_gb",
    "max_over_subscription_ratio",
    "thin_provisioning_support",
    "thick_provisioning_support",
    "total_volumes",
    "filter_function",
    "goodness_function",
    "multiattach",
    "backend_state",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_exactly_cinders() {
        let pool = PoolStats {
            pool_name: "p".into(),
            total_capacity_gb: 1.0,
            free_capacity_gb: 1.0,
            reserved_percentage: 0,
            location_info: "x".into(),
            qos_support: false,
            provisioned_capacity_gb: 0.0,
            max_over_subscription_ratio: "20.0".into(),
            thin_provisioning_support: true,
            thick_provisioning_support: false,
            total_volumes: 0,
            filter_function: None,
            goodness_function: None,
            multiattach: true,
            backend_state: "up".into(),
        };
        let s = VolumeStats::single_pool("b", "1", "iSCSI", true, true, pool);
        let v = serde_json::to_value(&s).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        let mut want: Vec<_> = TOP_LEVEL_KEYS.iter().map(|s| s.to_string()).collect();
        keys.sort();
        want.sort();
        assert_eq!(keys, want);
        let mut pk: Vec<_> = v["pools"][0].as_object().unwrap().keys().cloned().collect();
        let mut pw: Vec<_> = POOL_KEYS.iter().map(|s| s.to_string()).collect();
        pk.sort();
        pw.sort();
        assert_eq!(pk, pw);
        assert_eq!(gib(3 << 29), 1.5);
    }
}
