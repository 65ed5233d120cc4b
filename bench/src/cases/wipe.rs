//! Wipe cases (issue 4): zero a 4 GiB target that holds data, on a regular file and on a loop
//! device. Ember's `wipe` against Cinder's `dd if=/dev/zero ... oflag=direct` and
//! `blkdiscard -z`.

use std::path::{Path, PathBuf};

use super::peers::{fio_reference, sync_file};
use super::{arg, os, reference_unchecked, Case, CaseInfo, Ctx, Role, Tool};
use crate::error::Result;
use crate::fixture;
use crate::util::{self, LoopDevice};
use crate::verify::{self, Validation};

pub struct WipeCase {
    name: String,
    on_loop: bool,
    size: u64,
    /// The regular file: the target itself, or the loop device's backing file.
    file: PathBuf,
    dev: Option<LoopDevice>,
}

impl WipeCase {
    pub fn new(name: &str, on_loop: bool, size: u64, dir: &Path) -> Self {
        let suffix = if on_loop { "backing" } else { "target" };
        WipeCase {
            name: name.to_string(),
            on_loop,
            size,
            file: dir.join(format!("{name}-{size}.{suffix}")),
            dev: None,
        }
    }

    /// What the tools write to.
    fn target(&self) -> &Path {
        self.dev
            .as_ref()
            .map(|d| d.device.as_path())
            .unwrap_or(&self.file)
    }
}

impl Case for WipeCase {
    fn name(&self) -> &str {
        &self.name
    }

    fn setup(&mut self, ctx: &Ctx) -> Result<CaseInfo> {
        let mut notes = vec![
            "target pre-filled with non-zero data before every run (untimed); MB/s = target size / median time".to_string(),
        ];
        if self.on_loop {
            let dev = LoopDevice::over_new_sparse(&self.name, ctx.root, &self.file, self.size)?;
            notes.push(format!(
                "{} over {} (losetup --direct-io=on); peers that do not flush get `sync` (fsync) of the device",
                dev.device.display(),
                self.file.display()
            ));
            self.dev = Some(dev);
        }
        Ok(CaseInfo {
            kind: "wipe",
            logical: self.size,
            data_bytes: self.size,
            src_allocated: None,
            src_mapped: None,
            alloc_limit: None,
            notes,
        })
    }

    fn tools(&self, ctx: &Ctx) -> Vec<Tool> {
        let t = self.target();
        let mut v = vec![
            ctx.ember.tool("ember wipe", &["wipe"], vec![os(t)]),
            if ctx.ember.has_flag(&["wipe"], "--method") {
                ctx.ember.tool(
                    "ember wipe -m write",
                    &["wipe"],
                    vec![os(t), arg("--method"), arg("write")],
                )
            } else {
                Tool::skipped(
                    "ember wipe -m write",
                    Role::Ember,
                    "`ember wipe --method` does not exist yet".into(),
                )
            },
            Tool::new(
                "dd (cinder)",
                Role::Peer,
                vec![
                    vec![
                        arg("dd"),
                        arg("if=/dev/zero"),
                        arg(format!("of={}", t.display())),
                        arg(format!("count={}", self.size)),
                        arg("bs=1M"),
                        arg("iflag=count_bytes"),
                        arg("oflag=direct"),
                    ],
                    sync_file(t),
                ],
            ),
        ];
        if self.on_loop {
            v.push(Tool::new(
                "blkdiscard -z",
                Role::Peer,
                vec![vec![arg("blkdiscard"), arg("-z"), os(t)], sync_file(t)],
            ));
        } else {
            v.push(Tool::skipped(
                "blkdiscard -z",
                Role::Peer,
                "blkdiscard works on block devices only".into(),
            ));
        }
        v.extend(fio_reference(&[], &[(t, self.size)]));
        v
    }

    fn before_run(&self, _tool: &Tool) -> Result<()> {
        fixture::prefill(self.target(), self.size, !self.on_loop)
    }

    fn validate(&self, tool: &Tool, _ctx: &Ctx) -> Result<Validation> {
        if let Some(v) = reference_unchecked(tool) {
            return Ok(v);
        }
        // Read what reached the backing store, not stale cached pages.
        util::drop_caches();
        let len = util::len_of(self.target())?;
        if len != self.size {
            return Ok(Validation::Differs {
                detail: format!("target is now {len} bytes, was {}", self.size),
            });
        }
        verify::all_zero(self.target(), self.size)
    }

    fn dst_file(&self, tool: &Tool) -> Option<PathBuf> {
        (tool.role != Role::Reference).then(|| self.file.clone())
    }

    fn after_run(&self, _tool: &Tool) -> Result<()> {
        Ok(())
    }

    fn teardown(&mut self) {
        self.dev = None;
        let _ = util::remove_if_exists(&self.file);
    }
}
