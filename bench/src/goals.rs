//! Goal lines: PASS / FAIL / N/A verdicts printed after the tables and kept in the JSON; never
//! test assertions. The goals of the earlier issues come first (per case), then issue 17's
//! (each over a family of cases).

use serde::Serialize;

use crate::cases::Role;
use crate::report::{worst_rate_deviation, CaseResult};
use crate::units::bytes;
use crate::verify::Validation;

#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    /// PASS, FAIL or N/A
    pub status: &'static str,
    pub detail: String,
}

fn goal(goal: &str, status: &'static str, detail: String) -> Goal {
    Goal {
        goal: goal.to_string(),
        status,
        detail,
    }
}

/// PASS when ember's median time in `case` is at most `max` times the best peer's.
fn ratio_goal(case: Option<&CaseResult>, g: &str, max: f64) -> Goal {
    match case.map(|c| (c.ember(), c.best_peer())) {
        Some((Some(e), Some(p))) => {
            let (es, ps) = (
                e.median_seconds.unwrap_or(0.0),
                p.median_seconds.unwrap_or(0.0),
            );
            goal(
                g,
                if es <= max * ps { "PASS" } else { "FAIL" },
                format!(
                    "ember {es:.3} s vs {} {ps:.3} s (ratio {:.2})",
                    p.name,
                    es / ps
                ),
            )
        }
        Some((None, _)) => goal(g, "N/A", "ember did not run successfully".into()),
        Some((_, None)) => goal(g, "N/A", "no peer ran successfully".into()),
        None => goal(g, "N/A", "case not run".into()),
    }
}

