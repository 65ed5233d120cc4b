//! Copy cases: a raw source file to a new raw file (sparse8g, full4g, sparse4t), or onto a
//! loop device that holds old data (copy-to-loop: a thin or reused volume, where holes must be
//! zeroed and should not be allocated).

use std::path::{Path, PathBuf};

use super::peers::{copy_tools, CopyLineup};
use super::{
    discard_and_stamp, output_of, reference_unchecked, stamped_loop, Case, CaseInfo, Ctx, Role,
    Tool,
};
use crate::error::Result;

use crate::fixture::{self, Fixture, FixtureSpec};
use crate::units;
use crate::util::{self, LoopDevice};
use crate::verify::{self, Validation};

pub struct CopyCase {
    name: String,
    kind: &'static str,
    spec: FixtureSpec,
    /// Fully allocated fixture the device reference reads when the source is sparse.
    reference_spec: FixtureSpec,
    src: Option<Fixture>,
    reference_src: Option<PathBuf>,
    /// The destination file, or the loop device's backing file.
    dst: PathBuf,
    fio_dst: PathBuf,
    on_loop: bool,
    dev: Option<LoopDevice>,
    ember_variants: &'static [(&'static str, &'static str)],
    dd_skip: Option<String>,
}

impl CopyCase {
    /// A `copy` case: Ember with and without `--verify` against every peer.
    pub fn new(
        name: &str,
        spec: FixtureSpec,
        reference_spec: FixtureSpec,
        dir: &Path,
        on_loop: bool,
    ) -> Self {
        CopyCase {
            name: name.to_string(),
            kind: "copy",
            dst: if on_loop {
                dir.join(format!("{name}-{}.backing", spec.name))
            } else {
                dir.join(format!("{}.dst", spec.name))
            },
            on_loop,
            dev: None,
            fio_dst: dir.join(format!("{}.fio-dst", spec.name)),
            spec,
            reference_spec,
            src: None,
            reference_src: None,
            ember_variants: &[("ember --verify", "--verify")],
            dd_skip: None,
        }
    }

    /// The same copy, reported as family `kind` with the given Ember variants (see
    /// [`CopyLineup`]), dd left out for `dd_skip`.
    pub fn family(
        self,
        kind: &'static str,
        ember_variants: &'static [(&'static str, &'static str)],
        dd_skip: Option<String>,
    ) -> Self {
        CopyCase {
            kind,
            ember_variants,
            dd_skip,
            ..self
        }
    }

    /// Where the tools write: the new file or the loop device.
    fn target(&self) -> &Path {
        self.dev
            .as_ref()
            .map(|d| d.device.as_path())
            .unwrap_or(&self.dst)
    }

    fn out(&self, tool: &Tool) -> &Path {
        output_of(tool, &self.dst, &self.fio_dst)
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
        if self.spec.stride.is_some() {
            notes.push(format!(
                "MB/s = allocated source data ({}) / median time; the device reference reads the source's own extents and writes them at the same offsets of a new file (fio --rw=read:GAP/write:GAP)",
                units::bytes(data)
            ));
            self.reference_src = Some(src.path.clone());
        } else if data < self.spec.logical {
            let c = fixture::ensure(&ctx.dir, &self.reference_spec)?;
            notes.push(format!(
                "MB/s = allocated source data ({}) / median time; the device reference reads that many bytes of {}",
                units::bytes(data),
                c.path.display()
            ));
            self.reference_src = Some(c.path);
        } else {
            notes.push("MB/s = logical size / median time".into());
            self.reference_src = Some(src.path.clone());
        }
        if let Some(why) = &self.dd_skip {
            notes.push(format!("dd left out: {why}"));
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
        let info =
            CaseInfo::with_source(self.kind, self.spec.logical, data, &src.path, true, notes)?;
        self.src = Some(src);
        Ok(info)
    }

    fn tools(&self, ctx: &Ctx) -> Vec<Tool> {
        let Some(src) = &self.src else {
            return Vec::new();
        };
        let (s, d) = (src.path.as_path(), self.target());
        let reference = (
            self.reference_src.as_deref().unwrap_or(s),
            if self.dev.is_some() { d } else { &self.fio_dst },
            src.data_bytes(),
        );
        copy_tools(
            ctx,
            &CopyLineup {
                src: s,
                dst: d,
                logical: self.spec.logical,
                ember_variants: self.ember_variants,
                dd_skip: self.dd_skip.clone(),
                reference,
                strided: self.spec.stride.map(|stride| (self.spec.ext_min, stride)),
            },
        )
    }

    fn before_run(&self, tool: &Tool) -> Result<()> {
        if let Some(dev) = &self.dev {
            discard_and_stamp(dev, self.spec.logical)
        } else {
            util::remove_if_exists(self.out(tool))
        }
    }

    fn validate(&self, tool: &Tool, _ctx: &Ctx) -> Result<Validation> {
        if let Some(v) = reference_unchecked(tool) {
            return Ok(v);
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
        (tool.role != Role::Reference).then(|| self.dst.clone())
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
