//! Image cases (issue 5), built from the sparse8g fixture:
//! - `img-to-file`: qcow2 -> new raw file,
//! - `img-to-loop`: qcow2 -> loop device (Cinder's copy image to volume),
//! - `imgc-to-file`, `imgc-to-loop`: the same from a compressed qcow2 (random data barely
//!   compresses, so most of its clusters are stored uncompressed),
//! - `img-from-vol`: raw volume -> new qcow2 (Cinder's upload to image);
//!
//! and from the text4g fixture (compressible text, as in cloud images):
//! - `imgz-to-file`, `imgz-to-loop`: compressed qcow2 whose clusters really are compressed.

use std::path::{Path, PathBuf};

use super::peers::{fio_reference, qemu_img_convert, sync_file};
use super::{
    arg, discard_and_stamp, os, output_of, reference_unchecked, stamped_loop, Case, CaseInfo, Ctx,
    Role, Tool,
};
use crate::error::Result;
use crate::fixture::{self, Fill, Fixture, FixtureSpec};
use crate::runner;
use crate::units;
use crate::util::{self, LoopDevice};
use crate::verify::{self, Validation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToFile,
    ToLoop,
    FromVolume,
}

pub struct ImageCase {
    name: String,
    dir: Direction,
    raw_spec: FixtureSpec,
    reference_spec: FixtureSpec,
    raw: Option<Fixture>,
    reference_src: Option<PathBuf>,
    qcow2: PathBuf,
    /// The source image is compressed (`qemu-img convert -c`).
    compressed: bool,
    /// Destination file (raw or qcow2), or the loop device's backing file.
    dst: PathBuf,
    fio_dst: PathBuf,
    dev: Option<LoopDevice>,
}

impl ImageCase {
    pub fn new(
        name: &str,
        dir: Direction,
        compressed: bool,
        raw_spec: FixtureSpec,
        reference_spec: FixtureSpec,
        work: &Path,
    ) -> Self {
        let ext = match dir {
            Direction::ToFile => "dst.raw",
            Direction::ToLoop => "backing",
            Direction::FromVolume => "dst.qcow2",
        };
        ImageCase {
            name: name.to_string(),
            dir,
            qcow2: work.join(format!(
                "{}{}.qcow2",
                raw_spec.name,
                if compressed { "-c" } else { "" }
            )),
            compressed,
            dst: work.join(format!("{name}-{}.{ext}", raw_spec.name)),
            fio_dst: work.join(format!("{name}.fio-dst")),
            raw_spec,
            reference_spec,
            raw: None,
            reference_src: None,
            dev: None,
        }
    }

    /// Where the tools write.
    fn target(&self) -> &Path {
        self.dev
            .as_ref()
            .map(|d| d.device.as_path())
            .unwrap_or(&self.dst)
    }
}

impl Case for ImageCase {
    fn name(&self) -> &str {
        &self.name
    }

    fn setup(&mut self, ctx: &Ctx) -> Result<CaseInfo> {
        let raw = fixture::ensure(&ctx.dir, &self.raw_spec)?;
        let reference = fixture::ensure(&ctx.dir, &self.reference_spec)?;
        self.reference_src = Some(reference.path);
        let mut notes = vec![format!(
            "MB/s = allocated data of {} ({}) / median time",
            raw.path.display(),
            units::bytes(raw.data_bytes())
        )];
        if self.dir != Direction::FromVolume {
            let cmd = if self.compressed {
                "qemu-img convert -f raw -O qcow2 -c"
            } else {
                "qemu-img convert -f raw -O qcow2"
            };
            let key = serde_json::json!({ "from": self.raw_spec, "cmd": cmd });
            let src = raw.path.clone();
            let timeout = ctx.timeout;
            let compressed = self.compressed;
            fixture::ensure_derived(&self.qcow2, &key, |tmp| {
                let opts: &[&str] = if compressed { &["-c"] } else { &[] };
                let argv = qemu_img_convert("raw", "qcow2", opts, &src, tmp);
                runner::run_helper(&argv, timeout).map(|_| ())
            })?;
            notes.push(format!(
                "source image {} ({cmd} of the raw fixture, {} data; {} allocated)",
                self.qcow2.display(),
                match self.raw_spec.fill {
                    Fill::Random => "random",
                    Fill::Text => "compressible text",
                },
                units::bytes(util::allocated(&self.qcow2)?)
            ));
        }
        if self.dir == Direction::ToLoop {
            self.dev = Some(stamped_loop(
                ctx,
                &self.name,
                &self.dst,
                self.raw_spec.logical,
                ", so holes must really be zeroed",
                &mut notes,
            )?);
        }
        let info = CaseInfo::with_source(
            "image",
            self.raw_spec.logical,
            raw.data_bytes(),
            &raw.path,
            self.dir == Direction::ToFile,
            notes,
        )?;
        self.raw = Some(raw);
        Ok(info)
    }

