//! `status`: read from the journal (safe while an agent runs): whether an
//! agent is running and since when, per watch root the counts by state, and
//! the last uploads.

use std::process::ExitCode;

use serde_json::json;

use super::output::{file_json, format_time, json_time, print_json};
use super::{Cli, CliError, CliResult};
use crate::journal::{self, RootCounts};
use crate::units::format_bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

/// What `status` reads: the journal's records and the running agent's
/// heartbeat, per configured root.
pub(crate) struct Gathered {
    state_dir: std::path::PathBuf,
    running: bool,
    agent: Option<journal::AgentRow>,
    snapshot: serde_json::Value,
    counts: Vec<RootCounts>,
    elsewhere: serde_json::Value,
    last: Vec<journal::HistoryRow>,
    /// Upload sets: each with its file count and how many are done.
    sets: Vec<(journal::SetRow, i64, i64)>,
}

pub(crate) fn gather(settings: &crate::config::Settings) -> Result<Gathered, CliError> {
    let state_dir = &settings.agent.state_dir;
    let running = journal::agent_running(state_dir);
    let reader = journal::Reader::open(state_dir).map_err(super::journal_read_error)?;
    let failed = |e: journal::JournalError| CliError::Failed(e.to_string());
    let (agent, mut counts, last, sets) = match &reader {
        Some(r) => (
            r.agent().map_err(failed)?,
            r.counts().map_err(failed)?,
            r.history(5, false).map_err(failed)?,
            r.sets().map_err(failed)?,
        ),
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
fn set_line(s: &journal::SetRow, files: i64, done: i64) -> String {
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
pub(crate) fn document(g: &Gathered) -> serde_json::Value {
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

pub fn run(cli: &Cli, args: &Args) -> CliResult {
    let settings = super::load_settings(cli)?;
    let g = gather(&settings)?;
    if args.json {
        print_json(&document(&g));
        return Ok(ExitCode::SUCCESS);
    }
    let Gathered {
        state_dir,
        running,
        agent,
        snapshot,
        counts,
        elsewhere,
        last,
        sets,
    } = g;
    let state_dir = &state_dir;
    match (&agent, running) {
        (Some(a), true) => outln!(
            "agent: running (pid {}) since {}; last event {}{}",
            a.pid.unwrap_or(0),
            a.started_at.map(format_time).unwrap_or_default(),
            a.last_event_at
                .map(format_time)
                .unwrap_or_else(|| "none yet".into()),
            match snapshot["pause_reason"].as_str() {
                Some("service_unreachable") => format!(
                    "; UPLOADS WAITING: service unreachable since {}",
                    snapshot["unreachable_since"]
                        .as_i64()
                        .map(format_time)
                        .unwrap_or_default()
                ),
                Some("paused_by_user") => format!(
                    "; UPLOADS PAUSED {}",
                    snapshot["user_pause"]["until_ms"]
                        .as_i64()
                        .map(|u| format!("until {}", format_time(u)))
                        .unwrap_or_else(|| "until `autorender-sync resume`".into())
                ),
                Some("paused_by_schedule") => "; UPLOADS PAUSED by the schedule".into(),
                _ if snapshot["rate_limited_until"].is_i64() => format!(
                    "; UPLOADS WAITING: rate-limited by the service (429) until {}",
                    snapshot["rate_limited_until"]
                        .as_i64()
                        .map(format_time)
                        .unwrap_or_default()
                ),
                _ if snapshot["paused"].as_bool() == Some(true) =>
                    "; UPLOADS PAUSED (API key rejected)".into(),
                _ => String::new(),
            }
        ),
        (Some(a), false) => outln!(
            "agent: not running (last seen {})",
            a.heartbeat_at.map(format_time).unwrap_or_default()
        ),
        (None, _) => outln!("agent: has not run yet (journal: {})", state_dir.display()),
    }
    if running && let Some(s) = snapshot["schedule"].as_object() {
        outln!(
            "schedule: {} ({}){}",
            s["limit"].as_str().unwrap_or("?"),
            s["window"].as_str().unwrap_or("no window in force"),
            s["next_change"]
                .as_i64()
                .map(|t| format!("; changes at {}", format_time(t)))
                .unwrap_or_default()
        );
    }
    if running && let Some(f) = snapshot["fleet"].as_object() {
        let nodes = f["nodes"].as_array().cloned().unwrap_or_default();
        let running_nodes = nodes.iter().filter(|n| n["state"] == "running").count();
        outln!(
            "fleet: node \"{}\" of {} ({} running); database {}; `autorender-sync fleet status` for every node",
            f["node"].as_str().unwrap_or("?"),
            nodes.len(),
            running_nodes,
            f["database"].as_str().unwrap_or("?"),
        );
    }
    for c in &counts {
        outln!(
            "{}: {} settling, {} growing, {} pending, {} uploading ({} done), {} failed, {} done",
            c.root,
            c.settling,
            c.growing,
            c.pending,
            c.uploading,
            format_bytes(c.uploading_bytes_done.max(0) as u64),
            c.failed,
            c.done
        );
        if c.held > 0 {
            outln!("  {} held (their upload set is not ready yet)", c.held);
        }
        if c.skipped > 0 {
            outln!(
                "  {} skipped by policy (existing = \"skip\" or max_age; uploaded if they change)",
                c.skipped
            );
        }
        if c.interrupted > 0 {
            outln!(
                "  {} interrupted (the agent stopped mid-upload; they resume at its next start)",
                c.interrupted
            );
        }
        for (rel, err) in &c.failures {
            outln!("  failed: {rel}: {err}");
        }
        for (rel, err) in &c.retrying {
            outln!("  retrying: {rel}: {err}");
        }
        for (set, files, done) in sets.iter().filter(|(s, _, _)| s.root == c.root) {
            outln!("  set {}: {}", set.set_rel, set_line(set, *files, *done));
        }
    }
    if running
        && let Ok(flights) =
            serde_json::from_value::<Vec<crate::agent::FlightView>>(snapshot["in_flight"].clone())
        && !flights.is_empty()
    {
        outln!("uploading now:");
        for f in &flights {
            outln!("  {}", f.line());
        }
    }
    let (done, failed) = (
        elsewhere["done"].as_i64().unwrap_or(0),
        elsewhere["failed"].as_i64().unwrap_or(0),
    );
    if done + failed > 0 {
        outln!("outside the watched folders (sent by `upload`): {done} done, {failed} failed");
    }
    if !last.is_empty() {
        outln!("last uploads:");
        for h in &last {
            super::output::print_history_row(h);
        }
    }
    Ok(ExitCode::SUCCESS)
}
