//! The thin command layer the storage backends run `lvs`, `qemu-img`, `mkfs.xfs`, … through,
//! behind a trait so that tests can assert every argv and feed canned output.

use std::ffi::OsString;
use std::io;
use std::process::{Command, Stdio};

use super::StorageError;

/// What a finished command left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` when a signal ended it.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// A successful output with `stdout` (for fakes).
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Self {
            status: Some(0),
            stdout: stdout.into(),
            stderr: Vec::new(),
        }
    }

    /// A failed output with exit code `code` and `stderr` (for fakes).
    pub fn failed(code: i32, stderr: impl Into<Vec<u8>>) -> Self {
        Self {
            status: Some(code),
            stdout: Vec::new(),
            stderr: stderr.into(),
        }
    }
}

/// Runs a program to completion. `Err` only when it could not be started (an `io::Error`
/// of kind `NotFound` means it is not installed); a non-zero exit is an `Ok` output.
pub trait CommandRunner: Send + Sync {
    fn run(&self, program: &str, args: &[OsString]) -> io::Result<CommandOutput>;
}

/// Runs commands on this host: stdin closed (a prompt fails instead of hanging), and
/// `LC_ALL=C` so that numbers and messages come out in the format the parsers expect.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, program: &str, args: &[OsString]) -> io::Result<CommandOutput> {
        let out = Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()?;
        Ok(CommandOutput {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// The command line as one string, for error messages.
pub(crate) fn display_argv(program: &str, args: &[OsString]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `program args…` and insists on success: not installed → [`StorageError::MissingCommand`]
/// with `hint`, a non-zero exit → [`StorageError::Command`] with its trimmed stderr.
pub(crate) fn run_checked(
    runner: &dyn CommandRunner,
    program: &str,
    args: &[OsString],
    hint: &'static str,
) -> Result<CommandOutput, StorageError> {
    let out = runner
        .run(program, args)
        .map_err(|e| spawn_error(program, args, hint, e))?;
    if out.success() {
        Ok(out)
    } else {
        Err(command_error(program, args, &out))
    }
}

pub(crate) fn spawn_error(
    program: &str,
    args: &[OsString],
    hint: &'static str,
    e: io::Error,
) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        StorageError::MissingCommand {
            program: program.to_owned(),
            hint,
        }
    } else {
        StorageError::Io {
            context: format!("running `{}`", display_argv(program, args)),
            source: e,
        }
    }
}

pub(crate) fn command_error(program: &str, args: &[OsString], out: &CommandOutput) -> StorageError {
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    const MAX: usize = 2000;
    if stderr.len() > MAX {
        let mut cut = MAX;
        while !stderr.is_char_boundary(cut) {
            cut -= 1;
        }
        stderr.truncate(cut);
        stderr.push('…');
    }
    StorageError::Command {
        command: display_argv(program, args),
        status: match out.status {
            Some(code) => format!("exit code {code}"),
            None => "killed by a signal".to_owned(),
        },
        stderr,
    }
}

/// Builds an argv (an array of `OsString`) from anything string- or path-like.
macro_rules! argv {
    ($($a:expr),* $(,)?) => {
        [$(::std::ffi::OsString::from($a)),*]
    };
}
pub(crate) use argv;

#[cfg(test)]
pub(crate) mod fake {
    //! A scripted [`CommandRunner`]: answers in order and records every invocation.

    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    pub enum Answer {
        Output(CommandOutput),
        NotInstalled,
    }

    #[derive(Default)]
    pub struct FakeRunner {
        answers: Mutex<VecDeque<(String, Answer)>>,
        calls: Mutex<Vec<String>>,
    }

    impl FakeRunner {
        pub fn new() -> Self {
            Self::default()
        }

        /// The next call must run `program` and gets `answer`.
        pub fn expect(self, program: &str, answer: Answer) -> Self {
            if let Ok(mut a) = self.answers.lock() {
                a.push_back((program.to_owned(), answer));
            }
            self
        }

        pub fn ok(self, program: &str, stdout: &str) -> Self {
            self.expect(program, Answer::Output(CommandOutput::ok(stdout)))
        }

        pub fn fail(self, program: &str, code: i32, stderr: &str) -> Self {
            self.expect(program, Answer::Output(CommandOutput::failed(code, stderr)))
        }

        /// Every command line run so far, as `program arg arg…`.
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }

        pub fn unanswered(&self) -> usize {
            self.answers.lock().map(|a| a.len()).unwrap_or(0)
        }
    }

    impl CommandRunner for FakeRunner {
        fn run(&self, program: &str, args: &[OsString]) -> io::Result<CommandOutput> {
            let line = display_argv(program, args);
            if let Ok(mut c) = self.calls.lock() {
                c.push(line.clone());
            }
            let next = self.answers.lock().ok().and_then(|mut a| a.pop_front());
            match next {
                Some((expected, answer)) => {
                    assert_eq!(expected, program, "unexpected command: {line}");
                    match answer {
                        Answer::Output(out) => Ok(out),
                        Answer::NotInstalled => Err(io::Error::from(io::ErrorKind::NotFound)),
                    }
                }
                None => panic!("no answer scripted for: {line}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Answer, FakeRunner};
    use super::*;

    #[test]
    fn failures_carry_the_command_line_and_its_stderr() {
        let runner =
            FakeRunner::new().fail("lvremove", 5, "  Failed to find logical volume \"vg/x\"\n");
        let e = run_checked(
            &runner,
            "lvremove",
            &argv!["-f", "vg/x"],
            "apt-get install lvm2",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`lvremove -f vg/x` failed (exit code 5): Failed to find logical volume \"vg/x\""
        );
    }

    #[test]
    fn a_missing_program_says_how_to_install_it() {
        let runner = FakeRunner::new().expect("qemu-img", Answer::NotInstalled);
        let e = run_checked(
            &runner,
            "qemu-img",
            &argv!["--version"],
            "apt-get install qemu-utils",
        )
        .unwrap_err();
        assert!(matches!(e, StorageError::MissingCommand { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "qemu-img is not installed (apt-get install qemu-utils)"
        );
    }

    #[test]
    fn a_signal_and_an_empty_stderr_are_still_explained() {
        let out = CommandOutput {
            status: None,
            stdout: b"partial".to_vec(),
            stderr: Vec::new(),
        };
        let e = command_error("mkfs.xfs", &argv!["/x"], &out);
        assert_eq!(
            e.to_string(),
            "`mkfs.xfs /x` failed (killed by a signal): partial"
        );
    }

    #[test]
    fn the_system_runner_reports_exit_codes_and_missing_programs() {
        let out = SystemRunner
            .run("sh", &argv!["-c", "echo hi; echo no >&2; exit 3"])
            .unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"no\n");
        let e = SystemRunner
            .run("atelier-no-such-program", &[])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
