//! Fast-storage family (issue 17): source and destination in RAM, so what separates the tools
//! is their own cost (CPU, system calls, O_DIRECT vs the page cache), not the disk.
//!
//! | case | source -> destination |
//! |---|---|
//! | `fast-full2g` | 2 GiB fully allocated file -> new file, both on a tmpfs |
//! | `fast-sparse4g` | 4 GiB file with 1 GiB of data -> new file, both on a tmpfs |
//! | `fast-loop-full2g` | loop device over the 2 GiB file -> loop device over a preallocated file |
//! | `fast-loop-sparse4g` | loop device over the 4 GiB file -> loop device over a preallocated file |
//!
//! Each case mounts its own tmpfs under the work dir (`tmpfs-CASE`, a private mount, unmounted
//! at the end; the case is skipped when the harness is not root), writes its fixture there and
//! races Ember (defaults and `--no-direct`) against the copy peers. The destination of the loop
//! cases is a loop device over a tmpfs file filled with non-zero data before every run (through
//! the device, untimed): its pages exist, so no tool pays first-touch allocation, and a tool
//! that skips holes without zeroing them fails validation. `--quick`: 256 MiB, and 512 MiB with
//! 128 MiB of data.

use std::path::{Path, PathBuf};

use super::peers::{copy_tools, CopyLineup};
use super::{output_of, reference_unchecked, Case, CaseInfo, Ctx, Role, Scale, Tool};
use crate::error::Result;
use crate::fixture::{self, Fill, Fixture, FixtureSpec};
use crate::units::{self, GIB, MIB};
use crate::util::{self, LoopDevice, TmpfsMount};
use crate::verify::{self, Validation};

pub const CASES: [&str; 4] = [
    "fast-full2g",
    "fast-sparse4g",
    "fast-loop-full2g",
    "fast-loop-sparse4g",
];

impl Scale {
    fn fast(self, sparse: bool) -> FixtureSpec {
        let (logical, data) = match (self, sparse) {
            (Scale::Full, false) => (2 * GIB, 2 * GIB),
            (Scale::Full, true) => (4 * GIB, GIB),
            (Scale::Quick, false) => (256 * MIB, 256 * MIB),
            (Scale::Quick, true) => (512 * MIB, 128 * MIB),
        };
        let name = if sparse {
            "fast-sparse4g"
        } else {
            "fast-full2g"
        };
        FixtureSpec {
            name: format!("{name}{}", self.suffix()),
            logical,
            data,
            ext_min: if sparse { MIB } else { logical },
            ext_max: if sparse { 4 * MIB } else { logical },
            seed: if sparse { 0x17_0004 } else { 0x17_0003 },
            fill: Fill::Random,
            stride: None,
        }
    }
}

pub struct FastCase {
    name: String,
    spec: FixtureSpec,
    /// Loop devices over the tmpfs files instead of the files themselves.
    loops: bool,
    mount_point: PathBuf,
    /// Declared before the mount, so the devices are detached before it is unmounted.
    src_dev: Option<LoopDevice>,
    reference_dev: Option<LoopDevice>,
    dst_dev: Option<LoopDevice>,
    mount: Option<TmpfsMount>,
    src: Option<Fixture>,
    /// What the device reference reads.
    reference_src: Option<PathBuf>,
    /// The destination file, or the destination device's backing file.
    dst: PathBuf,
    fio_dst: PathBuf,
}

impl FastCase {
    /// The case `name` (one of [`CASES`]).
    pub fn new(name: &str, scale: Scale, dir: &Path) -> Self {
        let mount_point = dir.join(format!("tmpfs-{name}"));
        let loops = name.starts_with("fast-loop");
        FastCase {
            name: name.to_string(),
            spec: scale.fast(name.ends_with("sparse4g")),
            loops,
            dst: mount_point.join(if loops { "dst.backing" } else { "dst.raw" }),
            fio_dst: mount_point.join("fio-dst"),
            mount_point,
            src_dev: None,
            reference_dev: None,
            dst_dev: None,
            mount: None,
            src: None,
            reference_src: None,
        }
    }

    /// Where the tools read: the fixture or the device over it.
    fn source(&self) -> Option<&Path> {
        match &self.src_dev {
            Some(d) => Some(&d.device),
            None => self.src.as_ref().map(|f| f.path.as_path()),
        }
    }

    /// Where the tools write: the new file or the destination device.
    fn target(&self) -> &Path {
        self.dst_dev.as_ref().map_or(&self.dst, |d| &d.device)
    }

