//! The real emulator, started through the real binary on 127.0.0.1:0.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KEY: &str = "test-key-7d1f0c9e5b2a4";

/// The `autorender-sync` binary under test: the one cargo built beside
/// the test binary (`target/<profile>/`, the test in its `deps/`), as
/// cargo builds a package's binaries before its integration tests.
pub fn bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's own path");
        let mut dir = exe.parent().expect("the test binary's folder").to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bin = dir.join(format!("autorender-sync{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "{} is not built: run the tests with `cargo test` or `cargo nextest run` at the top of the \
             workspace, which build it first",
            bin.display()
        );
        bin
    })
    .clone()
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
    /// Stops the emulator's process (SIGSTOP): connections stay open and
    /// nothing is read or answered, as on a network that drops everything.
    pub fn freeze(&self) {
        self.kill("STOP");
    }

    /// Lets a frozen emulator go on (SIGCONT).
    pub fn thaw(&self) {
        self.kill("CONT");
    }

    fn kill(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} the emulator");
    }

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
