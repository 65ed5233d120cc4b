//! Runs a tool's command sequence with a timeout, timing it and collecting peak RSS.
//!
//! Each command is started with `std::process::Command` (argument vectors, no shell) as the
//! leader of a new process group. The harness blocks in `waitid(WNOWAIT)` for the exit (precise
//! wall time), then reaps with `wait4` to read `ru_maxrss`. A watchdog thread kills the whole
//! process group when the deadline passes; it can only do so while the child is not yet reaped,
//! so a recycled pid is never signalled.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::sys::{self, ExitKind};

/// How a command sequence ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    Ok,
    /// Step `step` (0-based) exited non-zero or was killed by a signal.
    Failed {
        step: usize,
        detail: String,
    },
    TimedOut {
        step: usize,
    },
    /// The harness got SIGINT/SIGTERM; the tool's process group was killed.
    Interrupted {
        step: usize,
    },
    SpawnFailed {
        step: usize,
        detail: String,
    },
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: RunStatus,
    /// Wall time from the first spawn to the exit of the last step.
    pub seconds: f64,
    /// Maximum `ru_maxrss` over all steps (KiB).
    pub max_rss_kib: u64,
    /// CPU time summed over all steps (`ru_utime`, `ru_stime`), seconds.
    pub user_seconds: f64,
    pub sys_seconds: f64,
    /// Standard output of the first step (ember's `--json` summary).
    pub stdout: String,
}

impl Outcome {
    fn new() -> Self {
        Outcome {
            status: RunStatus::Ok,
            seconds: 0.0,
            max_rss_kib: 0,
            user_seconds: 0.0,
            sys_seconds: 0.0,
            stdout: String::new(),
        }
    }

    /// Several jobs' outcomes as one: the first failure, the last finish, the largest peak RSS,
    /// the CPU time of all, the first job's output.
    pub fn combine(outs: &[Outcome]) -> Self {
        let mut all = outs.first().cloned().unwrap_or_else(Outcome::new);
        for o in outs.iter().skip(1) {
            if all.status == RunStatus::Ok {
                all.status = o.status.clone();
            }
            all.seconds = all.seconds.max(o.seconds);
            all.max_rss_kib = all.max_rss_kib.max(o.max_rss_kib);
            all.user_seconds += o.user_seconds;
            all.sys_seconds += o.sys_seconds;
        }
        all
    }

    fn ended(self, status: RunStatus, seconds: f64) -> Self {
        Outcome {
            status,
            seconds,
            ..self
        }
    }
}

const MAX_CAPTURE: u64 = 1 << 20;

static INTERRUPT: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Route SIGINT/SIGTERM to a flag: the running tool's process group is killed (it is not in the
/// terminal's foreground group), and the harness stops after tearing the case down, so no loop
/// device or destination is left behind.
pub fn install_interrupt_handler() {
    let flag = INTERRUPT.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the harness cleans up ends it for good.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(flag));
        let _ = signal_hook::flag::register(sig, Arc::clone(flag));
    }
}

pub fn interrupted() -> bool {
    INTERRUPT.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(r) = r {
            let _ = r.take(MAX_CAPTURE).read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    })
}

fn tail(s: &str, n: usize) -> String {
    let t = s.trim();
    let start = t.char_indices().rev().nth(n).map(|(i, _)| i).unwrap_or(0);
    t[start..].replace('\n', " | ")
}

/// Run `steps` one after another (stopping at the first failure) within `timeout` overall.
/// SIGINT/SIGTERM to the harness kills them.
pub fn run_steps(steps: &[Vec<OsString>], timeout: Duration) -> Outcome {
    run(steps, timeout, true)
}

