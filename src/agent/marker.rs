//! Two agents on one folder (separate state dirs, maybe separate machines)
//! would upload every file twice. Each agent keeps a small marker in each
//! folder it watches, naming itself (host, pid, state dir) and refreshed
//! while it runs; an agent that finds another live agent's marker at start
//! refuses to watch that folder unless `[fleet]` shares the work. The name
//! starts with a dot, so no agent ever uploads it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The marker's name in each watched folder.
pub const NAME: &str = ".autorender-sync.watcher";
/// A marker not refreshed for this long belongs to an agent that is gone.
const FRESH_MS: i64 = 90_000;
/// How often a running agent refreshes its markers (in heartbeats).
pub const REFRESH_BEATS: u64 = 30;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mark {
    pub agent: String,
    pub host: String,
    pub pid: u32,
    pub state_dir: PathBuf,
    /// When it was last written, unix ms.
    pub at_ms: i64,
}

impl Mark {
    pub fn me(state_dir: &Path, now_ms: i64) -> Mark {
        Mark {
            agent: "autorender-sync".into(),
            host: crate::sys::host_name().to_string(),
            pid: std::process::id(),
            state_dir: state_dir.to_path_buf(),
            at_ms: now_ms,
        }
    }

    /// The same agent: this host and this state dir (a restart of it, or
    /// the one writing now).
    fn same_agent(&self, other: &Mark) -> bool {
        self.host == other.host && self.state_dir == other.state_dir
    }

    pub fn describe(&self) -> String {
        format!(
            "the agent with pid {} on {} (state dir {}), last seen {}",
            self.pid,
            crate::text::shown(&self.host),
            crate::text::path(&self.state_dir),
            crate::clock::rfc3339_ms(self.at_ms)
        )
    }
}

/// Another live agent's marker in `root`, if there is one.
pub fn other_agent(root: &Path, me: &Mark, now_ms: i64) -> Option<Mark> {
    let theirs = read(root)?;
    if theirs.same_agent(me) || now_ms - theirs.at_ms > FRESH_MS {
        return None;
    }
    // On this machine the process can be asked about: gone, or not an agent
    // (a pid reused since), means the marker is stale.
    if theirs.host == me.host && !is_agent(theirs.pid) {
        return None;
    }
    Some(theirs)
}

fn read(root: &Path) -> Option<Mark> {
    use std::io::Read;
    let file = crate::anchor::open_file(root, &root.join(NAME)).ok()?;
    let mut text = String::new();
    file.take(16 * 1024).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes (or refreshes) this agent's marker. A folder that cannot be
/// written (read-only media) goes without one.
pub fn write(root: &Path, me: &Mark) {
    let text = serde_json::to_vec_pretty(me).unwrap_or_default();
    if let Err(e) = crate::anchor::put_file(root, OsStr::new(NAME), &text) {
        tracing::debug!("cannot write {} in {}: {e}", NAME, root.display());
    }
}

/// Removes the marker if it is still this agent's.
pub fn remove(root: &Path, me: &Mark) {
    let path = root.join(NAME);
    if read(root).is_some_and(|m| m.same_agent(me) && m.pid == me.pid)
        && let Ok(id) = crate::anchor::file_id(root, &path)
    {
        let _ = crate::anchor::remove_if(root, &path, &id);
    }
}

#[cfg(target_os = "linux")]
fn is_agent(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim().starts_with("autorender"))
}

#[cfg(not(target_os = "linux"))]
fn is_agent(_pid: u32) -> bool {
    true
}
