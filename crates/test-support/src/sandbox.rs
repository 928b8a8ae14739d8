//! A temp working dir with a config pointing at an emulator, files in
//! it, and what the agent recorded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::*;

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
            // Each agent's control API on a free port of its own, not all
            // on the machine's 127.0.0.1:7780 (a test that wants the
            // default taken sets this to a port it holds).
            .env("AUTORENDER_TEST_CONTROL_LISTEN", "127.0.0.1:0")
            .env("HOME", self.dir.path());
        c
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
        #[cfg(unix)]
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
        // A deadline, not a wait: it passes as soon as the agent reports
        // itself running. CI's four tests at a time on two cores once took
        // 26 s to start a debug agent whose start was 6 s alone.
        assert!(
            wait_until(Duration::from_secs(60), || self.status()["agent"]["running"]
                == true),
            "the agent did not start within 60 s:\n{}",
            agent.log_text()
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
