//! Shared test harness: the real binary, the real emulator on 127.0.0.1:0,
//! temp dirs, and waiting on conditions with deadlines (never bare sleeps).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const KEY: &str = "test-key-7d1f0c9e5b2a4";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_autorender-sync"))
}

/// A running `autorender-sync emulator`, killed on drop.
pub struct Emulator {
    child: Child,
    pub url: String,
    pub store: tempfile::TempDir,
    log: tempfile::NamedTempFile,
}

/// The reading of the API the emulator answers in (SPEC §1), for every test
/// that does not name one: `AUTORENDER_TEST_ANSWERS=docs|sdk` (default docs).
/// CI runs the suite once in each.
pub fn answers() -> String {
    match std::env::var("AUTORENDER_TEST_ANSWERS").as_deref() {
        Ok("sdk") => "sdk".into(),
        Ok("docs") | Err(_) => "docs".into(),
        Ok(other) => panic!("AUTORENDER_TEST_ANSWERS={other:?}: use docs or sdk"),
    }
}

impl Emulator {
    /// An emulator in the harness's answer shape (see [`answers`]), unless
    /// `extra` names one itself.
    pub fn start(extra: &[&str]) -> Emulator {
        let store = tempfile::tempdir().expect("temp store");
        let mut shape = if extra.contains(&"--answers") {
            Vec::new()
        } else {
            vec!["--answers".to_string(), answers()]
        };
        if !extra.contains(&"--listen") {
            shape.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
        }
        if !extra.contains(&"--api-key") {
            shape.extend(["--api-key".to_string(), KEY.to_string()]);
        }
        // Its log is kept, to be shown if a request to it fails.
        let log = tempfile::NamedTempFile::new().expect("emulator log");
        let mut child = Command::new(bin())
            .args(["emulator", "--store"])
            .arg(store.path())
            .args(&shape)
            .args(extra)
            .env_remove("AUTORENDER_SYNC_LOG")
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen emulator log"))
            .spawn()
            .expect("spawn emulator");
        let stdout = child.stdout.take().expect("emulator stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("emulator printed its address in time");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Emulator {
            child,
            url,
            store,
            log,
        }
    }

    /// A GET to the emulator. A failed request is tried again for up to
    /// 20 s (a loaded machine can refuse a connection for a moment); then the
    /// test fails showing the emulator's own log.
    pub fn get(&self, path: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match reqwest::blocking::get(format!("{}{path}", self.url)).and_then(|r| r.json()) {
                Ok(v) => return v,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("GET {path}: {e}; trying again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                    panic!("GET {path}: {e:?}\nemulator log:\n{log}")
                }
            }
        }
    }

    pub fn ledger(&self) -> Vec<Value> {
        self.get("/_emulator/uploads")
            .as_array()
            .cloned()
            .expect("ledger is an array")
    }

    /// The emulator's sessions for `file_name` (open or finished, not forgotten).
    pub fn sessions_of(&self, file_name: &str) -> Vec<Value> {
        self.get("/_emulator/sessions")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s["file_name"] == file_name)
            .collect()
    }

    /// Files the service stores (both kinds of upload).
    pub fn stored(&self) -> u64 {
        self.stat("complete_ok") + self.stat("direct_ok")
    }

    /// An authenticated API call, as a client would make it.
    pub fn api(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let resp = reqwest::blocking::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(KEY)
            .send()
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.get("/_emulator/stats")[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no stat {name}"))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp working dir with a config pointing at an emulator.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Sandbox {
    pub fn new(emu: &Emulator, extra_toml: &str) -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        let state = dir.path().join("state");
        let text = format!(
            "[api]\nendpoint = \"{}\"\n[agent]\nstate_dir = \"{}\"\n{extra_toml}\n",
            emu.url,
            state.display()
        );
        std::fs::write(&config, text).expect("write config");
        Sandbox { dir, config }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary with this sandbox's config and the right key.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config").arg(&self.config);
        c.env("AUTORENDER_API_KEY", KEY)
            .env_remove("AUTORENDER_SYNC_CONFIG")
            .env_remove("AUTORENDER_SYNC_LOG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("NO_COLOR", "1")
            // Tests use parts of a few KiB; a real service gives ≥ 5 MiB.
            .env("AUTORENDER_TEST_MIN_PART_SIZE", "1")
            .env("HOME", self.dir.path());
        c
    }
}

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

/// Writes `size` deterministic pseudo-random bytes.
pub fn write_file(path: &Path, size: usize, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create file"));
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = size;
    while left > 0 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        let n = left.min(8);
        f.write_all(&bytes[..n]).expect("write");
        left -= n;
    }
    f.flush().expect("flush");
}