    fn out(&self, tool: &Tool) -> &Path {
        output_of(tool, &self.dst, &self.fio_dst)
    }
}

impl Case for FastCase {
    fn name(&self) -> &str {
        &self.name
    }

    fn setup(&mut self, ctx: &Ctx) -> Result<CaseInfo> {
        let (logical, data) = (self.spec.logical, self.spec.data);
        // Room for the source, a reference source, a destination that a tool fully
        // allocates and fio's destination; the limit is not a reservation.
        let size = 2 * logical + 2 * data + 64 * MIB;
        let mount = TmpfsMount::new(&self.name, ctx.root, &self.mount_point, size)?;
        let mut notes = vec![format!(
            "source and destination on a tmpfs mounted at {} (size={}, private), unmounted after the case",
            mount.path.display(),
            units::bytes(size)
        )];
        self.mount = Some(mount);
        let src = fixture::ensure(&self.mount_point, &self.spec)?;
        let mut reference = src.path.clone();
        if data < logical {
            // Holes are no I/O: the reference reads a fully allocated file of as many bytes.
            let spec = FixtureSpec::full("reference-src".into(), data, 0x17_0005);
            reference = fixture::ensure(&self.mount_point, &spec)?.path;
            notes.push(format!(
                "MB/s = allocated source data ({}) / median time; the device reference reads that many bytes of a fully allocated tmpfs file",
                units::bytes(data)
            ));
        } else {
            notes.push("MB/s = logical size / median time".into());
        }
        if self.loops {
            let src_dev = LoopDevice::attach_read_only(&src.path)?;
            if data < logical {
                let dev = LoopDevice::attach_read_only(&reference)?;
                reference = dev.device.clone();
                self.reference_dev = Some(dev);
            } else {
                reference = src_dev.device.clone();
            }
            fixture::prefill(&self.dst, logical, true)?;
            let dst_dev = LoopDevice::attach(&self.dst)?;
            notes.push(format!(
                "{} (read-only) over the source -> {} over {}, both losetup --direct-io=on; the destination is filled with non-zero data through the device before every run (untimed: its tmpfs pages exist, and holes must really be zeroed); dst alloc = its backing file",
                src_dev.device.display(),
                dst_dev.device.display(),
                self.dst.display()
            ));
            self.src_dev = Some(src_dev);
            self.dst_dev = Some(dst_dev);
        }
        self.reference_src = Some(reference);
        let info = CaseInfo::with_source("fast", logical, data, &src.path, !self.loops, notes)?;
        self.src = Some(src);
        Ok(info)
    }

    fn tools(&self, ctx: &Ctx) -> Vec<Tool> {
        let (Some(s), Some(r)) = (self.source(), self.reference_src.as_deref()) else {
            return Vec::new();
        };
        let d = self.target();
        let fio_dst = if self.loops { d } else { &self.fio_dst };
        copy_tools(
            ctx,
            &CopyLineup {
                src: s,
                dst: d,
                logical: self.spec.logical,
                ember_variants: &[("ember --no-direct", "--no-direct")],
                dd_skip: None,
                reference: (r, fio_dst, self.spec.data),
                strided: None,
            },
        )
    }

    fn before_run(&self, tool: &Tool) -> Result<()> {
        match &self.dst_dev {
            Some(dev) => fixture::prefill(&dev.device, self.spec.logical, false),
            None => util::remove_if_exists(self.out(tool)),
        }
    }

    fn validate(&self, tool: &Tool, _ctx: &Ctx) -> Result<Validation> {
        if let Some(v) = reference_unchecked(tool) {
            return Ok(v);
        }
        let Some(src) = &self.src else {
            return Ok(Validation::NotChecked {
                reason: "no source".into(),
            });
        };
        if self.loops {
            // Read what reached the backing file, not the device's cached pages.
            util::drop_caches();
        }
        verify::compare(&src.path, self.target(), self.spec.logical, !self.loops)
    }

    fn dst_file(&self, tool: &Tool) -> Option<PathBuf> {
        (tool.role != Role::Reference).then(|| self.dst.clone())
    }

    fn after_run(&self, tool: &Tool) -> Result<()> {
        if self.loops {
            return Ok(());
        }
        util::remove_if_exists(self.out(tool))
    }

    fn teardown(&mut self) {
        self.src_dev = None;
        self.reference_dev = None;
        self.dst_dev = None;
        self.src = None;
        // Unmounting frees the fixtures and destinations with the tmpfs.
        self.mount = None;
    }
}
