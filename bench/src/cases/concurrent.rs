//! Concurrency family (issue 17): several copies at once, as a Cinder host migrating several
//! volumes does. `concurrent4`: 4 different fully allocated 1 GiB volumes (quick: 64 MiB) ->
//! 4 new files, on the work dir's disk.
//!
//! | tool | what runs |
//! |---|---|
//! | `ember x4` | 4 `ember copy` started together |
//! | `qemu-img -t none x4`, `qemu-img buffered x4` | 4 `qemu-img convert` started together |
//! | `ember (1 copy)` | the first volume alone: the single-copy rate, for reference |
//! | `ember x4 --bps-limit` | the 4 copies again, each with `--bps-limit RATE`: each copy's achieved rate (its volume / its own wall time) is checked against RATE |
//! | device reference | fio with 4 readers and 4 writers of the same bytes, started together |
//!
//! MB/s is the aggregate: all bytes moved / the time until the last copy finished. The report
//! adds each tool's evenness: every copy's finishing time over the first one's.

use std::path::{Path, PathBuf};

use super::peers::{fio_reference, qemu_img_convert, sync_file};
use super::{arg, os, reference_unchecked, Case, CaseInfo, Ctx, Role, Scale, Tool};
use crate::error::Result;
use crate::fixture::{self, Fixture, FixtureSpec};
use crate::units::{self, GIB, MIB};
use crate::util;
use crate::verify::{self, Validation};

pub const CASES: [&str; 1] = ["concurrent4"];

const COPIES: usize = 4;

impl Scale {
    /// Volume `i` of the concurrency case: fully allocated, its own seed.
    fn volume(self, i: usize) -> FixtureSpec {
        let size = match self {
            Scale::Full => GIB,
            Scale::Quick => 64 * MIB,
        };
        FixtureSpec::full(
            format!("vol{}{}", i + 1, self.suffix()),
            size,
            0x17_0010 + i as u64,
        )
    }

    /// The per-copy limit of `ember x4 --bps-limit` unless `--bps-limit` says otherwise: low
    /// enough that 4 limited copies stay well under the disk's rate, high enough that a copy
    /// takes long (16 s; quick: 4 s) next to its start-up.
    pub fn bps_limit(self) -> u64 {
        match self {
            Scale::Full => 64 * MIB,
            Scale::Quick => 16 * MIB,
        }
    }
}

pub struct ConcurrentCase {
    name: String,
    specs: Vec<FixtureSpec>,
    srcs: Vec<Fixture>,
    dsts: Vec<PathBuf>,
    fio_dsts: Vec<PathBuf>,
    bps_limit: u64,
}

impl ConcurrentCase {
    pub fn new(name: &str, scale: Scale, dir: &Path, bps_limit: u64) -> Self {
        let specs: Vec<FixtureSpec> = (0..COPIES).map(|i| scale.volume(i)).collect();
        ConcurrentCase {
            name: name.to_string(),
            dsts: specs
                .iter()
                .map(|s| dir.join(format!("{}.dst", s.name)))
                .collect(),
            fio_dsts: specs
                .iter()
                .map(|s| dir.join(format!("{}.fio-dst", s.name)))
                .collect(),
            specs,
            srcs: Vec::new(),
            bps_limit,
        }
    }

    /// One job per volume, made by `job(name, source, destination)`, started together.
    fn together(&self, name: &str, job: impl Fn(&str, &Path, &Path) -> Tool) -> Tool {
        let parts = self
            .srcs
            .iter()
            .zip(&self.dsts)
            .map(|(s, d)| job(name, &s.path, d))
            .collect();
        Tool::concurrent(name, parts)
    }

    fn outputs(&self, tool: &Tool) -> &[PathBuf] {
        if tool.role == Role::Reference {
            &self.fio_dsts
        } else {
            &self.dsts
        }
    }

    fn remove_outputs(&self, tool: &Tool) -> Result<()> {
        self.outputs(tool)
            .iter()
            .try_for_each(|p| util::remove_if_exists(p))
    }
}

impl Case for ConcurrentCase {
    fn name(&self) -> &str {
        &self.name
    }

