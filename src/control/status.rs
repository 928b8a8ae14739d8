//! The status document: what `status --json` prints and `/api/status`
//! serves, computed here from the journal (read-only, beside a running
//! agent) and the agent's last heartbeat; and a file's result as every
//! `--json` names it.

use serde_json::{Value, json};

use crate::journal::{self, HistoryRow, JournalError, RootCounts};

/// A unix-millisecond time as RFC 3339, to the second.
pub fn format_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A unix-millisecond time for people: this machine's local time with its
/// offset, to the second ("2026-12-05 09:40:12 +01:00"). `--json` keeps
/// RFC 3339 in UTC ([`json_time`]).
pub fn local_time(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms.max(0)) {
        Ok(t) => t
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        Err(_) => format_time(ms),
    }
}

/// A unix-millisecond time for JSON: RFC 3339 (None stays null).
pub fn json_time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(format_time(ms)))
}

/// One file's result as every `--json` names it (`history`, `status`'s
/// last uploads, `upload`): `local_path`, `ok`, `remote_folder`,
/// `remote_name`, `remote_path`, `file_no`, `url`, `size`, `sha256`,
/// `error`, `at` (RFC 3339) and `at_ms`.
pub fn file_json(h: &HistoryRow) -> Value {
    let remote_path = match (&h.remote_folder, &h.remote_name) {
        (Some(f), Some(n)) => Value::String(crate::mapping::remote_path(f, n)),
        (None, Some(n)) => Value::String(n.clone()),
        _ => Value::Null,
    };
    json!({
        "local_path": h.local_path,
        "ok": h.ok,
        "remote_folder": h.remote_folder,
        "remote_name": h.remote_name,
        "remote_path": remote_path,
        "file_no": h.file_no,
        "url": h.url,
        "size": h.size,
        "sha256": h.sha256,
        "error": h.error,
        "at": json_time(Some(h.at)),
        "at_ms": h.at,
        "adopted": h.adopted,
        "after": h.after,
        "set": h.set,
    })
}

/// What `status` reads: the journal's records and the running agent's
/// heartbeat, per configured root.
pub struct Gathered {
    pub state_dir: std::path::PathBuf,
    pub running: bool,
    pub agent: Option<journal::AgentRow>,
    pub snapshot: serde_json::Value,
    pub counts: Vec<RootCounts>,
    pub elsewhere: serde_json::Value,
    pub last: Vec<journal::HistoryRow>,
    /// Upload sets: each with its file count and how many are done.
    pub sets: Vec<(journal::SetRow, i64, i64)>,
    /// Where the running agent's control API listens (its `control.json`).
    pub control: Option<String>,
}

/// The URL in `<state_dir>/control.json` (None: no agent serves one).
pub fn control_url(state_dir: &std::path::Path) -> Option<String> {
    let text = crate::private::read_text(&state_dir.join(super::INFO_FILE)).ok()?;
    let info: serde_json::Value = serde_json::from_str(&text).ok()?;
    info["url"].as_str().map(str::to_string)
}

pub fn gather(settings: &crate::config::Settings) -> Result<Gathered, JournalError> {
    let state_dir = &settings.agent.state_dir;
    let running = journal::agent_running(state_dir);
    let (agent, mut counts, last, sets) = match journal::Reader::open(state_dir)? {
        Some(r) => (r.agent()?, r.counts()?, r.history(5, false)?, r.sets()?),
        None => (None, Vec::new(), Vec::new(), Vec::new()),
    };
    // Live settling/growing numbers come from the running agent's heartbeat.
    let snapshot: serde_json::Value = agent
        .as_ref()
        .and_then(|a| a.snapshot.as_deref())
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(json!({}));
    for w in &settings.watches {
        let root = w.path.to_string_lossy().into_owned();
        if !counts.iter().any(|c| c.root == root) {
            counts.push(RootCounts {
                root: root.clone(),
                ..Default::default()
            });
        }
        if running
            && let Some(s) = snapshot["roots"]
                .as_array()
                .and_then(|r| r.iter().find(|x| x["root"] == root.as_str()))
            && let Some(c) = counts.iter_mut().find(|c| c.root == root)
        {
            c.settling += s["settling"].as_i64().unwrap_or(0);
            c.growing += s["growing"].as_i64().unwrap_or(0);
            c.watch = s["watch"].as_str().map(str::to_string);
            c.deletes_rounds = s["deletes_rounds"].as_i64().unwrap_or(0);
            c.deletes_held = s["deletes_held"].as_str().map(str::to_string);
        }
    }
    // Only configured roots are watch roots. Records under any other root
    // (files `upload` sent from outside the watched folders, roots since
    // removed from the config) are summed apart.
    let watched: Vec<String> = settings.watches.iter().map(|w| w.key()).collect();
    let (mut counts, others): (Vec<RootCounts>, Vec<RootCounts>) =
        counts.into_iter().partition(|c| watched.contains(&c.root));
    counts.sort_by_key(|c| watched.iter().position(|w| *w == c.root));
    let elsewhere = json!({
        "done": others.iter().map(|c| c.done).sum::<i64>(),
        "failed": others.iter().map(|c| c.failed).sum::<i64>(),
    });
    if !running {
        // Nothing is uploading without an agent: what was in flight when it
        // stopped (or crashed) resumes at its next start.
        for c in &mut counts {
            c.interrupted = c.uploading + c.reconciling;
            c.uploading = 0;
            c.reconciling = 0;
        }
    }
    Ok(Gathered {
        control: running.then(|| control_url(state_dir)).flatten(),
        state_dir: state_dir.clone(),
        running,
        agent,
        snapshot,
        counts,
        elsewhere,
        last,
        sets,
    })
}

