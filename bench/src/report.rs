//! Results: per-tool records, medians and ratios, the aligned table. The goal lines are in
//! `goals`.

use serde::Serialize;

use crate::cases::{CaseInfo, Role, Tool};
use crate::units::{bytes, MB};
use crate::verify::Validation;

/// Decimal gigabyte of the CPU-per-GB figures.
const GB: f64 = 1e9;

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run: usize,
    pub seconds: f64,
    pub max_rss_kib: u64,
    /// CPU time of the run (`ru_utime`, `ru_stime` from `wait4`, summed over its steps and
    /// jobs), seconds.
    pub user_seconds: f64,
    pub sys_seconds: f64,
    /// Several jobs at once: each job's finishing time from the common start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_seconds: Option<Vec<f64>>,
    pub dst_allocated: Option<u64>,
    /// Destination bytes in SEEK_DATA ranges.
    pub dst_mapped: Option<u64>,
    /// "ok", "timeout", "failed: ..."
    pub status: String,
    /// Ember's `--json` summary, when it printed one (several jobs: one per job; fio: its
    /// per-job figures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ember_summary: Option<serde_json::Value>,
    /// fio only: wall time of the fio process (`seconds` is fio's job time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fio_wall_seconds: Option<f64>,
    /// This run's output checked against the source (every successful run is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
}