fn run(steps: &[Vec<OsString>], timeout: Duration, interruptible: bool) -> Outcome {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut acc = Outcome::new();
    for (i, argv) in steps.iter().enumerate() {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        sys::spawn_with_fork(&mut cmd);
        sys::trim_heap();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let status = RunStatus::SpawnFailed {
                    step: i,
                    detail: format!("{}: {e}", argv[0].to_string_lossy()),
                };
                return acc.ended(status, start.elapsed().as_secs_f64());
            }
        };
        let pid = child.id();
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());

        // done == true once the harness has seen the exit; the watchdog kills only before that.
        let state = Arc::new((Mutex::new((false, false)), Condvar::new()));
        let remaining = deadline.saturating_duration_since(Instant::now());
        let wd_state = Arc::clone(&state);
        let watchdog = thread::spawn(move || {
            let (lock, cv) = &*wd_state;
            let until = Instant::now() + remaining;
            let mut guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if guard.0 {
                    return;
                }
                let now = Instant::now();
                if now >= until || (interruptible && interrupted()) {
                    sys::kill_group(pid);
                    guard.1 = true;
                    return;
                }
                let slice = (until - now).min(Duration::from_millis(100));
                guard = cv
                    .wait_timeout(guard, slice)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        });
        let waited = sys::wait_exited_keep_zombie(pid);
        let elapsed = start.elapsed().as_secs_f64();
        let timed_out = {
            let (lock, cv) = &*state;
            let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
            g.0 = true;
            cv.notify_all();
            g.1
        };
        let _ = watchdog.join();
        // The group may still hold processes that outlived the leader after a kill.
        if timed_out {
            sys::kill_group(pid);
        }
        let reaped = match waited.and_then(|()| sys::reap(pid)) {
            Ok(r) => r,
            Err(e) => {
                let status = RunStatus::Failed {
                    step: i,
                    detail: format!("wait failed: {e}"),
                };
                return acc.ended(status, elapsed);
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        acc.max_rss_kib = acc.max_rss_kib.max(reaped.max_rss_kib);
        acc.user_seconds += reaped.user_seconds;
        acc.sys_seconds += reaped.sys_seconds;
        if i == 0 {
            acc.stdout = stdout;
        }
        let status = if timed_out && interruptible && interrupted() {
            Some(RunStatus::Interrupted { step: i })
        } else if timed_out {
            Some(RunStatus::TimedOut { step: i })
        } else {
            match reaped.exit {
                ExitKind::Code(0) => None,
                ExitKind::Code(c) => Some(RunStatus::Failed {
                    step: i,
                    detail: format!("exit {c}: {}", tail(&stderr, 300)),
                }),
                ExitKind::Signal(s) => Some(RunStatus::Failed {
                    step: i,
                    detail: format!("signal {s}: {}", tail(&stderr, 300)),
                }),
            }
        };
        if let Some(status) = status {
            return acc.ended(status, elapsed);
        }
        acc.seconds = elapsed;
    }
    acc
}

/// Run several step sequences at once, one thread each, released together, each within
/// `timeout`. Each outcome's `seconds` is its finishing time counted from the common start.
pub fn run_concurrent(jobs: &[Vec<Vec<OsString>>], timeout: Duration) -> Vec<Outcome> {
    let gate = Arc::new(Barrier::new(jobs.len() + 1));
    let handles: Vec<_> = jobs
        .iter()
        .map(|steps| {
            let (gate, steps) = (Arc::clone(&gate), steps.clone());
            thread::spawn(move || {
                gate.wait();
                let started = Instant::now();
                (started, run(&steps, timeout, true))
            })
        })
        .collect();
    let start = Instant::now();
    gate.wait();
    handles
        .into_iter()
        .map(|h| match h.join() {
            Ok((started, o)) => {
                let seconds = started.duration_since(start).as_secs_f64() + o.seconds;
                Outcome { seconds, ..o }
            }
            Err(_) => Outcome::new().ended(
                RunStatus::SpawnFailed {
                    step: 0,
                    detail: "runner thread panicked".into(),
                },
                start.elapsed().as_secs_f64(),
            ),
        })
        .collect()
}

/// Run one untimed helper command (fixture building, losetup), returning its stdout. Not
/// interruptible: clean-up (`losetup -d`) must still run after SIGINT.
pub fn run_helper(argv: &[OsString], timeout: Duration) -> crate::error::Result<String> {
    let o = run(std::slice::from_ref(&argv.to_vec()), timeout, false);
    match o.status {
        RunStatus::Ok => Ok(o.stdout),
        other => Err(crate::error::BenchError::Command {
            command: render(argv),
            detail: format!("{other:?}"),
        }),
    }
}

