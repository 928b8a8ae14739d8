//! Post-upload hooks: `[[watch]] on_uploaded` and `on_set_complete`.
//!
//! A hook is a program and its arguments, started without a shell (no
//! quoting to get wrong, nothing of a file name ever parsed as a command),
//! with the facts in `AUTORENDER_*` environment variables. It runs beside
//! the uploads, never in their way: at most [`AT_ONCE`] at a time, each
//! stopped at its timeout; its output goes to the log line by line; a hook
//! that cannot start, fails or times out is logged and becomes a
//! `hook_failed` event. The agent's API key is never in its environment.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::Semaphore;

/// Hooks running at one time; more wait their turn (uploads do not).
pub const AT_ONCE: usize = 4;

/// Hooks waiting for their turn before new ones are refused (each
/// refusal logged and an event): a hook far slower than uploads must
/// not grow memory without end.
pub const MAX_WAITING: usize = 10_000;

/// Lines of one run's output put in the log; the rest are counted.
const MAX_LINES: usize = 200;

/// The longest line logged; a longer one is cut (and says so).
const MAX_LINE: usize = 4096;

pub use crate::config::Hook;

/// Which hook: the config key it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Uploaded,
    SetComplete,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Uploaded => "on_uploaded",
            Kind::SetComplete => "on_set_complete",
        }
    }
}

/// The facts a hook is given: `AUTORENDER_<NAME>` = value.
#[derive(Debug, Clone, Default)]
pub struct Facts(Vec<(&'static str, String)>);

impl Facts {
    pub fn with(mut self, name: &'static str, value: impl ToString) -> Self {
        self.0.push((name, value.to_string()));
        self
    }

    pub fn pairs(&self) -> impl Iterator<Item = (String, &str)> {
        self.0
            .iter()
            .map(|(k, v)| (format!("AUTORENDER_{k}"), v.as_str()))
    }
}

/// Why a hook did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot start {program}: {source}")]
    Start { program: String, source: std::io::Error },
    #[error("{program} {status}")]
    Failed { program: String, status: ExitStatus },
    #[error("{program} ran longer than its {limit} limit and was stopped")]
    TimedOut { program: String, limit: String },
    #[error("{program}: waiting for it failed: {source}")]
    Wait { program: String, source: std::io::Error },
    #[error(
        "{MAX_WAITING} hooks are already waiting; this one is not run (is the hook much slower than uploads?)"
    )]
    Backlog,
}

/// What a run came to, for the agent to log and make an event of.
#[derive(Debug)]
pub struct Ran {
    pub kind: Kind,
    /// What the hook was about (the file, or the set's folder).
    pub subject: PathBuf,
    pub result: Result<(), HookError>,
}

/// The hooks' shared turn-taking: [`AT_ONCE`] running, [`MAX_WAITING`]
/// waiting.
#[derive(Debug, Clone)]
pub struct Runner {
    turns: Arc<Semaphore>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            turns: Arc::new(Semaphore::new(AT_ONCE)),
            waiting: Arc::default(),
        }
    }
}

impl Runner {
    /// Runs `hook` with `facts` when its turn comes, without the
    /// environment variables named in `withheld` (the API key's). The
    /// future is meant to be spawned: it never fails, it says how the run
    /// went.
    pub fn run(
        &self,
        hook: &Hook,
        kind: Kind,
        subject: PathBuf,
        facts: Facts,
        withheld: Vec<String>,
    ) -> impl Future<Output = Ran> + use<> {
        use std::sync::atomic::Ordering;
        let hook = hook.clone();
        let turns = self.turns.clone();
        let waiting = self.waiting.clone();
        let admitted = waiting.fetch_add(1, Ordering::SeqCst) < MAX_WAITING;
        async move {
            let result = if admitted {
                let turn = turns.acquire_owned().await;
                waiting.fetch_sub(1, Ordering::SeqCst);
                let r = run_one(&hook, kind, &subject, &facts, &withheld).await;
                drop(turn);
                r
            } else {
                waiting.fetch_sub(1, Ordering::SeqCst);
                Err(HookError::Backlog)
            };
            Ran {
                kind,
                subject,
                result,
            }
        }
    }
}

async fn run_one(
    hook: &Hook,
    kind: Kind,
    subject: &std::path::Path,
    facts: &Facts,
    withheld: &[String],
) -> Result<(), HookError> {
    let program = hook.argv[0].clone();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&hook.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Stopped with the agent, or at its timeout.
        .kill_on_drop(true);
    // Its own process group: a Ctrl-C at the agent's terminal is the
    // agent's to handle, and at its timeout the hook is stopped with all
    // it started (a shell's `sleep` would otherwise outlive it).
    #[cfg(unix)]
    cmd.process_group(0);
    for name in withheld {
        cmd.env_remove(name);
    }
    cmd.env("AUTORENDER_EVENT", kind.key());
    for (k, v) in facts.pairs() {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|source| HookError::Start {
        program: program.clone(),
        source,
    })?;
    let group = Group(child.id());
    let label = format!("{} {}", kind.key(), crate::text::path(subject));
    let out = child
        .stdout
        .take()
        .map(|o| tokio::spawn(log_lines(o, label.clone())));
    let err = child
        .stderr
        .take()
        .map(|e| tokio::spawn(log_lines(e, label.clone())));
    let status = match tokio::time::timeout(hook.timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            return Err(HookError::Wait { program, source });
        }
        Err(_) => {
            drop(group);
            let _ = child.start_kill();
            let _ = child.wait().await;
            for t in [out, err].into_iter().flatten() {
                t.abort();
            }
            return Err(HookError::TimedOut {
                program,
                limit: format!("{:?}", hook.timeout),
            });
        }
    };
    group.disarm();
    // What it printed is all logged before its end is (a child of the hook
    // that keeps the pipe open does not hold this up for long).
    for t in [out, err].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed { program, status })
    }
}

