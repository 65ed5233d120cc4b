//! One case, start to end: setup, the interleaved timed runs of its tools (caches dropped
//! before each), the check of every run's output, the destination's allocation, teardown; then
//! the medians and ratios ([`report::finish_case`]).

use crate::cases::{Case, Ctx, Role, Tool};
use crate::error::BenchError;
use crate::report::{self, CaseResult, RunRecord, ToolResult};
use crate::runner::{self, Outcome, RunStatus};
use crate::util;
use crate::verify::Validation;

fn status_text(s: &RunStatus) -> (String, Option<String>) {
    match s {
        RunStatus::Ok => ("ok".into(), None),
        RunStatus::Interrupted { step } => (
            "interrupted".into(),
            Some(format!("step {} killed", step + 1)),
        ),
        RunStatus::TimedOut { step } => (
            "timeout".into(),
            Some(format!("step {} timed out", step + 1)),
        ),
        RunStatus::Failed { step, detail } => (
            "failed".into(),
            Some(format!("step {}: {detail}", step + 1)),
        ),
        RunStatus::SpawnFailed { step, detail } => (
            "failed".into(),
            Some(format!("step {} did not start: {detail}", step + 1)),
        ),
    }
}

pub fn run_case(case: &mut dyn Case, ctx: &Ctx, runs: usize, drop: bool) -> CaseResult {
    let mut result = CaseResult {
        name: case.name().to_string(),
        info: None,
        error: None,
        skipped: None,
        tools: Vec::new(),
    };
    eprintln!("case {}: setting up", case.name());
    match case.setup(ctx) {
        Ok(info) => result.info = Some(info),
        Err(BenchError::Skipped { reason, .. }) => {
            eprintln!("  skipped: {reason}");
            result.skipped = Some(reason);
            case.teardown();
            return result;
        }
        Err(e) => {
            result.error = Some(error_chain(&e));
            case.teardown();
            return result;
        }
    }
    let tools = case.tools(ctx);
    result.tools = tools.iter().map(ToolResult::of).collect();
    for t in &tools {
        if let Some(why) = &t.skip {
            eprintln!("  skip {}: {why}", t.name);
        }
    }
    // Runs are interleaved (run 1 of every tool, then run 2, ...) so drift hits all alike, and
    // each round starts one tool further down the list, so no tool always runs after the same
    // one: what a tool leaves behind (where a loop device's backing file gets its blocks after
    // the previous tool's writes were discarded) changed the next tool's time by 10-30% here.
    'runs: for run in 1..=runs {
        for i in round_order(tools.len(), run) {
            let (tool, res) = (&tools[i], &mut result.tools[i]);
            if runner::interrupted() {
                break 'runs;
            }
            if tool.skip.is_some() || res.status != "ok" {
                continue;
            }
            if let Err(e) = case.before_run(tool) {
                res.status = "failed".into();
                res.note = Some(format!("preparing the destination: {}", error_chain(&e)));
                continue;
            }
            if drop {
                util::drop_caches();
            }
            // After the cache drop, when free memory has whole 2 MiB pages to give.
            let reserved = match (tool.huge_pages > 0)
                .then(|| util::HugePages::reserve(tool.huge_pages))
                .transpose()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("  {} failed: {}", tool.name, error_chain(&e));
                    res.status = "failed".into();
                    res.note = Some(error_chain(&e));
                    continue;
                }
            };
            eprintln!("  run {run}/{runs}: {}", tool.name);
            let (o, mut rec) = timed_run(tool, run, ctx);
            std::mem::drop(reserved);
            let (status, note) = status_text(&o.status);
            if status == "ok" {
                if let Some(f) = case.dst_file(tool) {
                    match util::allocated(&f).and_then(|a| Ok((a, util::mapped(&f)?))) {
                        Ok((a, m)) => {
                            rec.dst_allocated = Some(a);
                            rec.dst_mapped = Some(m);
                        }
                        Err(e) => eprintln!("  warning: {}", error_chain(&e)),
                    }
                }
                // Every run's output is checked (cheap next to the run): a tool that is right
                // once and wrong later must not pass.
                let checking = std::time::Instant::now();
                let v = case
                    .validate(tool, ctx)
                    .unwrap_or_else(|e| Validation::NotChecked {
                        reason: format!("validation failed to run: {}", error_chain(&e)),
                    });
                let took = checking.elapsed().as_secs_f64();
                if took >= 5.0 {
                    eprintln!("  (checking {}'s output took {took:.0} s)", tool.name);
                }
                rec.validation = Some(v.clone());
                let v = Validation::merge(res.validation.take(), run, v);
                if let Validation::Differs { detail } = &v {
                    eprintln!("  !! {} output differs: {detail}", tool.name);
                    res.status = "differs".into();
                    res.note = Some(detail.clone());
                }
                res.validation = Some(v);
            } else {
                eprintln!(
                    "  {} {status}: {}",
                    tool.name,
                    note.clone().unwrap_or_default()
                );
                res.status = status;
                res.note = note;
            }
            res.runs.push(rec);
            if let Err(e) = case.after_run(tool) {
                eprintln!(
                    "  warning: cleanup after {}: {}",
                    tool.name,
                    error_chain(&e)
                );
            }
        }
    }
    case.teardown();
    report::finish_case(&mut result);
    result
}