    fn setup(&mut self, ctx: &Ctx) -> Result<CaseInfo> {
        self.srcs = self
            .specs
            .iter()
            .map(|s| fixture::ensure(&ctx.dir, s))
            .collect::<Result<_>>()?;
        let volume = self.specs[0].logical;
        let total = volume * COPIES as u64;
        let notes = vec![
            format!(
                "{COPIES} copies of different {} volumes at once; MB/s = all {} / time until the last copy finished; `ember (1 copy)`: the first volume alone",
                units::bytes(volume),
                units::bytes(total)
            ),
            format!(
                "`ember x4 --bps-limit`: each copy limited to {}/s; its rate = its volume / its own wall time",
                units::bytes(self.bps_limit)
            ),
        ];
        Ok(CaseInfo {
            kind: "concurrent",
            logical: total,
            data_bytes: total,
            src_allocated: None,
            src_mapped: None,
            alloc_limit: None,
            notes,
        })
    }

    fn tools(&self, ctx: &Ctx) -> Vec<Tool> {
        if self.srcs.is_empty() {
            return Vec::new();
        }
        let ember =
            |name: &str, s: &Path, d: &Path| ctx.ember.tool(name, &["copy"], vec![os(s), os(d)]);
        let limit = self.bps_limit;
        let limited = if ctx.ember.has_flag(&["copy"], "--bps-limit") {
            let mut t = self.together("ember x4 --bps-limit", |name, s, d| {
                ctx.ember.tool(
                    name,
                    &["copy"],
                    vec![os(s), os(d), arg("--bps-limit"), arg(limit.to_string())],
                )
            });
            t.rate_limit = Some(limit);
            t
        } else {
            Tool::skipped(
                "ember x4 --bps-limit",
                Role::Ember,
                "`ember copy --bps-limit` does not exist yet".into(),
            )
        };
        let mut single = ember("ember (1 copy)", &self.srcs[0].path, &self.dsts[0]);
        single.bytes = Some(self.specs[0].logical);
        let mut tools = vec![
            self.together("ember x4", ember),
            self.together("qemu-img -t none x4", |name, s, d| {
                let argv = qemu_img_convert("raw", "raw", &["-t", "none", "-W"], s, d);
                Tool::new(name, Role::Peer, vec![argv])
            }),
            self.together("qemu-img buffered x4", |name, s, d| {
                let argv = qemu_img_convert("raw", "raw", &["-W"], s, d);
                Tool::new(name, Role::Peer, vec![argv, sync_file(d)])
            }),
            single,
            limited,
        ];
        let reads: Vec<(&Path, u64)> = self
            .srcs
            .iter()
            .map(|f| (f.path.as_path(), f.data_bytes()))
            .collect();
        let writes: Vec<(&Path, u64)> = self
            .fio_dsts
            .iter()
            .zip(&self.srcs)
            .map(|(p, f)| (p.as_path(), f.data_bytes()))
            .collect();
        tools.extend(fio_reference(&reads, &writes));
        tools
    }

    fn before_run(&self, tool: &Tool) -> Result<()> {
        self.remove_outputs(tool)
    }

    fn validate(&self, tool: &Tool, _ctx: &Ctx) -> Result<Validation> {
        if let Some(v) = reference_unchecked(tool) {
            return Ok(v);
        }
        // Each job wrote one volume (the single copy: the first).
        for (i, (src, dst)) in self.srcs.iter().zip(&self.dsts).enumerate() {
            if i >= tool.jobs.len() {
                break;
            }
            let v = verify::compare(&src.path, dst, self.specs[i].logical, true)?;
            if let Validation::Differs { detail } = v {
                return Ok(Validation::Differs {
                    detail: format!("copy {}: {detail}", i + 1),
                });
            }
        }
        Ok(Validation::Identical)
    }

    fn dst_file(&self, _tool: &Tool) -> Option<PathBuf> {
        None
    }

    fn after_run(&self, tool: &Tool) -> Result<()> {
        self.remove_outputs(tool)
    }

    fn teardown(&mut self) {
        for p in self.dsts.iter().chain(&self.fio_dsts) {
            let _ = util::remove_if_exists(p);
        }
    }
}
