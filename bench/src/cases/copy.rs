//! Copy cases: a raw source file to a new raw file (sparse8g, full4g, sparse4t).

use std::path::PathBuf;

use super::{arg, fio_ceiling, os, sync_f, Case, CaseInfo, Ctx, Role, Tool};
use crate::error::Result;
use crate::fixture::{self, Fixture, FixtureSpec};
use crate::util;
use crate::verify::{self, Validation};

pub struct CopyCase {
    name: String,
    spec: FixtureSpec,
    /// Fully allocated fixture the fio ceiling reads when the source is sparse.
    ceiling_spec: FixtureSpec,
    src: Option<Fixture>,
    ceiling_src: Option<PathBuf>,
    dst: PathBuf,
    fio_dst: PathBuf,
}

impl CopyCase {
    pub fn new(
        name: &str,
        spec: FixtureSpec,
        ceiling_spec: FixtureSpec,
        dir: &std::path::Path,
    ) -> Self {
        CopyCase {
            name: name.to_string(),
            dst: dir.join(format!("{}.dst", spec.name)),
            fio_dst: dir.join(format!("{}.fio-dst", spec.name)),
            spec,
            ceiling_spec,
            src: None,
            ceiling_src: None,
        }
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
                crate::report::bytes(data),
                c.path.display()
            ));
            self.ceiling_src = Some(c.path);
        } else {
            notes.push("MB/s = logical size / median time".into());
            self.ceiling_src = Some(src.path.clone());
        }
        let allocated = util::allocated(&src.path)?;
        let mapped = util::mapped(&src.path)?;
        self.src = Some(src);
        Ok(CaseInfo {
            kind: "copy",
            logical: self.spec.logical,
            data_bytes: data,
            src_allocated: Some(allocated),
            src_mapped: Some(mapped),
            alloc_limit: Some(mapped),
            notes,
        })
    }

    fn tools(&self, ctx: &Ctx) -> Vec<Tool> {
        let Some(src) = &self.src else {
            return Vec::new();
        };
        let (s, d) = (&src.path, &self.dst);
        vec![
            ctx.ember.tool("ember", &["copy"], vec![os(s), os(d)]),
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
                    sync_f(d),
                ],
            ),
            Tool::new(
                "cp --sparse",
                Role::Peer,
                vec![
                    vec![arg("cp"), arg("--sparse=always"), os(s), os(d)],
                    sync_f(d),
                ],
            ),
            Tool::new(
                "qemu-img -t none",
                Role::Peer,
                vec![vec![
                    arg("qemu-img"),
                    arg("convert"),
                    arg("-f"),
                    arg("raw"),
                    arg("-O"),
                    arg("raw"),
                    arg("-t"),
                    arg("none"),
                    arg("-W"),
                    os(s),
                    os(d),
                ]],
            ),
            Tool::new(
                "qemu-img buffered",
                Role::Peer,
                vec![
                    vec![
                        arg("qemu-img"),
                        arg("convert"),
                        arg("-f"),
                        arg("raw"),
                        arg("-O"),
                        arg("raw"),
                        arg("-W"),
                        os(s),
                        os(d),
                    ],
                    sync_f(d),
                ],
            ),
            Tool::new(
                "nbdcopy",
                Role::Peer,
                vec![vec![arg("nbdcopy"), os(s), os(d)], sync_f(d)],
            ),
            fio_ceiling(
                Some((self.ceiling_src.as_deref().unwrap_or(s), src.data_bytes())),
                (&self.fio_dst, src.data_bytes()),
            ),
        ]
    }

    fn before_run(&self, tool: &Tool) -> Result<()> {
        util::remove_if_exists(self.out(tool))
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
        verify::compare(src, &self.dst, self.spec.logical, true)
    }

    fn dst_file(&self, tool: &Tool) -> Option<PathBuf> {
        (tool.role != Role::Ceiling).then(|| self.dst.clone())
    }

    fn after_run(&self, tool: &Tool) -> Result<()> {
        util::remove_if_exists(self.out(tool))
    }

    fn teardown(&mut self) {
        let _ = util::remove_if_exists(&self.dst);
        let _ = util::remove_if_exists(&self.fio_dst);
    }
}
