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
}

impl Emulator {
    pub fn start(extra: &[&str]) -> Emulator {
        let store = tempfile::tempdir().expect("temp store");
        let mut child = Command::new(bin())
            .args(["emulator", "--listen", "127.0.0.1:0", "--api-key", KEY, "--store"])
            .arg(store.path())
            .args(extra)
            .env_remove("AUTORENDER_SYNC_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
        Emulator { child, url, store }
    }

    pub fn get(&self, path: &str) -> Value {
        reqwest::blocking::get(format!("{}{path}", self.url))
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn ledger(&self) -> Vec<Value> {
        self.get("/_emulator/uploads")
            .as_array()
            .cloned()
            .expect("ledger is an array")
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
            .env("HOME", self.dir.path());
        c
    }
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut cmd: Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("run binary");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
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
