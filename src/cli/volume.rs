//! `ember volume ...`: Cinder-shaped volume management on the configured backends (the file
//! backend in the user's data folder when there is no config: no root needed).

use std::path::PathBuf;

use ember_drivers::config::{default_config_path, Config};
use ember_drivers::stats::VolumeStats;
use ember_drivers::{
    driver_for, local, migrate, Attachment, Connector, DriverError, ExistingRef, ImageFile,
    ImageMeta, Snapshot, Volume, VolumeDriver,
};
use serde::Serialize;
use uuid::Uuid;

use super::common::human;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type CliResult = Result<(), BoxError>;

/// Manage volumes: create, snapshot, clone, extend, export, delete (with wipe).
#[derive(clap::Args, Debug)]
pub struct VolumeArgs {
    /// Config file (TOML, one [[backend]] per backend). Default: $EMBER_CONFIG, else
    /// $XDG_CONFIG_HOME/ember/config.toml or ~/.config/ember/config.toml; without one, a file
    /// backend in $XDG_DATA_HOME/ember/volumes (~/.local/share/ember/volumes).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Backend to use (default: the config's default_backend, or its only backend).
    #[arg(long, global = true)]
    pub backend: Option<String>,
    /// Print JSON on stdout instead of the human summary.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: VolumeCommand,
}

