//! The one command runner every backend tool call (lvm2, ...) goes through: an argument vector
//! (never a shell), a fixed environment, a timeout and captured output.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{DriverError, Result};

/// Output of a finished command.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Captured standard output.
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
}

impl Output {
    /// True when the command exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs commands with a fixed environment and timeout.
#[derive(Debug, Clone)]
pub struct Runner {
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
    /// Exit codes retried once more (lvm2 segfaults with 139, Cinder retries it).
    retry_codes: Vec<i32>,
    /// Commands started so far (tests check that bad input starts none).
    calls: Arc<AtomicU64>,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            env: vec![("LC_ALL".into(), "C".into())],
            timeout: Duration::from_secs(120),
            retry_codes: Vec::new(),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Runner {
    /// A runner with `LC_ALL=C` and a 120 s timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an environment variable to every command.
    pub fn env(mut self, key: impl Into<OsString>, val: impl Into<OsString>) -> Self {
        self.env.push((key.into(), val.into()));
        self
    }

    /// Sets the timeout of every command.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Retries a command up to twice more when it exits with `code`.
    pub fn retry_on(mut self, code: i32) -> Self {
        self.retry_codes.push(code);
        self
    }

    /// How many commands this runner (and its clones) started.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Runs `argv` and returns its output whatever its exit code.
    pub fn output(&self, op: &'static str, argv: &[&str]) -> Result<Output> {
        let mut attempt = 0;
        loop {
            let out = self.run_once(op, argv)?;
            match out.code {
                Some(c) if self.retry_codes.contains(&c) && attempt < 2 => {
                    attempt += 1;
                    tracing::warn!(op, code = c, attempt, "command crashed, retrying");
                    thread::sleep(Duration::from_millis(500));
                }
                _ => return Ok(out),
            }
        }
    }

    /// Runs `argv`; a non-zero exit is a [`DriverError::Command`] naming the command.
    pub fn run(&self, op: &'static str, argv: &[&str]) -> Result<Output> {
        let out = self.output(op, argv)?;
        if out.success() {
            Ok(out)
        } else {
            Err(command_error(op, argv, &out))
        }
    }

    fn run_once(&self, op: &'static str, argv: &[&str]) -> Result<Output> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| DriverError::invalid("empty command"))?;
        tracing::debug!(op, command = %argv.join(" "), "running");
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let spawn_err = |source| DriverError::Spawn {
            op,
            command: argv.join(" "),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let mut so = child.stdout.take().expect("stdout is piped");
        let mut se = child.stderr.take().expect("stderr is piped");
        let t_out = thread::spawn(move || {
            let mut s = Vec::new();
            let _ = so.read_to_end(&mut s);
            s
        });
        let t_err = thread::spawn(move || {
            let mut s = Vec::new();
            let _ = se.read_to_end(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait().map_err(spawn_err)? {
                Some(st) => break st,
                None if start.elapsed() > self.timeout => {
                    // The child is ours; killing it by its own handle.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(spawn_err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no exit within {} s, killed", self.timeout.as_secs()),
                    )));
                }
                None => thread::sleep(Duration::from_millis(5)),
            }
        };
        let stdout = t_out.join().unwrap_or_default();
        let stderr = t_err.join().unwrap_or_default();
        Ok(Output {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }
}

/// Finds `tool` on PATH or in the sbin folders (where lvm2 lives).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The error for a command that exited non-zero.
pub fn command_error(op: &'static str, argv: &[&str], out: &Output) -> DriverError {
    DriverError::Command {
        op,
        command: argv.join(" "),
        status: out
            .code
            .map_or_else(|| "a signal".to_owned(), |c| format!("code {c}")),
        stderr: out.stderr.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_codes_without_a_shell() {
        let r = Runner::new();
        let out = r.run("echo", &["echo", "a;b $(x)"]).unwrap();
        assert_eq!(out.stdout, "a;b $(x)\n");
        let err = r.run("false", &["false"]).unwrap_err();
        assert!(err.to_string().contains("code 1"), "{err}");
        let out = r.output("env", &["env"]).unwrap();
        assert!(out.stdout.contains("LC_ALL=C"));
        let err = Runner::new()
            .timeout(Duration::from_millis(100))
            .run("sleep", &["sleep", "5"])
            .unwrap_err();
        assert!(err.to_string().contains("sleep 5"), "{err}");
    }
}