/// The tools' indices in round `run` (from 1): the list turned by one place per round.
fn round_order(tools: usize, run: usize) -> impl Iterator<Item = usize> {
    (0..tools).map(move |k| (k + run - 1) % tools)
}

/// One timed run of `tool` (all its jobs at once when it has several): the combined outcome and
/// its record, without validation yet.
fn timed_run(tool: &Tool, run: usize, ctx: &Ctx) -> (Outcome, RunRecord) {
    let outs = match tool.jobs.as_slice() {
        [steps] => vec![runner::run_steps(steps, ctx.timeout)],
        jobs => runner::run_concurrent(jobs, ctx.timeout),
    };
    let o = Outcome::combine(&outs);
    let mut rec = RunRecord {
        run,
        seconds: o.seconds,
        max_rss_kib: o.max_rss_kib,
        user_seconds: o.user_seconds,
        sys_seconds: o.sys_seconds,
        job_seconds: (outs.len() > 1).then(|| outs.iter().map(|j| j.seconds).collect()),
        dst_allocated: None,
        dst_mapped: None,
        status: status_text(&o.status).0,
        ember_summary: None,
        fio_wall_seconds: None,
        validation: None,
    };
    if tool.role == Role::Ember {
        let summary = |j: &Outcome| serde_json::from_str(j.stdout.trim()).ok();
        // Several jobs: one summary per job, in job order (null where none was printed).
        rec.ember_summary = match outs.as_slice() {
            [one] => summary(one),
            many => Some(serde_json::Value::Array(
                many.iter()
                    .map(|j| summary(j).unwrap_or_default())
                    .collect(),
            )),
        };
    } else if tool.role == Role::Reference {
        // fio's time is until its last job finished, from fio's own job runtimes: fio's
        // process start-up and teardown (~0.5-1 s here) are not I/O.
        if let Some((summary, secs)) = fio_summary(&o.stdout) {
            rec.fio_wall_seconds = Some(rec.seconds);
            rec.seconds = secs;
            rec.ember_summary = Some(summary);
        }
    }
    (o, rec)
}

/// fio's per-job figures and the time until the last job finished (seconds).
fn fio_summary(stdout: &str) -> Option<(serde_json::Value, f64)> {
    let start = stdout.find('{')?;
    let v: serde_json::Value = serde_json::from_str(&stdout[start..]).ok()?;
    let jobs = v.get("jobs")?.as_array()?;
    let ms = jobs
        .iter()
        .filter_map(|j| j.get("job_runtime")?.as_u64())
        .max()?;
    let summary = serde_json::Value::Array(
        jobs.iter()
            .map(|j| {
                serde_json::json!({
                    "job": j.get("jobname"),
                    "runtime_ms": j.get("job_runtime"),
                    "read_bw_kib_s": j.pointer("/read/bw"),
                    "write_bw_kib_s": j.pointer("/write/bw"),
                })
            })
            .collect(),
    );
    Some((summary, ms as f64 / 1000.0))
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::round_order;

    #[test]
    fn each_round_starts_one_tool_further_and_runs_every_tool_once() {
        let rounds: Vec<Vec<usize>> = (1..=4).map(|r| round_order(3, r).collect()).collect();
        assert_eq!(
            rounds,
            [vec![0, 1, 2], vec![1, 2, 0], vec![2, 0, 1], vec![0, 1, 2]]
        );
        // Over as many rounds as tools, every tool follows every other one once.
        let mut after = std::collections::HashSet::new();
        for r in &rounds[..3] {
            for w in r.windows(2) {
                after.insert((w[0], w[1]));
            }
        }
        assert_eq!(after.len(), 3, "{after:?}");
    }
}