/// The volume subcommands. VOLUME is a name, a UUID or `volume-<uuid>`; SNAPSHOT likewise.
#[derive(clap::Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create an empty volume (sparse; reads as zeros).
    Create {
        /// Name (A-Z a-z 0-9 _ . -, at most 64); without one the volume is known by its UUID.
        name: Option<String>,
        /// Size in GiB.
        #[arg(long)]
        size: u64,
        /// The volume's UUID (Cinder's); default: a new one.
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// Delete a volume (wiped first as configured: volume_clear / volume_clear_size).
    Delete { volume: String },
    /// List volumes.
    List,
    /// Show one volume and its snapshots.
    Show { volume: String },
    /// Grow a volume to SIZE GiB.
    Extend {
        volume: String,
        #[arg(long)]
        size: u64,
    },
    /// Snapshot a volume.
    Snapshot {
        volume: String,
        /// Snapshot name.
        name: Option<String>,
        /// The snapshot's UUID (Cinder's); default: a new one.
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// Delete a snapshot.
    SnapshotDelete { snapshot: String },
    /// List snapshots.
    Snapshots,
    /// Clone a volume into a new one.
    Clone {
        source: String,
        name: Option<String>,
        /// Size in GiB (default: the source's).
        #[arg(long)]
        size: Option<u64>,
        /// The new volume's UUID (Cinder's); default: a new one.
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// Create a volume from a snapshot.
    FromSnapshot {
        snapshot: String,
        name: Option<String>,
        /// Size in GiB (default: the snapshot's).
        #[arg(long)]
        size: Option<u64>,
        /// The new volume's UUID (Cinder's); default: a new one.
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// Revert a volume to one of its snapshots.
    Revert { volume: String, snapshot: String },
    /// Take over a backend object (an LV, or a file in the backend's data folder).
    Manage {
        /// The object's name (Cinder's {"source-name": ...}).
        source_name: String,
        /// Name for the managed volume.
        name: Option<String>,
        /// The managed volume's UUID (Cinder's); default: a new one.
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// List backend objects that could be managed.
    Manageable,
    /// Stop managing a volume (its data stays).
    Unmanage { volume: String },
    /// Cinder's capability/stats dict of the backend.
    Stats,
    /// Export a volume over iSCSI (needs [backend.target]).
    Export { volume: String },
    /// Remove a volume's export.
    Unexport { volume: String },
    /// Grant an initiator access (or attach on this host with --local); prints Cinder's
    /// connection_info.
    Connect {
        volume: String,
        /// The initiator's IQN (iSCSI).
        #[arg(long, required_unless_present = "local")]
        initiator: Option<String>,
        /// Attach on this host as a loop device: connection_info of type "local".
        #[arg(long, conflicts_with = "initiator")]
        local: bool,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        multipath: bool,
    },
    /// Revoke an initiator's access (or detach this host's loop devices with --local).
    Disconnect {
        volume: String,
        #[arg(long, required_unless_present = "local")]
        initiator: Option<String>,
        /// Detach the volume's loop devices on this host.
        #[arg(long, conflicts_with = "initiator")]
        local: bool,
    },
    /// Move a volume to another backend on this host (same id; the source is wiped and
    /// removed once the copy is flushed).
    Migrate {
        volume: String,
        /// The destination backend's name.
        #[arg(long)]
        to_backend: String,
        /// The destination backend's config file (default: this command's config).
        #[arg(long)]
        to_config: Option<PathBuf>,
    },
    /// Write a volume out as an image file (Cinder's upload-to-image): raw or qcow2.
    Upload {
        volume: String,
        image: PathBuf,
        /// Image format (Glance's disk_format): raw or qcow2.
        #[arg(long, default_value = "raw")]
        format: String,
    },
    /// Write an image file into a volume (Cinder's create-from-image data path). The image is
    /// inspected first and must be the declared format (raw, qcow2, vmdk, vhd, vhdx, vdi).
    Download {
        image: PathBuf,
        volume: String,
        /// Image format (Glance's disk_format).
        #[arg(long, default_value = "raw")]
        format: String,
    },
}

impl VolumeCommand {
    /// True for commands that give a new volume or snapshot a user-chosen name.
    fn takes_a_name(&self) -> bool {
        match self {
            VolumeCommand::Create { name, .. }
            | VolumeCommand::Snapshot { name, .. }
            | VolumeCommand::Clone { name, .. }
            | VolumeCommand::FromSnapshot { name, .. }
            | VolumeCommand::Manage { name, .. } => name.is_some(),
            _ => false,
        }
    }
}

struct Ctx {
    driver: Box<dyn VolumeDriver>,
    json: bool,
}

fn bad(msg: String) -> BoxError {
    Box::new(DriverError::InvalidInput(msg))
}

/// The one object `key` names, by UUID, backend name or display name: `not_found` when none
/// does, an "ambiguous" error naming how many `what` when several do.
fn the_one<T: Clone>(
    all: &[T],
    key: &str,
    ids: impl Fn(&T) -> (String, &String, Option<&str>),
    not_found: impl FnOnce() -> DriverError,
    what: &str,
) -> Result<T, BoxError> {
    let hits: Vec<&T> = all
        .iter()
        .filter(|o| {
            let (id, name, display) = ids(o);
            id == key || name == key || display == Some(key)
        })
        .collect();
    match hits.as_slice() {
        [o] => Ok((*o).clone()),
        [] => Err(Box::new(not_found())),
        _ => Err(bad(format!(
            "{key:?} names {} {what}: use the UUID",
            hits.len()
        ))),
    }
}

impl Ctx {
    fn volume(&self, key: &str) -> Result<Volume, BoxError> {
        the_one(
            &self.driver.list_volumes()?,
            key,
            |v| (v.id.to_string(), &v.name, v.display_name.as_deref()),
            || DriverError::volume_not_found(key),
            "volumes",
        )
    }

    fn snapshot(&self, key: &str) -> Result<Snapshot, BoxError> {
        the_one(
            &self.driver.list_snapshots()?,
            key,
            |s| (s.id.to_string(), &s.name, s.display_name.as_deref()),
            || DriverError::snapshot_not_found(key),
            "snapshots",
        )
    }

    /// A new volume (with Cinder's id when given); a given name must not be taken yet.
    fn new_volume(
        &self,
        size: u64,
        name: Option<&str>,
        id: Option<Uuid>,
    ) -> Result<Volume, BoxError> {
        let v = Volume::with_id(id.unwrap_or_else(Uuid::new_v4), size, name)?;
        if let Some(n) = name {
            if self
                .driver
                .list_volumes()?
                .iter()
                .any(|x| x.display_name.as_deref() == Some(n))
            {
                return Err(Box::new(DriverError::AlreadyExists {
                    what: "volume named",
                    name: n.to_owned(),
                }));
            }
        }
        Ok(v)
    }

    /// A list: `{"schema": .., key: [...]}` under --json.
    fn print_list<T: Serialize>(
        &self,
        key: &str,
        items: &[T],
        line: impl Fn(&T) -> String,
    ) -> CliResult {
        if self.json {
            super::json::print_list(key, items)?;
        } else if !items.is_empty() {
            println!("{}", items.iter().map(line).collect::<Vec<_>>().join("\n"));
        }
        Ok(())
    }

    /// The common arm: looks `key` up, runs `act` on the volume, then prints `{verb: <id>}`
    /// under --json, else the line `human` makes from the volume and what `act` returned.
    fn act_on_volume<R>(
        &self,
        key: &str,
        verb: &str,
        act: impl FnOnce(&Volume) -> Result<R, BoxError>,
        human: impl FnOnce(&Volume, R) -> String,
    ) -> CliResult {
        let v = self.volume(key)?;
        let r = act(&v)?;
        let mut done = serde_json::Map::new();
        done.insert(verb.to_owned(), serde_json::to_value(v.id)?);
        self.print(&done, || human(&v, r))
    }

    fn print<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) -> CliResult {
        if self.json {
            super::json::print(value)?;
        } else {
            let h = human();
            if !h.is_empty() {
                println!("{h}");
            }
        }
        Ok(())
    }
}

fn vol_line(v: &Volume) -> String {
    format!(
        "{:<24} {}  {:>5} GiB{}",
        v.display_name.as_deref().unwrap_or("-"),
        v.id,
        v.size,
        if v.provider_location.is_some() {
            "  exported"
        } else {
            ""
        }
    )
}

fn snap_line(s: &Snapshot) -> String {
    format!(
        "{:<24} {}  {:>5} GiB  of {}",
        s.display_name.as_deref().unwrap_or("-"),
        s.id,
        s.volume_size,
        s.volume_name
    )
}

fn stats_text(s: &VolumeStats) -> String {
    format!(
        "backend {} ({} {}, {})\n  capacity  {:.2} GiB total, {:.2} GiB free, {:.2} GiB provisioned\n  \
         volumes   {} (incl. snapshots)\n  thin {}  sparse copies {}  multiattach {}\n  location  {}",
        s.volume_backend_name,
        s.vendor_name,
        s.driver_version,
        s.storage_protocol,
        s.total_capacity_gb,
        s.free_capacity_gb,
        s.provisioned_capacity_gb,
        s.total_volumes,
        s.thin_provisioning_support,
        s.sparse_copy_volume,
        s.multiattach,
        s.location_info
    )
}

/// An image file of the declared Glance disk_format.
fn image_file(path: PathBuf, disk_format: String) -> ImageFile {
    ImageFile {
        path,
        meta: ImageMeta {
            disk_format,
            ..ImageMeta::raw()
        },
    }
}

/// Runs `ember volume ...`.
pub fn run(args: VolumeArgs) -> CliResult {
    let explicit = args.config.clone();
    let cfg = Config::load_or_default(explicit.as_deref())?;
    let bcfg = cfg.backend(args.backend.as_deref())?;
    let driver = driver_for(bcfg)?;
    driver.do_setup()?;
    driver.check_for_setup_error()?;
    tracing::debug!(
        backend = bcfg.name,
        config = ?explicit.or_else(default_config_path),
        "using backend"
    );
    // Names are checked and taken under one backend-wide lock, so two processes creating the
    // same name cannot both succeed. Only commands that take a new name hold it.
    let _names_lock = if args.command.takes_a_name() {
        let state = bcfg
            .path
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("/var/lib/ember").join(&bcfg.name));
        std::fs::create_dir_all(&state)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(state.join(".ember-names.lock"))?;
        f.lock()?;
        Some(f)
    } else {
        None
    };
    let c = Ctx {
        driver,
        json: args.json,
    };
    let d = &c.driver;
    match args.command {
        VolumeCommand::Create { name, size, id } => {
            let v = c.new_volume(size, name.as_deref(), id)?;
            d.create_volume(&v)?;
            c.print(&v, || format!("created {} ({} GiB)", v.label(), v.size))
        }
        VolumeCommand::Delete { volume } => c.act_on_volume(
            &volume,
            "deleted",
            |v| {
                // A loop device left over the volume would show the next tenant's bytes.
                local::disconnect(d.as_ref(), v)?;
                Ok(d.delete_volume(v)?)
            },
            |v, ()| format!("deleted {}", v.label()),
        ),
        VolumeCommand::List => c.print_list("volumes", &d.list_volumes()?, vol_line),
        VolumeCommand::Show { volume } => {
            let v = c.volume(&volume)?;
            let snaps: Vec<Snapshot> = d
                .list_snapshots()?
                .into_iter()
                .filter(|s| s.volume_id == v.id)
                .collect();
            c.print(
                &serde_json::json!({"volume": v, "snapshots": snaps}),
                || {
                    let mut s = format!(
                        "{}\n  id        {}\n  name      {}\n  size      {} GiB ({})\n  export    {}",
                        v.label(),
                        v.id,
                        v.name,
                        v.size,
                        human(v.size_bytes()),
                        v.provider_location.as_deref().unwrap_or("-")
                    );
                    for sn in &snaps {
                        s.push_str(&format!("\n  snapshot  {}", snap_line(sn)));
                    }
                    s
                },
            )
        }
        VolumeCommand::Extend { volume, size } => {
            let v = c.volume(&volume)?;
            d.extend_volume(&v, size)?;
            let v = Volume { size, ..v };
            local::refresh(d.as_ref(), &v)?;
            c.print(&v, || format!("extended {} to {size} GiB", v.label()))
        }
        VolumeCommand::Snapshot { volume, name, id } => {
            let v = c.volume(&volume)?;
            if let Some(n) = &name {
                if d.list_snapshots()?
                    .iter()
                    .any(|s| s.display_name.as_deref() == Some(n))
                {
                    return Err(Box::new(DriverError::AlreadyExists {
                        what: "snapshot named",
                        name: n.clone(),
                    }));
                }
            }
            let s = Snapshot::with_id(id.unwrap_or_else(Uuid::new_v4), &v, name.as_deref())?;
            d.create_snapshot(&s)?;
            c.print(&s, || format!("snapshot {} of {}", s.label(), v.label()))
        }
        VolumeCommand::SnapshotDelete { snapshot } => {
            let s = c.snapshot(&snapshot)?;
            d.delete_snapshot(&s)?;
            c.print(&serde_json::json!({"deleted": s.id}), || {
                format!("deleted snapshot {}", s.label())
            })
        }
        VolumeCommand::Snapshots => c.print_list("snapshots", &d.list_snapshots()?, snap_line),
        VolumeCommand::Clone {
            source,
            name,
            size,
            id,
        } => {
            let src = c.volume(&source)?;
            let v = c.new_volume(size.unwrap_or(src.size), name.as_deref(), id)?;
            d.create_cloned_volume(&v, &src)?;
            c.print(&v, || format!("cloned {} into {}", src.label(), v.label()))
        }
        VolumeCommand::FromSnapshot {
            snapshot,
            name,
            size,
            id,
        } => {
            let s = c.snapshot(&snapshot)?;
            let v = c.new_volume(size.unwrap_or(s.volume_size), name.as_deref(), id)?;
            d.create_volume_from_snapshot(&v, &s)?;
            c.print(&v, || {
                format!("created {} from snapshot {}", v.label(), s.label())
            })
        }
        VolumeCommand::Revert { volume, snapshot } => {
            let v = c.volume(&volume)?;
            let s = c.snapshot(&snapshot)?;
            d.revert_to_snapshot(&v, &s)?;
            c.print(
                &serde_json::json!({"reverted": v.id, "snapshot": s.id}),
                || format!("reverted {} to {}", v.label(), s.label()),
            )
        }
        VolumeCommand::Manage {
            source_name,
            name,
            id,
        } => {
            let r = ExistingRef::source_name(&source_name);
            let probe = Volume::new(1, name.as_deref())?;
            let size = d.manage_existing_get_size(&probe, &r)?;
            let v = c.new_volume(size, name.as_deref(), id)?;
            d.manage_existing(&v, &r)?;
            c.print(&v, || {
                format!("managed {source_name} as {} ({} GiB)", v.label(), v.size)
            })
        }
        VolumeCommand::Manageable => {
            c.print_list("manageable", &d.get_manageable_volumes()?, |x| {
                format!(
                    "{:<40} {:>5} GiB  {}",
                    x.reference.source_name.as_deref().unwrap_or("?"),
                    x.size,
                    if x.safe_to_manage {
                        "safe to manage".to_owned()
                    } else {
                        x.reason_not_safe.clone().unwrap_or_default()
                    }
                )
            })
        }
        VolumeCommand::Unmanage { volume } => c.act_on_volume(
            &volume,
            "unmanaged",
            |v| Ok(d.unmanage(v)?),
            |v, ()| format!("unmanaged {} (data kept)", v.label()),
        ),
        VolumeCommand::Stats => {
            let s = d.get_volume_stats(true)?;
            c.print(&s, || stats_text(&s))
        }
        VolumeCommand::Export { volume } => {
            let v = c.volume(&volume)?;
            let mu = d.create_export(&v)?;
            c.print(&mu, || {
                format!(
                    "exported {}: {}",
                    v.label(),
                    mu.as_ref()
                        .and_then(|m| m.provider_location.as_deref())
                        .unwrap_or("-")
                )
            })
        }
        VolumeCommand::Unexport { volume } => c.act_on_volume(
            &volume,
            "unexported",
            |v| Ok(d.remove_export(v)?),
            |v, ()| format!("removed the export of {}", v.label()),
        ),
        VolumeCommand::Connect {
            volume,
            local: true,
            host,
            ..
        } => {
            let v = c.volume(&volume)?;
            let info = local::connect(d.as_ref(), &v)?;
            d.attach_volume(
                &v,
                &Attachment {
                    host_name: host.or_else(|| Some(ember_drivers::file::hostname())),
                    ..Default::default()
                },
            )?;
            c.print(&info, || {
                format!("{} -> {}", v.label(), info.data.device_path.display())
            })
        }
        VolumeCommand::Connect {
            volume,
            initiator,
            ip,
            host,
            multipath,
            local: false,
        } => {
            let v = c.volume(&volume)?;
            let conn = Connector {
                initiator,
                ip,
                host: host.clone(),
                multipath,
                ..Default::default()
            };
            let info = d.initialize_connection(&v, &conn)?;
            d.attach_volume(
                &v,
                &Attachment {
                    host_name: host.or(conn.initiator.clone()),
                    ..Default::default()
                },
            )?;
            // connection_info carries the CHAP secret: printed as JSON only on request.
            c.print(&info, || {
                format!(
                    "{} -> {} {} lun {} (run with --json for the full connection_info)",
                    v.label(),
                    info.data.target_portal,
                    info.data.target_iqn,
                    info.data.target_lun
                )
            })
        }
        VolumeCommand::Disconnect {
            volume,
            initiator,
            local,
        } => c.act_on_volume(
            &volume,
            "disconnected",
            |v| {
                let who = if local {
                    let n = local::disconnect(d.as_ref(), v)?;
                    format!("{n} loop device(s) of this host")
                } else {
                    let conn = Connector {
                        initiator: initiator.clone(),
                        ..Default::default()
                    };
                    d.terminate_connection(v, &conn)?;
                    initiator.unwrap_or_default()
                };
                d.detach_volume(v, &Attachment::default())?;
                Ok(who)
            },
            |v, who| format!("disconnected {who} from {}", v.label()),
        ),
        VolumeCommand::Migrate {
            volume,
            to_backend,
            to_config,
        } => {
            let v = c.volume(&volume)?;
            let dcfg = match &to_config {
                Some(p) => Config::load(p)?,
                None => cfg.clone(),
            };
            let dst = driver_for(dcfg.backend(Some(&to_backend))?)?;
            dst.do_setup()?;
            dst.check_for_setup_error()?;
            migrate::migrate(d.as_ref(), dst.as_ref(), &v, bcfg.volume_copy_bps_limit)?;
            c.print(
                &serde_json::json!({"migrated": v.id, "backend": to_backend}),
                || format!("moved {} to backend {to_backend}", v.label()),
            )
        }
        VolumeCommand::Upload {
            volume,
            image,
            format,
        } => {
            let v = c.volume(&volume)?;
            let img = image_file(image, format);
            d.copy_volume_to_image(&v, &img)?;
            c.print(&img, || {
                format!("wrote {} to {}", v.label(), img.path.display())
            })
        }
        VolumeCommand::Download {
            image,
            volume,
            format,
        } => {
            let v = c.volume(&volume)?;
            let img = image_file(image, format);
            d.copy_image_to_volume(&v, &img)?;
            c.print(&img, || {
                format!("wrote {} into {}", img.path.display(), v.label())
            })
        }
    }
}