impl RunRecord {
    fn cpu_seconds(&self) -> f64 {
        self.user_seconds + self.sys_seconds
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ToolResult {
    pub name: String,
    pub role: Role,
    pub command: String,
    /// "ok", "skipped", "timeout", "failed", "differs"
    pub status: String,
    pub note: Option<String>,
    /// Jobs started at once (1 but in the concurrency case).
    pub jobs: usize,
    /// Bytes this tool moves, when not the case's data bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The rate limit each job was given (bytes/s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u64>,
    pub runs: Vec<RunRecord>,
    pub median_seconds: Option<f64>,
    pub mb_per_s: Option<f64>,
    /// Time per byte against ember's: (this tool's median / its bytes) / (ember's median / its
    /// bytes); the plain time ratio when both move the same bytes (> 1: ember is faster).
    pub time_vs_ember: Option<f64>,
    /// Time per byte against the best peer's (the fastest validated peer), as above.
    pub time_vs_best_peer: Option<f64>,
    /// Median over the successful runs of user + sys CPU seconds.
    pub median_cpu_seconds: Option<f64>,
    pub median_user_seconds: Option<f64>,
    pub median_sys_seconds: Option<f64>,
    /// median_cpu_seconds per 10^9 bytes moved.
    pub cpu_seconds_per_gb: Option<f64>,
    /// cpu_seconds_per_gb / that of the validated peer with the least CPU per GB.
    pub cpu_vs_best_peer: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    /// Largest destination allocation seen over the runs (st_blocks * 512).
    pub dst_allocated: Option<u64>,
    /// Largest destination SEEK_DATA-mapped bytes seen over the runs.
    pub dst_mapped: Option<u64>,
    /// Several jobs: median over the runs of (last finishing time / first finishing time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evenness: Option<f64>,
    /// With a rate limit: every job's achieved rate (its bytes / its finishing time) in every
    /// successful run, bytes/s.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub job_rates: Vec<f64>,
    /// The verdict over every run (see [`Validation::merge`]).
    pub validation: Option<Validation>,
}

impl ToolResult {
    /// A tool's result before its first run: no runs, no figures, no verdict yet.
    pub fn new(
        name: &str,
        role: Role,
        command: String,
        status: &str,
        note: Option<String>,
    ) -> Self {
        ToolResult {
            name: name.to_owned(),
            role,
            command,
            status: status.to_owned(),
            note,
            jobs: 1,
            bytes: None,
            rate_limit: None,
            runs: Vec::new(),
            median_seconds: None,
            mb_per_s: None,
            time_vs_ember: None,
            time_vs_best_peer: None,
            median_cpu_seconds: None,
            median_user_seconds: None,
            median_sys_seconds: None,
            cpu_seconds_per_gb: None,
            cpu_vs_best_peer: None,
            peak_rss_kib: None,
            dst_allocated: None,
            dst_mapped: None,
            evenness: None,
            job_rates: Vec::new(),
            validation: None,
        }
    }

    /// The result of `tool` before its first run (skipped when the tool is).
    pub fn of(tool: &Tool) -> Self {
        let status = if tool.skip.is_some() { "skipped" } else { "ok" };
        ToolResult {
            jobs: tool.jobs.len().max(1),
            bytes: tool.bytes,
            rate_limit: tool.rate_limit,
            ..ToolResult::new(
                &tool.name,
                tool.role,
                tool.command_line(),
                status,
                tool.skip.clone(),
            )
        }
    }

    pub fn usable(&self) -> bool {
        self.status == "ok" && self.median_seconds.is_some()
    }

    /// Median seconds per byte moved.
    fn seconds_per_byte(&self, case_bytes: u64) -> Option<f64> {
        let b = self.bytes.unwrap_or(case_bytes);
        self.median_seconds
            .filter(|_| b > 0 && self.usable())
            .map(|s| s / b as f64)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub info: Option<CaseInfo>,
    pub error: Option<String>,
    /// Why the case did not run here (not root), when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub tools: Vec<ToolResult>,
}

impl CaseResult {
    pub fn ember(&self) -> Option<&ToolResult> {
        self.tools
            .iter()
            .find(|t| t.role == Role::Ember && t.usable())
    }

    /// The fastest validated peer.
    pub fn best_peer(&self) -> Option<&ToolResult> {
        fastest(&self.tools, Role::Peer)
    }

    /// When every tool of `role` that ran timed out: the shortest time any of them was given
    /// (each took longer than that).
    pub fn all_timed_out(&self, role: Role) -> Option<f64> {
        let ran: Vec<_> = self
            .tools
            .iter()
            .filter(|t| t.role == role && t.status != "skipped")
            .collect();
        if ran.is_empty() || ran.iter().any(|t| t.status != "timeout") {
            return None;
        }
        ran.iter()
            .map(|t| t.runs.iter().map(|r| r.seconds).fold(0.0, f64::max))
            .min_by(f64::total_cmp)
    }

    /// The device reference: the fastest fio configuration.
    pub fn reference(&self) -> Option<&ToolResult> {
        fastest(&self.tools, Role::Reference)
    }

    /// The validated peer with the least CPU per GB.
    pub fn leanest_peer(&self) -> Option<&ToolResult> {
        self.tools
            .iter()
            .filter(|t| t.role == Role::Peer && t.usable() && t.cpu_seconds_per_gb.is_some())
            .min_by(|a, b| a.cpu_seconds_per_gb.total_cmp(&b.cpu_seconds_per_gb))
    }

    /// Bytes the case's MB/s is computed from.
    pub fn data_bytes(&self) -> u64 {
        self.info.as_ref().map_or(0, |i| i.data_bytes)
    }
}

fn fastest(tools: &[ToolResult], role: Role) -> Option<&ToolResult> {
    tools
        .iter()
        .filter(|t| t.role == role && t.usable())
        .min_by(|a, b| a.median_seconds.total_cmp(&b.median_seconds))
}

/// `Option<f64>` ordered with `f64::total_cmp` (None first).
trait TotalCmp {
    fn total_cmp(&self, other: &Self) -> std::cmp::Ordering;
}

impl TotalCmp for Option<f64> {
    fn total_cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            (Some(a), Some(b)) => a.total_cmp(b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        }
    }
}

pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The median of `f` over the successful runs.
fn median_of(runs: &[RunRecord], f: impl Fn(&RunRecord) -> Option<f64>) -> Option<f64> {
    let mut v: Vec<f64> = runs
        .iter()
        .filter(|r| r.status == "ok")
        .filter_map(f)
        .collect();
    median(&mut v)
}

/// Fill medians, MB/s, CPU per GB, evenness, rates and ratios once all runs of a case are in.
pub fn finish_case(c: &mut CaseResult) {
    let data = c.data_bytes();
    for t in &mut c.tools {
        let bytes = t.bytes.unwrap_or(data);
        t.median_seconds = median_of(&t.runs, |r| Some(r.seconds));
        t.mb_per_s = t
            .median_seconds
            .filter(|s| *s > 0.0)
            .map(|s| bytes as f64 / MB / s);
        t.median_cpu_seconds = median_of(&t.runs, |r| Some(r.cpu_seconds()));
        t.median_user_seconds = median_of(&t.runs, |r| Some(r.user_seconds));
        t.median_sys_seconds = median_of(&t.runs, |r| Some(r.sys_seconds));
        t.cpu_seconds_per_gb = t
            .median_cpu_seconds
            .filter(|_| bytes > 0)
            .map(|cpu| cpu / (bytes as f64 / GB));
        t.peak_rss_kib = t.runs.iter().map(|r| r.max_rss_kib).max();
        t.dst_allocated = t.runs.iter().filter_map(|r| r.dst_allocated).max();
        t.dst_mapped = t.runs.iter().filter_map(|r| r.dst_mapped).max();
        t.evenness = median_of(&t.runs, |r| spread(r.job_seconds.as_ref()?));
        if t.rate_limit.is_some() {
            let per_job = bytes as f64 / t.jobs as f64;
            t.job_rates = t
                .runs
                .iter()
                .filter(|r| r.status == "ok")
                .flat_map(|r| r.job_seconds.clone().unwrap_or_else(|| vec![r.seconds]))
                .filter(|s| *s > 0.0)
                .map(|s| per_job / s)
                .collect();
        }
    }
    let per_byte = |t: Option<&ToolResult>| t.and_then(|t| t.seconds_per_byte(data));
    let ember = per_byte(c.ember());
    let best = per_byte(c.best_peer());
    let lean = c.leanest_peer().and_then(|t| t.cpu_seconds_per_gb);
    for t in &mut c.tools {
        let own = t.seconds_per_byte(data);
        let ratio = |base: Option<f64>| match (own, base) {
            (Some(o), Some(b)) if b > 0.0 => Some(o / b),
            _ => None,
        };
        t.time_vs_ember = ratio(ember);
        t.time_vs_best_peer = ratio(best);
        t.cpu_vs_best_peer = match (t.cpu_seconds_per_gb, lean) {
            (Some(o), Some(b)) if b > 0.0 && t.usable() => Some(o / b),
            _ => None,
        };
    }
}

/// Last finishing time / first finishing time of jobs started together.
fn spread(job_seconds: &[f64]) -> Option<f64> {
    let first = job_seconds.iter().copied().min_by(f64::total_cmp)?;
    let last = job_seconds.iter().copied().max_by(f64::total_cmp)?;
    (first > 0.0).then(|| last / first)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// The columns of the table, in order.
const HEADER: [&str; 11] = [
    "tool",
    "median s",
    "MB/s",
    "t/ember",
    "CPU u+s",
    "CPU s/GB",
    "CPU/best",
    "peak RSS",
    "dst alloc",
    "valid",
    "status",
];

fn row(t: &ToolResult, ember: Option<f64>) -> [String; 11] {
    // A timed-out tool took at least the timeout: show that bound.
    let bound =
        (t.status == "timeout").then(|| t.runs.iter().map(|r| r.seconds).fold(0.0, f64::max));
    [
        t.name.clone(),
        match bound {
            Some(b) => format!(">{b:.0}"),
            None => opt(t.median_seconds, |s| format!("{s:.3}")),
        },
        opt(t.mb_per_s, |m| format!("{m:.0}")),
        match (bound, ember) {
            (Some(b), Some(e)) => format!(">{:.0}x", b / e),
            _ => opt(t.time_vs_ember, |r| format!("{r:.2}x")),
        },
        match (t.median_user_seconds, t.median_sys_seconds) {
            (Some(u), Some(s)) => format!("{u:.2}+{s:.2}"),
            _ => "-".into(),
        },
        opt(t.cpu_seconds_per_gb, |c| format!("{c:.3}")),
        opt(t.cpu_vs_best_peer, |r| format!("{r:.2}x")),
        opt(t.peak_rss_kib, |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        opt(t.dst_allocated, bytes),
        t.validation
            .as_ref()
            .map(|v| v.label().to_string())
            .unwrap_or_else(|| "-".into()),
        match &t.note {
            Some(n) if t.status != "ok" => format!("{}: {n}", t.status),
            _ => t.status.clone(),
        },
    ]
}

pub fn print_case(c: &CaseResult, runs: usize) {
    println!();
    match &c.info {
        Some(i) => println!(
            "== {} ({}): logical {}, data {}{}, {} run(s) per tool",
            c.name,
            i.kind,
            bytes(i.logical),
            bytes(i.data_bytes),
            i.src_allocated
                .map(|a| format!(", source allocated {}", bytes(a)))
                .unwrap_or_default(),
            runs
        ),
        None => println!("== {}", c.name),
    }
    if let Some(why) = &c.skipped {
        println!("   case skipped: {why}");
        return;
    }
    if let Some(e) = &c.error {
        println!("   case not run: {e}");
        return;
    }
    let ember = c
        .ember()
        .and_then(|e| e.median_seconds)
        .filter(|e| *e > 0.0);
    let rows: Vec<[String; 11]> = c.tools.iter().map(|t| row(t, ember)).collect();
    let last = HEADER.len() - 1;
    let mut w = HEADER.map(str::len);
    for r in &rows {
        for (i, cell) in r.iter().enumerate().take(last) {
            w[i] = w[i].max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = format!("   {:<w0$}", cells[0], w0 = w[0]);
        for i in 1..last {
            s.push_str(&format!("  {:>wi$}", cells[i], wi = w[i]));
        }
        s.push_str(&format!("  {}", cells[last]));
        println!("{s}");
    };
    line(&HEADER.map(String::from));
    for r in &rows {
        line(r);
    }
    for t in &c.tools {
        if let Some(Validation::Differs { detail }) = &t.validation {
            println!("   !! {} output differs from the source: {detail}", t.name);
        }
    }
    print_reference(c);
    for t in &c.tools {
        print_jobs(t);
    }
    if let Some(i) = &c.info {
        for n in &i.notes {
            println!("   note: {n}");
        }
    }
    println!("   commands:");
    for t in &c.tools {
        if !t.command.is_empty() {
            println!("     {:<w0$}  {}", t.name, t.command, w0 = w[0]);
        }
    }
}

/// `device reference: <best fio configuration> N MB/s (best of K); ember P% of it`.
fn print_reference(c: &CaseResult) {
    let Some(r) = c.reference() else { return };
    let configs = c.tools.iter().filter(|t| t.role == Role::Reference).count();
    let ember = match (c.ember().and_then(|e| e.mb_per_s), r.mb_per_s) {
        (Some(e), Some(f)) if f > 0.0 => format!("; ember {:.0}% of it", 100.0 * e / f),
        _ => String::new(),
    };
    println!(
        "   device reference: {} {} MB/s (best of {configs} fio configurations){ember}",
        r.name,
        opt(r.mb_per_s, |m| format!("{m:.0}")),
    );
}

/// Evenness of a tool that ran several jobs at once, and each job's rate against its limit.
fn print_jobs(t: &ToolResult) {
    if let Some(e) = t.evenness {
        let per_run: Vec<String> = t
            .runs
            .iter()
            .filter(|r| r.status == "ok")
            .filter_map(|r| spread(r.job_seconds.as_ref()?))
            .map(|x| format!("{x:.2}"))
            .collect();
        println!(
            "   evenness {}: last/first finish {e:.2} (median; per run: {})",
            t.name,
            per_run.join(" ")
        );
    }
    if let (Some(limit), false) = (t.rate_limit, t.job_rates.is_empty()) {
        let worst = worst_rate_deviation(t).unwrap_or(0.0);
        let (lo, hi) = t
            .job_rates
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
                (lo.min(*r), hi.max(*r))
            });
        println!(
            "   rate limit {}: {} copies at {:.1}-{:.1} MB/s against a limit of {:.1} MB/s each (worst {:+.1}%)",
            t.name,
            t.job_rates.len(),
            lo / MB,
            hi / MB,
            limit as f64 / MB,
            100.0 * worst
        );
    }
}

/// The achieved rate furthest from the tool's limit, as (rate / limit - 1).
pub fn worst_rate_deviation(t: &ToolResult) -> Option<f64> {
    let limit = t.rate_limit? as f64;
    t.job_rates
        .iter()
        .map(|r| r / limit - 1.0)
        .max_by(|a, b| a.abs().total_cmp(&b.abs()))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A tool with one successful run per entry of `secs` (30 MiB RSS, 0.1 s user + 0.2 s sys
    /// per second of run), validated.
    pub fn tool(name: &str, role: Role, secs: &[f64], status: &str) -> ToolResult {
        ToolResult {
            runs: secs
                .iter()
                .enumerate()
                .map(|(i, s)| RunRecord {
                    run: i + 1,
                    seconds: *s,
                    max_rss_kib: 30 * 1024,
                    user_seconds: 0.1 * s,
                    sys_seconds: 0.2 * s,
                    job_seconds: None,
                    dst_allocated: Some(100),
                    dst_mapped: Some(100),
                    status: if status == "timeout" {
                        "timeout".into()
                    } else {
                        "ok".into()
                    },
                    ember_summary: None,
                    fio_wall_seconds: None,
                    validation: Some(Validation::Identical),
                })
                .collect(),
            validation: Some(Validation::Identical),
            ..ToolResult::new(name, role, String::new(), status, None)
        }
    }

    /// A case of `kind` moving 10^9 bytes, finished.
    pub fn case_of(kind: &'static str, name: &str, tools: Vec<ToolResult>) -> CaseResult {
        let mut c = CaseResult {
            name: name.into(),
            info: Some(CaseInfo {
                kind,
                logical: 8 << 30,
                data_bytes: 1_000_000_000,
                src_allocated: Some(100),
                src_mapped: Some(100),
                alloc_limit: Some(100),
                notes: vec![],
            }),
            error: None,
            skipped: None,
            tools,
        };
        finish_case(&mut c);
        c
    }

    #[test]
    fn medians_cpu_and_ratios() {
        let mut lean = tool("lean", Role::Peer, &[4.0], "ok");
        lean.runs[0].user_seconds = 0.0;
        lean.runs[0].sys_seconds = 0.1;
        let c = case_of(
            "copy",
            "sparse8g",
            vec![
                tool("ember", Role::Ember, &[1.0, 3.0, 2.0], "ok"),
                tool("cp", Role::Peer, &[2.4, 2.0, 2.2], "ok"),
                // A peer that differs is not a contender, however fast.
                {
                    let mut t = tool("bad", Role::Peer, &[0.1], "differs");
                    t.validation = Some(Validation::Differs { detail: "x".into() });
                    t
                },
                tool("dd", Role::Peer, &[300.0], "timeout"),
                lean,
            ],
        );
        let e = c.ember().unwrap();
        assert_eq!(e.median_seconds, Some(2.0));
        assert_eq!(e.mb_per_s, Some(500.0));
        // CPU: median of 0.3 * (1, 3, 2) s for 1 GB.
        assert!((e.median_cpu_seconds.unwrap() - 0.6).abs() < 1e-9);
        assert!((e.cpu_seconds_per_gb.unwrap() - 0.6).abs() < 1e-9);
        assert_eq!(c.leanest_peer().unwrap().name, "lean");
        assert!((e.cpu_vs_best_peer.unwrap() - 6.0).abs() < 1e-9);
        assert!((c.tools[1].time_vs_ember.unwrap() - 1.1).abs() < 1e-9);
        assert_eq!(c.best_peer().unwrap().name, "cp");
        assert!((e.time_vs_best_peer.unwrap() - 2.0 / 2.2).abs() < 1e-9);
        assert_eq!(c.tools[3].time_vs_ember, None, "a timeout has no ratio");
    }

    #[test]
    fn bytes_evenness_and_rates() {
        let mut four = tool("ember x4", Role::Ember, &[4.0, 4.4], "ok");
        four.jobs = 4;
        four.runs[0].job_seconds = Some(vec![3.6, 4.0, 3.8, 3.9]);
        four.runs[1].job_seconds = Some(vec![4.4, 4.0, 4.0, 4.0]);
        let mut single = tool("ember (1 copy)", Role::Ember, &[0.5], "ok");
        single.bytes = Some(250_000_000);
        let mut limited = tool("ember x4 --bps-limit", Role::Ember, &[10.0], "ok");
        limited.jobs = 4;
        limited.rate_limit = Some(25_000_000);
        limited.runs[0].job_seconds = Some(vec![10.0, 9.8, 10.0, 10.4]);
        let c = case_of("concurrent", "concurrent4", vec![four, single, limited]);
        let (four, single, limited) = (&c.tools[0], &c.tools[1], &c.tools[2]);
        // Median of 4.0 / 3.6 and 4.4 / 4.0.
        let want = (4.0 / 3.6 + 1.1) / 2.0;
        assert!((four.evenness.unwrap() - want).abs() < 1e-9);
        // 250 MB in 0.5 s is 500 MB/s, 1 GB in 4.2 s: the single copy is faster per byte.
        assert_eq!(single.mb_per_s, Some(500.0));
        assert!((single.time_vs_ember.unwrap() - (0.5 / 0.25) / 4.2).abs() < 1e-9);
        assert_eq!(limited.job_rates.len(), 4);
        assert!((limited.job_rates[0] - 25_000_000.0).abs() < 1e-6);
        let worst = worst_rate_deviation(limited).unwrap();
        assert!((worst - (250_000_000.0 / 10.4 / 25_000_000.0 - 1.0)).abs() < 1e-9);
    }
}
