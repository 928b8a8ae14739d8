//! Running the binary: to its end with a deadline, in the background,
//! through a wrapper (`setpriv`, `script`), and waiting on conditions
//! (never bare sleeps).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The longest any one command of a test may run: a hung binary fails its
/// test instead of hanging CI.
const COMMAND_DEADLINE: Duration = Duration::from_secs(300);

/// Runs a command to its end (at most [`COMMAND_DEADLINE`]), capturing its output.
pub fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run binary");
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let status = wait_with_deadline(&mut child, COMMAND_DEADLINE);
    Output {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Waits for `child` to exit; past `deadline` it is killed and the test fails.
pub fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a command did not finish within {deadline:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `inner` (program, arguments, environment) on a pseudo-terminal, through
/// `script -qec LINE /dev/null` (util-linux): its output arrives on stdout.
pub fn on_a_terminal(inner: &Command) -> Command {
    let mut line = format!("'{}'", inner.get_program().to_string_lossy());
    for a in inner.get_args() {
        line.push_str(&format!(" '{}'", a.to_string_lossy()));
    }
    let mut c = Command::new("script");
    c.args(["-qec", &line, "/dev/null"]);
    copy_env(inner, &mut c);
    c
}

/// `inner` (program, arguments, environment) run through a wrapper such as
/// `setpriv …`, `faketime …` or `script …`.
pub fn wrapped(wrapper: &[&str], inner: &Command) -> Command {
    let mut c = Command::new(wrapper[0]);
    c.args(&wrapper[1..])
        .arg(inner.get_program())
        .args(inner.get_args());
    copy_env(inner, &mut c);
    c
}

/// Gives `to` the environment changes `from` was set up with.
pub fn copy_env(from: &Command, to: &mut Command) {
    for (k, v) in from.get_envs() {
        match v {
            Some(v) => to.env(k, v),
            None => to.env_remove(k),
        };
    }
}

/// A background agent. Dropping it kills it.
pub struct AgentProcess {
    pub(crate) child: Option<Child>,
    pub(crate) log: tempfile::NamedTempFile,
}

impl AgentProcess {
    /// SIGKILL: a crash at an arbitrary instant.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`"STOP"`, `"CONT"`, …) to the running agent.
    ///
    /// Only while it has not been reaped: once `try_wait` has collected its
    /// exit, its PID may already belong to another test's process (PIDs wrap
    /// at 32,768), and signalling it would hit that process.
    pub fn signal(&mut self, sig: &str) {
        let child = self.child.as_mut().expect("running");
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the agent has already exited; not signalling its (reusable) PID"
        );
        // Not reaped, so the PID is still this process's (or its zombie's).
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig}");
    }

    /// Has the agent ended by itself?
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// What the agent has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits (at most `deadline`) for the agent to exit by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> Output {
        let mut child = self.child.take().expect("running");
        let status = wait_with_deadline(&mut child, deadline);
        Output {
            code: status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: self.log_text(),
        }
    }

    /// SIGTERM (if still running), then wait for its exit; returns the output.
    pub fn stop(&mut self) -> Output {
        let mut child = self.child.take().expect("running");
        // Signal only a child not yet reaped: a reaped child's PID may be
        // another process's by now.
        if child.try_wait().expect("try_wait").is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let status = wait_with_deadline(&mut child, Duration::from_secs(60));
        Output {
            code: status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: std::fs::read_to_string(self.log.path()).unwrap_or_default(),
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Are the tests running as root (as CI does)?
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A test that cannot run here: a loud skip on a developer's machine, a
/// failure in CI (`CI=true`), where every part must be installed.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("CI must be able to run this test: {why}");
    }
    eprintln!("SKIPPING (not in CI): {why}");
}

/// The ASC MHL reference tool (`pip install ascmhl`): the directory that
/// holds `ascmhl` and `ascmhl-debug`, found on PATH. None (after a loud
/// skip, or a failure in CI) where it is not installed.
pub fn ascmhl_tools() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).find(|d| d.join("ascmhl").is_file() && d.join("ascmhl-debug").is_file())
    });
    if found.is_none() {
        skip_or_fail("the ASC MHL reference tool is not installed; pip install ascmhl (.ci/run does)");
    }
    found
}
