//! Copy cases: a raw source file to a new raw file (sparse8g, full4g, sparse4t), or onto a
//! loop device that holds old data (copy-to-loop: a thin or reused volume, where holes must be
//! zeroed and should not be allocated).

use std::path::PathBuf;

use super::{
    arg, discard_and_stamp, fio_ceiling, os, qemu_img_convert, stamped_loop, sync_file, Case,
    CaseInfo, Ctx, Role, Tool,
};
use crate::error::Result;

use crate::fixture::{self, Fixture, FixtureSpec};
use crate::units;
use crate::util::{self, LoopDevice};
use crate::verify::{self, Validation};

pub struct CopyCase {
    name: String,
    spec: FixtureSpec,
    /// Fully allocated fixture the fio ceiling reads when the source is sparse.
    ceiling_spec: FixtureSpec,
    src: Option<Fixture>,
    ceiling_src: Option<PathBuf>,
    /// The destination file, or the loop device's backing file.
    dst: PathBuf,
    fio_dst: PathBuf,
    on_loop: bool,
    dev: Option<LoopDevice>,
}

impl CopyCase {
    pub fn new(
        name: &str,
        spec: FixtureSpec,
        ceiling_spec: FixtureSpec,
        dir: &std::path::Path,
        on_loop: bool,
    ) -> Self {
        CopyCase {
            name: name.to_string(),
            dst: if on_loop {
                dir.join(format!("{name}-{}.backing", spec.name))
            } else {
                dir.join(format!("{}.dst", spec.name))
            },
            on_loop,
            dev: None,
            fio_dst: dir.join(format!("{}.fio-dst", spec.name)),
            spec,
            ceiling_spec,
            src: None,
            ceiling_src: None,
        }
    }

    /// Where the tools write: the new file or the loop device.
    fn target(&self) -> &std::path::Path {
        self.dev
            .as_ref()
            .map(|d| d.device.as_path())
            .unwrap_or(&self.dst)
    }

    fn out(&self, tool: &Tool) -> &std::path::Path {
        if tool.role == Role::Ceiling {
            &self.fio_dst
        } else {
            &self.dst
        }
    }
}

impl Case for CopyCase {
    fn name(&self) -> &str {
        &self.name
    }

    fn setup(&mut self, ctx: &Ctx) -> Result<CaseInfo> {
        let src = fixture::ensure(&ctx.dir, &self.spec)?;
        let data = src.data_bytes();
        let mut notes = Vec::new();
        if data < self.spec.logical {
            let c = fixture::ensure(&ctx.dir, &self.ceiling_spec)?;
            notes.push(format!(
                "MB/s = allocated source data ({}) / median time; fio ceiling reads that many bytes of {}",
                units::bytes(data),
                c.path.display()
            ));
            self.ceiling_src = Some(c.path);
        } else {
            notes.push("MB/s = logical size / median time".into());
            self.ceiling_src = Some(src.path.clone());
        }
        if self.on_loop {
            self.dev = Some(stamped_loop(
                ctx,
                &self.name,
                &self.dst,
                self.spec.logical,
                ": a tool that skips holes without zeroing them leaves the stamps and fails validation; dst alloc = backing file",
                &mut notes,
            )?);
        }
        let info = CaseInfo::with_source("copy", self.spec.logical, data, &src.path, true, notes)?;
        self.src = Some(src);
        Ok(info)
    }

    fn tools(&self, ctx: &Ctx) -> Vec<Tool> {
        let Some(src) = &self.src else {
            return Vec::new();
        };
        // d: where the tools write, and what peers that do not flush fsync afterwards.
        let (s, d) = (&src.path, self.target());
        vec![
            ctx.ember.tool("ember", &["copy"], vec![os(s), os(d)]),
            // The cost of end-to-end verification (CRC32C at read time, read-back after the
            // flush): the same copy with --verify.
            ctx.ember.tool(
                "ember --verify",
                &["copy"],
                vec![os(s), os(d), "--verify".into()],
            ),
            Tool::new(
                "dd (cinder)",
                Role::Peer,
                vec![
                    vec![
                        arg("dd"),
                        arg(format!("if={}", s.display())),
                        arg(format!("of={}", d.display())),
                        arg("bs=1M"),
                        arg(format!("count={}", self.spec.logical)),
                        arg("iflag=count_bytes,direct"),
                        arg("oflag=direct"),
                        arg("conv=sparse"),
                    ],
                    sync_file(d),
                ],
            ),
            Tool::new(
                "cp --sparse",
                Role::Peer,
                vec![
                    vec![arg("cp"), arg("--sparse=always"), os(s), os(d)],
                    sync_file(d),
                ],
            ),
            Tool::new(
                "qemu-img -t none",
                Role::Peer,
                vec![qemu_img_convert("raw", "raw", &["-t", "none", "-W"], s, d)],
            ),
            Tool::new(
                "qemu-img buffered",
                Role::Peer,
                vec![qemu_img_convert("raw", "raw", &["-W"], s, d), sync_file(d)],
            ),
            Tool::new(
                "nbdcopy",
                Role::Peer,
                vec![vec![arg("nbdcopy"), os(s), os(d)], sync_file(d)],
            ),
            fio_ceiling(
                Some((self.ceiling_src.as_deref().unwrap_or(s), src.data_bytes())),
                (
                    if self.dev.is_some() { d } else { &self.fio_dst },
                    src.data_bytes(),
                ),
            ),
        ]
    }

    fn before_run(&self, tool: &Tool) -> Result<()> {
        if let Some(dev) = &self.dev {
            discard_and_stamp(dev, self.spec.logical)
        } else {
            util::remove_if_exists(self.out(tool))
        }
    }

    fn validate(&self, tool: &Tool, _ctx: &Ctx) -> Result<Validation> {
        if tool.role == Role::Ceiling {
            return Ok(Validation::NotChecked {
                reason: "device ceiling".into(),
            });
        }
        let src = self
            .src
            .as_ref()
            .map(|f| f.path.as_path())
            .unwrap_or(self.dst.as_path());
        if self.dev.is_some() {
            util::drop_caches();
        }
        verify::compare(src, self.target(), self.spec.logical, self.dev.is_none())
    }

    fn dst_file(&self, tool: &Tool) -> Option<PathBuf> {
        (tool.role != Role::Ceiling).then(|| self.dst.clone())
    }

    fn after_run(&self, tool: &Tool) -> Result<()> {
        if self.dev.is_some() {
            return Ok(());
        }
        util::remove_if_exists(self.out(tool))
    }

    fn teardown(&mut self) {
        self.dev = None;
        let _ = util::remove_if_exists(&self.dst);
        let _ = util::remove_if_exists(&self.fio_dst);
    }
}