pub fn goals(cases: &[CaseResult]) -> Vec<Goal> {
    let find = |n: &str| cases.iter().find(|c| c.name == n && c.info.is_some());
    let mut out = Vec::new();

    out.push(ratio_goal(
        find("sparse8g"),
        "sparse8g: ember time <= 0.8 x best peer time",
        0.8,
    ));

    let g = "full4g: ember throughput >= 90% of the device reference";
    out.push(match find("full4g").map(|c| (c.ember(), c.reference())) {
        Some((Some(e), Some(f))) => {
            let (em, fm) = (e.mb_per_s.unwrap_or(0.0), f.mb_per_s.unwrap_or(0.0));
            let ok = em >= 0.9 * fm;
            goal(
                g,
                if ok { "PASS" } else { "FAIL" },
                format!(
                    "ember {em:.0} MB/s vs {} {fm:.0} MB/s ({:.0}%)",
                    f.name,
                    100.0 * em / fm
                ),
            )
        }
        Some((None, _)) => goal(g, "N/A", "ember did not run successfully".into()),
        Some((_, None)) => goal(g, "N/A", "the device reference did not run".into()),
        None => goal(g, "N/A", "case not run".into()),
    });

    out.push(ratio_goal(
        find("sparse4t"),
        "sparse4t: ember no slower than the best peer",
        1.0,
    ));

    // Issue 5: images, against qemu-img.
    for case in ["img-to-file", "img-to-loop", "imgc-to-file", "imgc-to-loop"] {
        let g = format!("{case}: ember time <= 0.8 x qemu-img time");
        out.push(ratio_goal(find(case), &g, 0.8));
    }
    out.push(ratio_goal(
        find("img-from-vol"),
        "img-from-vol: ember no slower than qemu-img",
        1.0,
    ));

    let g = "ember peak RSS <= 64 MiB in every case";
    let rss: Vec<(String, u64)> = cases
        .iter()
        .flat_map(|c| {
            c.tools
                .iter()
                .filter(|t| t.role == Role::Ember && !t.runs.is_empty())
                .map(move |t| {
                    (
                        format!("{}/{}", c.name, t.name),
                        t.peak_rss_kib.unwrap_or(0),
                    )
                })
        })
        .collect();
    out.push(if rss.is_empty() {
        goal(g, "N/A", "ember did not run".into())
    } else {
        let worst = rss.iter().max_by_key(|r| r.1).cloned().unwrap_or_default();
        let ok = rss.iter().all(|r| r.1 <= 64 * 1024);
        goal(
            g,
            if ok { "PASS" } else { "FAIL" },
            format!("max {:.1} MiB ({})", worst.1 as f64 / 1024.0, worst.0),
        )
    });

    let g = "ember destination allocation (st_blocks) <= source allocation";
    let mut checked = Vec::new();
    let mut bad = Vec::new();
    for c in cases {
        let Some(info) = &c.info else { continue };
        let (Some(_), Some(limit)) = (info.alloc_limit, info.src_allocated) else {
            continue;
        };
        for t in c.tools.iter().filter(|t| t.role == Role::Ember) {
            if let Some(a) = t.dst_allocated {
                // Mapped (SEEK_DATA) bytes leave out unwritten extents and metadata: shown
                // beside the verdict, which is on real allocation.
                let mapped = match (t.dst_mapped, info.src_mapped) {
                    (Some(d), Some(s)) => {
                        format!(", mapped {:+} KiB", (d as i64 - s as i64) / 1024)
                    }
                    _ => String::new(),
                };
                let delta = (a as i64 - limit as i64) / 1024;
                checked.push(format!("{} {delta:+} KiB{mapped}", c.name));
                if a > limit {
                    bad.push(format!(
                        "{}: {} > {} ({delta:+} KiB{mapped})",
                        c.name,
                        bytes(a),
                        bytes(limit)
                    ));
                }
            }
        }
    }
    out.push(if checked.is_empty() {
        goal(g, "N/A", "ember did not run on a copy case".into())
    } else if bad.is_empty() {
        goal(g, "PASS", format!("checked {}", checked.join(", ")))
    } else {
        goal(g, "FAIL", bad.join("; "))
    });

    let g = "ember output validates in every case";
    let mut seen = Vec::new();
    let mut bad = Vec::new();
    for c in cases {
        for t in c.tools.iter().filter(|t| t.role == Role::Ember) {
            match &t.validation {
                Some(Validation::Identical) => seen.push(format!("{}/{}", c.name, t.name)),
                Some(Validation::Differs { detail }) => {
                    bad.push(format!("{}/{}: {detail}", c.name, t.name))
                }
                _ => {}
            }
        }
    }
    out.push(if !bad.is_empty() {
        goal(g, "FAIL", bad.join("; "))
    } else if seen.is_empty() {
        goal(g, "N/A", "ember output was not validated anywhere".into())
    } else {
        goal(g, "PASS", format!("{} validated", seen.len()))
    });
    out.extend(issue17(cases));
    out
}

/// One goal over every case `pick` selects: `check` judges a case (None: it cannot be judged,
/// e.g. ember or every peer failed there). PASS when every judged case passes; N/A when none
/// could be judged.
fn each_case(
    cases: &[CaseResult],
    g: &str,
    pick: impl Fn(&CaseResult) -> bool,
    check: impl Fn(&CaseResult) -> Option<(bool, String)>,
) -> Goal {
    let judged: Vec<(bool, String)> = cases
        .iter()
        .filter(|c| c.info.is_some() && pick(c))
        .filter_map(|c| check(c).map(|(ok, d)| (ok, format!("{} {d}", c.name))))
        .collect();
    if judged.is_empty() {
        return goal(
            g,
            "N/A",
            "no case to judge (not run, or ember or the peers failed)".into(),
        );
    }
    let status = if judged.iter().all(|j| j.0) {
        "PASS"
    } else {
        "FAIL"
    };
    let detail = judged
        .iter()
        .map(|(ok, d)| if *ok { d.clone() } else { format!("{d} FAIL") })
        .collect::<Vec<_>>()
        .join("; ");
    goal(g, status, detail)
}

