//! The one command wrapper every tgt/LIO call goes through: argument vectors only (never a
//! shell), a time limit per call, captured output, and secrets redacted from anything that can
//! reach a log or an error (the command line, stdout, stderr).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::chap::Secret;
use crate::error::{Result, TargetError};

/// One argument: plain, or a secret that is passed to the program but shown as `***`.
#[derive(Clone, Debug)]
pub enum Arg {
    Plain(String),
    Secret(Secret),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Plain(s.to_owned())
    }
}

impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Plain(s)
    }
}

impl From<&String> for Arg {
    fn from(s: &String) -> Self {
        Arg::Plain(s.clone())
    }
}

impl From<&std::path::Path> for Arg {
    fn from(p: &std::path::Path) -> Self {
        Arg::Plain(p.to_string_lossy().into_owned())
    }
}

/// Captured result of a command that exited (successfully or not).
#[derive(Debug, Clone)]
pub struct Output {
    pub success: bool,
    pub status: String,
    /// Redacted stdout.
    pub stdout: String,
    /// Redacted stderr.
    pub stderr: String,
    /// Redacted command line.
    pub command: String,
}

impl Output {
    /// Converts a failed run into [`TargetError::Command`].
    pub fn into_error(self) -> TargetError {
        TargetError::Command {
            command: self.command,
            status: self.status,
            stdout: self.stdout,
            stderr: self.stderr.trim().to_owned(),
        }
    }

    /// `Ok(self)` on success, [`TargetError::Command`] otherwise.
    pub fn check(self) -> Result<Self> {
        if self.success {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }
}

/// Runs programs with a time limit. `secrets` are additionally redacted from every output.
#[derive(Debug, Clone)]
pub struct Runner {
    pub timeout: Duration,
}

impl Runner {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// Runs `program args...`, waits at most `self.timeout` (then kills it and returns
    /// [`TargetError::Timeout`]), and returns the captured, redacted output whatever the exit
    /// status. `extra_secrets` are redacted too (e.g. a secret the program may echo).
    pub fn run_unchecked(
        &self,
        program: &str,
        args: &[Arg],
        extra_secrets: &[&Secret],
    ) -> Result<Output> {
        let mut secrets: Vec<&str> = extra_secrets.iter().map(|s| s.expose()).collect();
        for a in args {
            if let Arg::Secret(s) = a {
                secrets.push(s.expose());
            }
        }
        let command = std::iter::once(program.to_owned())
            .chain(args.iter().map(|a| match a {
                Arg::Plain(s) => s.clone(),
                Arg::Secret(_) => "***".to_owned(),
            }))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::debug!(command = %command, "running");
        let program_path = resolve(program);
        let mut child = Command::new(&program_path)
            .args(args.iter().map(|a| match a {
                Arg::Plain(s) => s.as_str(),
                Arg::Secret(s) => s.expose(),
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C")
            .spawn()
            .map_err(|source| TargetError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        let mut out_pipe = child.stdout.take().expect("stdout is piped");
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let out_reader = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out_pipe.read_to_end(&mut v);
            v
        });
        let err_reader = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err_pipe.read_to_end(&mut v);
            v
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() >= self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TargetError::Timeout {
                        command,
                        timeout: self.timeout,
                    });
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(source) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TargetError::Spawn {
                        program: program.to_owned(),
                        source,
                    });
                }
            }
        };
        let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        Ok(Output {
            success: status.success(),
            status: status.to_string(),
            stdout: redact(&stdout, &secrets),
            stderr: redact(&stderr, &secrets),
            command,
        })
    }

    /// Like [`run_unchecked`](Self::run_unchecked) but a non-zero exit is an error.
    pub fn run(&self, program: &str, args: &[Arg]) -> Result<Output> {
        self.run_unchecked(program, args, &[])?.check()
    }
}

/// Replaces every occurrence of each secret in `text` by `***`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s, "***");
    }
    out
}

/// Finds a program on PATH or in the sbin folders (tgt and lvm2 install to /usr/sbin, which is
/// not on every PATH); falls back to the bare name.
fn resolve(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let r = Runner::new(Duration::from_secs(5));
        let out = r
            .run_unchecked(
                "sh",
                &["-c".into(), "echo out; echo err >&2; exit 3".into()],
                &[],
            )
            .unwrap();
        assert!(!out.success);
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert!(matches!(out.check(), Err(TargetError::Command { .. })));
    }

    #[test]
    fn secrets_are_redacted_everywhere() {
        let r = Runner::new(Duration::from_secs(5));
        let secret = Secret::new("Hunter2Hunter2xx");
        let err = r
            .run(
                "sh",
                &[
                    "-c".into(),
                    "echo \"bad password $1\" >&2; exit 1".into(),
                    "sh".into(),
                    Arg::Secret(secret.clone()),
                ],
            )
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("Hunter2"), "{text}");
        assert!(text.contains("bad password ***"), "{text}");
    }

    #[test]
    fn timeout_kills() {
        let r = Runner::new(Duration::from_millis(200));
        let start = Instant::now();
        let err = r.run("sleep", &["10".into()]).unwrap_err();
        assert!(matches!(err, TargetError::Timeout { .. }));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_program() {
        let r = Runner::new(Duration::from_secs(1));
        assert!(matches!(
            r.run("ember-no-such-tool", &[]),
            Err(TargetError::Spawn { .. })
        ));
    }
}