/// A set as `status` shows it: "waiting (no trigger (_DONE) yet)",
/// "uploading (40 of 120)", "complete (120 files)".
pub fn set_line(s: &journal::SetRow, files: i64, done: i64) -> String {
    match s.state.as_str() {
        "waiting" => format!("waiting ({})", s.reason.as_deref().unwrap_or("not ready")),
        "uploading" | "manifest" => format!(
            "uploading ({done} of {files}){}",
            s.reason
                .as_deref()
                .filter(|r| r.contains("failed"))
                .map(|r| format!("; {r}"))
                .unwrap_or_default()
        ),
        _ => format!("complete ({done} files, round {})", s.round),
    }
}

/// The `status --json` document (also the control API's `/api/status`).
pub fn document(g: &Gathered) -> serde_json::Value {
    let (running, agent, snapshot) = (g.running, &g.agent, &g.snapshot);
    let (state_dir, counts, elsewhere, last) = (&g.state_dir, &g.counts, &g.elsewhere, &g.last);
    json!({
        "agent": {
            "running": running,
            "pid": agent.as_ref().and_then(|a| a.pid),
            "started_at": json_time(agent.as_ref().and_then(|a| a.started_at)),
            "started_at_ms": agent.as_ref().and_then(|a| a.started_at),
            "heartbeat_at": json_time(agent.as_ref().and_then(|a| a.heartbeat_at)),
            "heartbeat_at_ms": agent.as_ref().and_then(|a| a.heartbeat_at),
            "last_event_at": json_time(agent.as_ref().and_then(|a| a.last_event_at)),
            "last_event_at_ms": agent.as_ref().and_then(|a| a.last_event_at),
            "paused": running && snapshot["paused"].as_bool().unwrap_or(false),
            "pause_reason": if running { snapshot["pause_reason"].clone() } else { serde_json::Value::Null },
            "paused_until": json_time(if running { snapshot["user_pause"]["until_ms"].as_i64() } else { None }),
            "schedule": if running { snapshot["schedule"].clone() } else { serde_json::Value::Null },
            "problems": if running { snapshot["problems"].clone() } else { json!([]) },
            "unreachable_since": json_time(if running { snapshot["unreachable_since"].as_i64() } else { None }),
            "unreachable_since_ms": if running { snapshot["unreachable_since"].clone() } else { serde_json::Value::Null },
            "rate_limited_until": json_time(if running { snapshot["rate_limited_until"].as_i64() } else { None }),
            // Requests with a body in flight: the limit, why it is what it
            // is, and how many now (adaptive transfer).
            "concurrency": if running { snapshot["concurrency"].clone() } else { serde_json::Value::Null },
            "control": g.control,
        },
        "state_dir": state_dir,
        "roots": counts,
        "in_flight": if running { snapshot["in_flight"].clone() } else { json!([]) },
        "fleet": if running { snapshot["fleet"].clone() } else { serde_json::Value::Null },
        "elsewhere": elsewhere,
        "last_uploads": last.iter().map(file_json).collect::<Vec<_>>(),
        "sets": g.sets.iter().map(|(s, files, done)| json!({
            "root": s.root,
            "set": s.set_rel,
            "state": s.state,
            "round": s.round,
            "files": files,
            "done": done,
            "reason": s.reason,
            "stuck": s.stuck,
            "summary": set_line(s, *files, *done),
        })).collect::<Vec<_>>(),
    })
}