pub fn sha256_file(path: &Path) -> String {
    let data = std::fs::read(path).expect("read file");
    hex::encode(Sha256::digest(&data))
}

impl Sandbox {
    /// A sandbox whose config watches `<dir>/drop` (created), with extra
    /// `[agent]` keys and extra `[[watch]]` keys.
    pub fn watching(emu: &Emulator, agent_extra: &str, watch_extra: &str) -> Sandbox {
        let sb = Sandbox::new(emu, agent_extra);
        std::fs::create_dir(sb.drop_dir()).expect("create drop dir");
        let text = std::fs::read_to_string(&sb.config).expect("read config")
            + &format!(
                "[[watch]]\npath = \"{}\"\nremote_folder = \"uploads/drop\"\n{watch_extra}\n",
                sb.drop_dir().display()
            );
        std::fs::write(&sb.config, text).expect("write config");
        sb
    }

    /// The address and token a running agent wrote into its state dir.
    pub fn control(&self) -> (String, String) {
        let info = self.state_dir().join("control.json");
        assert!(
            wait_until(Duration::from_secs(20), || info.exists()),
            "control.json was not written"
        );
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&info).expect("read control.json"))
            .expect("control.json is JSON");
        let token =
            std::fs::read_to_string(self.state_dir().join("control.token")).expect("read control.token");
        (
            v["url"].as_str().expect("control.json names a url").to_string(),
            token.trim().to_string(),
        )
    }

    pub fn drop_dir(&self) -> PathBuf {
        self.dir.path().join("drop")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts `run` in the background (killed on drop).
    pub fn spawn_agent(&self, extra_args: &[&str]) -> AgentProcess {
        self.spawn_agent_env(extra_args, &[])
    }

    pub fn spawn_agent_env(&self, extra_args: &[&str], env: &[(&str, &str)]) -> AgentProcess {
        // Logs go to a file: an unread pipe would fill up and stall the agent.
        let log = tempfile::NamedTempFile::new_in(self.dir.path()).expect("log file");
        let mut c = self.cmd();
        c.envs(env.iter().copied());
        c.arg("run")
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("reopen log"));
        AgentProcess {
            child: Some(c.spawn().expect("spawn agent")),
            log,
        }
    }

    /// Starts `run` as an unprivileged user, so that file permissions hold
    /// (root reads a mode-000 file). As root (CI is), the sandbox is handed
    /// to `nobody` and the agent runs under `setpriv`; otherwise as is.
    pub fn spawn_agent_unprivileged(&self) -> AgentProcess {
        if !is_root() {
            return self.spawn_agent(&[]);
        }
        chown_tree(self.dir.path(), 65534, 65534);
        self.spawn_wrapped(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ])
    }

    /// Starts `run` through a wrapper that execs it (`setpriv …`, `nohup`),
    /// so the process signalled is the agent itself.
    pub fn spawn_wrapped(&self, wrapper: &[&str]) -> AgentProcess {
        let log = tempfile::NamedTempFile::new_in(self.dir.path()).expect("log file");
        let mut inner = self.cmd();
        inner.arg("run");
        let mut c = wrapped(wrapper, &inner);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("reopen log"));
        AgentProcess {
            child: Some(c.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", wrapper[0]))),
            log,
        }
    }

    /// Starts `run` and waits until it reports itself running.
    pub fn running_agent(&self, extra_args: &[&str]) -> AgentProcess {
        self.running_agent_env(extra_args, &[])
    }

    pub fn running_agent_env(&self, extra_args: &[&str], env: &[(&str, &str)]) -> AgentProcess {
        let agent = self.spawn_agent_env(extra_args, env);
        assert!(
            wait_until(Duration::from_secs(20), || self.status()["agent"]["running"]
                == true),
            "the agent did not start"
        );
        agent
    }

    /// `run --once`: scan, upload what is pending, exit.
    pub fn run_once(&self) -> Output {
        let mut c = self.cmd();
        c.args(["run", "--once"]);
        run(c)
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        let mut c = self.cmd();
        c.args(["status", "--json"]);
        let out = run(c);
        assert_eq!(out.code, 0, "status failed: {}", out.stderr);
        serde_json::from_str(&out.stdout).expect("status --json is JSON")
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
    child: Option<Child>,
    log: tempfile::NamedTempFile,
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

#[cfg(unix)]
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&e.expect("entry").path(), uid, gid);
        }
    }
}

/// Names in the ledger, each once, or panics naming the duplicates.
pub fn unique_names(ledger: &[Value]) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    for e in ledger {
        let key = format!(
            "{}/{}",
            e["folder"].as_str().unwrap_or(""),
            e["name"].as_str().unwrap_or("")
        );
        assert!(seen.insert(key.clone()), "{key} was uploaded twice");
    }
    seen
}