/// A hook's process group, killed when dropped before the hook ended (its
/// timeout, or the agent stopping); disarmed once it has exited on its own
/// (what it left running on purpose is its business).
#[cfg_attr(not(unix), allow(dead_code))]
struct Group(Option<u32>);

impl Group {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0 {
            crate::sys::kill_group(pgid);
        }
    }
}

/// Puts each line the hook prints into the log, up to [`MAX_LINES`].
async fn log_lines(stream: impl AsyncRead + Unpin, label: String) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let mut lines = 0usize;
    loop {
        buf.clear();
        // Reads at most a little over MAX_LINE of a line into memory.
        match read_line_capped(&mut reader, &mut buf).await {
            Ok(None) => break,
            Ok(Some(cut)) => {
                lines += 1;
                if lines <= MAX_LINES {
                    let text = String::from_utf8_lossy(&buf);
                    let text = text.trim_end_matches(['\n', '\r']);
                    let more = if cut { " …(line cut)" } else { "" };
                    tracing::info!(target: "autorender_sync::hook", "{label}: {text}{more}");
                }
            }
            Err(_) => break,
        }
    }
    if lines > MAX_LINES {
        tracing::info!(
            target: "autorender_sync::hook",
            "{label}: {} more lines not logged",
            lines - MAX_LINES
        );
    }
}

/// One line into `buf`, keeping at most [`MAX_LINE`] bytes of it. None at
/// the end; Some(true) when the line was cut.
async fn read_line_capped<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    let mut cut = false;
    let mut any = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(any.then_some(cut));
        }
        any = true;
        let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = MAX_LINE.saturating_sub(buf.len());
        if take > room {
            cut = true;
        }
        buf.extend_from_slice(&chunk[..take.min(room)]);
        reader.consume(take);
        if end {
            return Ok(Some(cut));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Hook {
        Hook {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout,
        }
    }

    #[tokio::test]
    async fn facts_arrive_as_environment_and_the_key_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let hook = sh(&format!("env > '{}'", out.display()), Duration::from_secs(10));
        // HOME is in every test's environment: withheld, it is not passed on
        // (the agent withholds its key's variable the same way).
        let runner = Runner::default();
        let ran = runner
            .run(
                &hook,
                Kind::Uploaded,
                "/x/a b.mov".into(),
                Facts::default().with("PATH", "/x/a b.mov").with("SIZE", 42),
                vec!["HOME".into()],
            )
            .await;
        ran.result.unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("AUTORENDER_PATH=/x/a b.mov"), "{env}");
        assert!(env.contains("AUTORENDER_SIZE=42"), "{env}");
        assert!(env.contains("AUTORENDER_EVENT=on_uploaded"), "{env}");
        assert!(!env.lines().any(|l| l.starts_with("HOME=")), "{env}");
    }

    #[tokio::test]
    async fn a_failure_a_timeout_and_a_missing_program_are_said() {
        let runner = Runner::default();
        let ran = runner
            .run(
                &sh("exit 3", Duration::from_secs(10)),
                Kind::Uploaded,
                "/x".into(),
                Facts::default(),
                Vec::new(),
            )
            .await;
        let e = ran.result.unwrap_err().to_string();
        assert!(e.contains("/bin/sh") && e.contains('3'), "{e}");

        let ran = runner
            .run(
                &sh("sleep 30", Duration::from_millis(200)),
                Kind::SetComplete,
                "/x".into(),
                Facts::default(),
                Vec::new(),
            )
            .await;
        let e = ran.result.unwrap_err();
        assert!(matches!(e, HookError::TimedOut { .. }), "{e}");

        let hook = Hook {
            argv: vec!["/nonexistent/hook".into()],
            timeout: Duration::from_secs(1),
        };
        let ran = runner
            .run(&hook, Kind::Uploaded, "/x".into(), Facts::default(), Vec::new())
            .await;
        let e = ran.result.unwrap_err().to_string();
        assert!(e.contains("cannot start /nonexistent/hook"), "{e}");
    }

    /// At its timeout, what the hook started goes too (a shell's child
    /// would otherwise keep running, and keep its output pipe open).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_timeout_stops_what_the_hook_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let hook = sh(
            &format!("sleep 600 & echo $! > '{}'; wait", pidfile.display()),
            Duration::from_millis(500),
        );
        let ran = Runner::default()
            .run(&hook, Kind::Uploaded, "/x".into(), Facts::default(), Vec::new())
            .await;
        assert!(matches!(ran.result, Err(HookError::TimedOut { .. })));
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        // Gone, or a zombie waiting for init to reap it: not sleeping.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let state = std::fs::read_to_string(&stat).ok().and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_string)
            });
            if state.as_deref().is_none_or(|s| s == "Z" || s == "X") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the hook's child still runs: {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_long_line_is_cut_and_the_end_still_read() {
        let data = format!("{}\nshort\n", "x".repeat(MAX_LINE * 3));
        let mut r = BufReader::new(data.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line_capped(&mut r, &mut buf).await.unwrap(), Some(true));
        assert_eq!(buf.len(), MAX_LINE);
        buf.clear();
        assert_eq!(read_line_capped(&mut r, &mut buf).await.unwrap(), Some(false));
        assert_eq!(buf, b"short\n");
        buf.clear();
        assert_eq!(read_line_capped(&mut r, &mut buf).await.unwrap(), None);
    }
}