/// Ember's time per byte against the best peer's, at most `max`; when every peer timed out,
/// against the time they were given (a bound: each took longer).
fn vs_best_peer(c: &CaseResult, max: f64) -> Option<(bool, String)> {
    let e = c.ember()?;
    if let Some(r) = e.time_vs_best_peer {
        return Some((r <= max, format!("{r:.2}x {}", c.best_peer()?.name)));
    }
    let limit = c.all_timed_out(Role::Peer)?;
    let r = e.median_seconds? / limit;
    Some((
        r <= max,
        format!("<{r:.2}x (every peer timed out after {limit:.0} s)"),
    ))
}

/// The goals of issue 17 (CPU, fast storage, fragmentation, concurrency, device reference);
/// cases are told apart by their family (`CaseInfo::kind`).
fn issue17(cases: &[CaseResult]) -> Vec<Goal> {
    let kind = |c: &CaseResult| c.info.as_ref().map_or("", |i| i.kind);
    let disk = |c: &CaseResult| kind(c) != "fast";
    vec![
        each_case(
            cases,
            "every disk case: ember time <= 1.0 x the best peer's",
            disk,
            |c| vs_best_peer(c, 1.0),
        ),
        each_case(
            cases,
            "every disk case: ember >= 95% of the device reference",
            disk,
            |c| {
                let ember = c.ember()?;
                if let Some(r) = c.reference().and_then(|r| r.mb_per_s).filter(|r| *r > 0.0) {
                    let e = ember.mb_per_s?;
                    return Some((e >= 0.95 * r, format!("{:.0}%", 100.0 * e / r)));
                }
                // Every configuration timed out: the reference took longer than its limit.
                let limit = c.all_timed_out(Role::Reference)?;
                let pct = 100.0 * limit / ember.median_seconds?;
                Some((
                    pct >= 95.0,
                    format!(">{pct:.0}% (every configuration timed out after {limit:.0} s)"),
                ))
            },
        ),
        each_case(
            cases,
            "ember CPU s/GB <= 0.3 x the leanest peer's, every case",
            |_| true,
            |c| {
                let r = c.ember()?.cpu_vs_best_peer?;
                Some((r <= 0.3, format!("{r:.2}x {}", c.leanest_peer()?.name)))
            },
        ),
        each_case(
            cases,
            "fast storage: ember time <= 0.8 x the best peer's",
            |c| kind(c) == "fast",
            |c| vs_best_peer(c, 0.8),
        ),
        each_case(
            cases,
            "fragmentation: ember time <= 0.5 x the best peer's, peak RSS <= 64 MiB",
            |c| kind(c) == "frag",
            |c| {
                let (ok, d) = vs_best_peer(c, 0.5)?;
                let rss = c.ember()?.peak_rss_kib? as f64 / 1024.0;
                Some((ok && rss <= 64.0, format!("{d}, {rss:.1} MiB")))
            },
        ),
        each_case(
            cases,
            "concurrency: 4 ember copies' aggregate rate >= 1.0 x 4 qemu-img's",
            |c| kind(c) == "concurrent",
            |c| {
                let r = c.ember()?.time_vs_best_peer?;
                Some((r <= 1.0, format!("{:.2}x {}", 1.0 / r, c.best_peer()?.name)))
            },
        ),
        each_case(
            cases,
            "concurrency: no ember copy finishes later than 1.3 x the first",
            |c| kind(c) == "concurrent",
            |c| {
                let e = c.ember()?.evenness?;
                Some((e <= 1.3, format!("{e:.2}")))
            },
        ),
        each_case(
            cases,
            "ember --bps-limit: every copy's rate within 5% of the limit",
            |_| true,
            |c| {
                let t = c
                    .tools
                    .iter()
                    .find(|t| t.role == Role::Ember && t.rate_limit.is_some() && t.usable())?;
                let worst = worst_rate_deviation(t)?;
                Some((
                    worst.abs() <= 0.05,
                    format!("{}: worst {:+.1}%", t.name, 100.0 * worst),
                ))
            },
        ),
    ]
}