/// Render an argument vector for display (quoted where needed). Display only: never executed.
pub fn render(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let s = a.to_string_lossy();
            if s.is_empty()
                || s.chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || "-_=./,:+@%".contains(c)))
            {
                format!("'{}'", s.replace('\'', "'\\''"))
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Render a step sequence as `a && b`.
pub fn render_steps(steps: &[Vec<OsString>]) -> String {
    steps
        .iter()
        .map(|s| render(s))
        .collect::<Vec<_>>()
        .join(" && ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn sequence_runs_in_order_and_captures_first_stdout() {
        let o = run_steps(
            &[argv(&["echo", "hello"]), argv(&["true"])],
            Duration::from_secs(10),
        );
        assert_eq!(o.status, RunStatus::Ok);
        assert_eq!(o.stdout.trim(), "hello");
        assert!(o.max_rss_kib > 0);
    }

    #[test]
    fn cpu_time_is_the_childs_summed_over_steps() {
        // 1 GiB through dd's buffer: user time (copying) and system time (reads of /dev/zero).
        let busy = argv(&["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=1024"]);
        let one = run_steps(std::slice::from_ref(&busy), Duration::from_secs(60));
        assert_eq!(one.status, RunStatus::Ok);
        assert!(one.user_seconds + one.sys_seconds > 0.0, "{one:?}");
        let two = run_steps(&[busy.clone(), busy], Duration::from_secs(60));
        assert!(two.sys_seconds + two.user_seconds > 0.0);
        let idle = run_steps(&[argv(&["sleep", "0.2"])], Duration::from_secs(10));
        assert!(idle.seconds >= 0.2 && idle.user_seconds + idle.sys_seconds < idle.seconds);
    }

    #[test]
    fn concurrent_jobs_really_run_at_once() {
        // A reader and a writer of one FIFO each block in open() until the other opens it: run
        // one after the other they would both wait for the timeout.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = run_steps(
            &[vec!["mkfifo".into(), fifo.clone().into()]],
            Duration::from_secs(10),
        );
        assert_eq!(made.status, RunStatus::Ok);
        let jobs = vec![
            vec![vec!["cat".into(), fifo.clone().into()]],
            vec![vec!["cp".into(), "/proc/self/cmdline".into(), fifo.into()]],
            vec![argv(&["sleep", "0.3"])],
        ];
        let out = run_concurrent(&jobs, Duration::from_secs(20));
        assert_eq!(out.len(), 3);
        for o in &out {
            assert_eq!(o.status, RunStatus::Ok, "{o:?}");
        }
        assert!(out[0].stdout.contains("cp"), "cat read cp's command line");
        assert!(out[2].seconds >= 0.3);
    }

    #[test]
    fn failure_stops_the_sequence_and_names_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let o = run_steps(
            &[
                argv(&["true"]),
                argv(&["false"]),
                vec!["touch".into(), marker.clone().into()],
            ],
            Duration::from_secs(10),
        );
        assert!(
            matches!(o.status, RunStatus::Failed { step: 1, .. }),
            "{:?}",
            o.status
        );
        assert!(!marker.exists());
        let o = run_steps(&[argv(&["/nonexistent/tool"])], Duration::from_secs(10));
        assert!(matches!(o.status, RunStatus::SpawnFailed { step: 0, .. }));
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let start = Instant::now();
        let o = run_steps(&[argv(&["sleep", "30"])], Duration::from_millis(300));
        assert_eq!(o.status, RunStatus::TimedOut { step: 0 });
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn peak_rss_is_the_childs_not_the_harness() {
        // The harness's past peak (a large buffer, used and freed, as validation does) must not
        // show up in a small child's ru_maxrss (it would with a vfork-style spawn).
        let _big = crate::BIG_MEMORY.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..2 {
            let big = vec![1u8; 64 << 20];
            std::hint::black_box(&big);
        }
        let o = run_steps(&[argv(&["true"])], Duration::from_secs(10));
        assert!(
            o.max_rss_kib < 16 * 1024,
            "true reported {} KiB",
            o.max_rss_kib
        );
    }
}