    fn tools(&self, ctx: &Ctx) -> Vec<Tool> {
        let Some(raw) = &self.raw else {
            return Vec::new();
        };
        let data = raw.data_bytes();
        let t = self.target().to_path_buf();
        let fio_dst = if self.dev.is_some() {
            &t
        } else {
            &self.fio_dst
        };
        let reference = fio_reference(
            &[(self.reference_src.as_deref().unwrap_or(&raw.path), data)],
            &[(fio_dst, data)],
        );
        // Declare the format, as Cinder passes `-f qcow2` to qemu-img.
        let mut to_volume = vec![os(&self.qcow2), os(&t)];
        if ctx.ember.has_flag(&["image", "to-volume"], "--format") {
            to_volume.extend([arg("--format"), arg("qcow2")]);
        }
        let mut tools = match self.dir {
            Direction::ToFile | Direction::ToLoop => vec![
                ctx.ember
                    .tool("ember image to-volume", &["image", "to-volume"], to_volume),
                Tool::new(
                    "qemu-img -t none",
                    Role::Peer,
                    vec![qemu_img_convert(
                        "qcow2",
                        "raw",
                        &["-t", "none", "-W"],
                        &self.qcow2,
                        &t,
                    )],
                ),
            ],
            Direction::FromVolume => vec![
                ctx.ember.tool(
                    "ember image from-volume",
                    &["image", "from-volume"],
                    vec![os(&raw.path), os(&t), arg("--format"), arg("qcow2")],
                ),
                Tool::new(
                    "qemu-img",
                    Role::Peer,
                    vec![
                        qemu_img_convert("raw", "qcow2", &[], &raw.path, &t),
                        sync_file(&t),
                    ],
                ),
            ],
        };
        tools.extend(reference);
        tools
    }

    fn before_run(&self, tool: &Tool) -> Result<()> {
        if let Some(dev) = &self.dev {
            discard_and_stamp(dev, self.raw_spec.logical)
        } else {
            util::remove_if_exists(output_of(tool, &self.dst, &self.fio_dst))
        }
    }

    fn validate(&self, tool: &Tool, ctx: &Ctx) -> Result<Validation> {
        if let Some(v) = reference_unchecked(tool) {
            return Ok(v);
        }
        let Some(raw) = &self.raw else {
            return Ok(Validation::NotChecked {
                reason: "no source".into(),
            });
        };
        match self.dir {
            Direction::ToFile => verify::compare(&raw.path, &self.dst, self.raw_spec.logical, true),
            Direction::ToLoop => {
                util::drop_caches();
                verify::compare(&raw.path, self.target(), self.raw_spec.logical, false)
            }
            Direction::FromVolume => Ok(verify::compare_qcow2(&raw.path, &self.dst, ctx.timeout)),
        }
    }

    fn dst_file(&self, tool: &Tool) -> Option<PathBuf> {
        (tool.role != Role::Reference).then(|| self.dst.clone())
    }

    fn after_run(&self, tool: &Tool) -> Result<()> {
        if self.dev.is_some() {
            Ok(())
        } else {
            util::remove_if_exists(output_of(tool, &self.dst, &self.fio_dst))
        }
    }

    fn teardown(&mut self) {
        self.dev = None;
        let _ = util::remove_if_exists(&self.dst);
        let _ = util::remove_if_exists(&self.fio_dst);
    }
}