pub fn print_goals(goals: &[Goal]) {
    println!();
    println!("Goals:");
    for g in goals {
        println!("  {:<4} {}  ({})", g.status, g.goal, g.detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{case_of, tool};

    fn status<'a>(g: &'a [Goal], prefix: &str) -> &'a str {
        g.iter()
            .find(|x| x.goal.starts_with(prefix))
            .unwrap_or_else(|| panic!("no goal {prefix}"))
            .status
    }

    #[test]
    fn per_case_goals() {
        let sparse = case_of(
            "copy",
            "sparse8g",
            vec![
                tool("ember", Role::Ember, &[1.0, 3.0, 2.0], "ok"),
                tool("cp", Role::Peer, &[2.4, 2.0, 2.2], "ok"),
                tool("dd", Role::Peer, &[300.0], "timeout"),
            ],
        );
        let full = case_of(
            "copy",
            "full4g",
            vec![
                tool("ember", Role::Ember, &[1.0], "ok"),
                tool("fio direct 1M qd32", Role::Reference, &[1.2], "ok"),
                tool("fio buffered 1M qd32", Role::Reference, &[0.97], "ok"),
            ],
        );
        let img = |name: &str, ember: f64, qemu: f64| {
            case_of(
                "image",
                name,
                vec![
                    tool("ember image", Role::Ember, &[ember], "ok"),
                    tool("qemu-img", Role::Peer, &[qemu], "ok"),
                ],
            )
        };
        let g = goals(&[
            sparse,
            full,
            img("img-to-loop", 1.0, 1.2),
            img("imgc-to-file", 1.0, 1.3),
            img("img-from-vol", 1.0, 1.1),
        ]);
        // 2.0 > 0.8 * 2.2
        assert_eq!(status(&g, "sparse8g"), "FAIL");
        // 1/1.0 >= 0.9 * 1/0.97: the best fio configuration is the reference.
        assert_eq!(status(&g, "full4g"), "PASS");
        assert_eq!(status(&g, "sparse4t"), "N/A");
        // 1.0 > 0.8 * 1.2; 1.0 <= 0.8 * 1.3; 1.0 <= 1.1
        assert_eq!(status(&g, "img-to-loop"), "FAIL");
        assert_eq!(status(&g, "imgc-to-file"), "PASS");
        assert_eq!(status(&g, "img-to-file"), "N/A");
        assert_eq!(status(&g, "img-from-vol"), "PASS");
        assert_eq!(status(&g, "ember peak RSS"), "PASS");
        assert_eq!(status(&g, "ember destination allocation"), "PASS");
        assert_eq!(status(&g, "ember output validates"), "PASS");
        // 2.0 <= 1.0 * 2.2, and every image case is under 1.0x; full4g has no peer.
        assert_eq!(status(&g, "every disk case: ember time"), "PASS");
        // ember 1000 MB/s vs the reference's 1031: 97%.
        assert_eq!(status(&g, "every disk case: ember >= 95%"), "PASS");
        assert_eq!(status(&g, "fast storage"), "N/A");
    }

    #[test]
    fn family_goals() {
        let frag = |name: &str, ember: f64, rss_mib: u64| {
            let mut e = tool("ember", Role::Ember, &[ember], "ok");
            e.runs[0].max_rss_kib = rss_mib * 1024;
            let mut lean = tool("cp --sparse", Role::Peer, &[4.0], "ok");
            lean.runs[0].user_seconds = 0.1;
            lean.runs[0].sys_seconds = 0.4;
            case_of("frag", name, vec![e, lean])
        };
        let mut four = tool("ember x4", Role::Ember, &[4.0], "ok");
        four.jobs = 4;
        four.runs[0].job_seconds = Some(vec![3.0, 4.0, 3.5, 3.2]);
        let mut limited = tool("ember x4 --bps-limit", Role::Ember, &[10.0], "ok");
        limited.jobs = 4;
        limited.rate_limit = Some(25_000_000);
        limited.runs[0].job_seconds = Some(vec![10.0, 10.1, 9.9, 10.2]);
        let conc = case_of(
            "concurrent",
            "concurrent4",
            vec![
                four,
                tool("qemu-img -t none x4", Role::Peer, &[4.4], "ok"),
                limited,
            ],
        );
        let fast = case_of(
            "fast",
            "fast-full2g",
            vec![
                tool("ember", Role::Ember, &[1.0], "ok"),
                tool("cp --sparse", Role::Peer, &[1.1], "ok"),
            ],
        );
        let g = goals(&[
            frag("frag64k", 1.0, 20),
            frag("frag1m", 1.5, 80),
            conc,
            fast,
        ]);
        // frag64k: 1.0 <= 0.5 * 4.0; frag1m: RSS 80 MiB > 64 MiB.
        let f = g
            .iter()
            .find(|x| x.goal.starts_with("fragmentation"))
            .unwrap();
        assert_eq!(f.status, "FAIL");
        assert!(
            f.detail.contains("frag64k 0.25x cp --sparse, 20.0 MiB;"),
            "{}",
            f.detail
        );
        assert!(f.detail.ends_with("80.0 MiB FAIL"), "{}", f.detail);
        // 4.4 / 4.0 = 1.10x the aggregate; 4.0 / 3.0 = 1.33 > 1.3.
        assert_eq!(status(&g, "concurrency: 4 ember"), "PASS");
        assert_eq!(status(&g, "concurrency: no ember copy"), "FAIL");
        // 1.0 > 0.8 * 1.1
        assert_eq!(status(&g, "fast storage"), "FAIL");
        // 250 MB in 10.2 s: -2.0%.
        assert_eq!(status(&g, "ember --bps-limit"), "PASS");
        // ember 0.3 s CPU/GB vs cp's 0.5 on frag64k: 0.6x.
        assert_eq!(status(&g, "ember CPU"), "FAIL");
    }

    #[test]
    fn peers_that_all_timed_out_bound_the_ratios() {
        let frag = case_of(
            "frag",
            "frag1m",
            vec![
                tool("ember", Role::Ember, &[24.0, 25.0, 23.0], "ok"),
                tool("cp --sparse", Role::Peer, &[150.2], "timeout"),
                tool("qemu-img", Role::Peer, &[151.0], "timeout"),
                tool("dd", Role::Peer, &[], "skipped"),
                tool("fio strided", Role::Reference, &[150.1], "timeout"),
            ],
        );
        let g = goals(&[frag]);
        let f = g
            .iter()
            .find(|x| x.goal.starts_with("fragmentation"))
            .unwrap();
        // 24 / 150.2 = 0.16 <= 0.5, whatever the peers would have taken.
        assert_eq!(f.status, "PASS");
        assert!(
            f.detail
                .contains("<0.16x (every peer timed out after 150 s)"),
            "{}",
            f.detail
        );
        assert_eq!(status(&g, "every disk case: ember time"), "PASS");
        // The reference took over 150.1 s for what Ember did in 24: > 625%.
        assert_eq!(status(&g, "every disk case: ember >= 95%"), "PASS");

        // One peer that finished is judged as usual.
        let mixed = case_of(
            "frag",
            "frag1m",
            vec![
                tool("ember", Role::Ember, &[24.0], "ok"),
                tool("cp --sparse", Role::Peer, &[150.0], "timeout"),
                tool("qemu-img", Role::Peer, &[40.0], "ok"),
            ],
        );
        let g = goals(&[mixed]);
        assert_eq!(status(&g, "fragmentation"), "FAIL");
    }
}
