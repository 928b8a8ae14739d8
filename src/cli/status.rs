//! `status`: read from the journal (safe while an agent runs): whether an
//! agent is running and since when, per watch root the counts by state, and
//! the last uploads.

use std::process::ExitCode;

use super::output::{local_time, print_json};
use super::{Cli, CliResult};
use crate::control::status::{Gathered, document, gather, set_line};

use crate::units::format_bytes;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> CliResult {
    let settings = super::load_settings(cli)?;
    let g = gather(&settings).map_err(super::journal_read_error)?;
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
        control,
    } = g;
    let state_dir = &state_dir;
    match (&agent, running) {
        (Some(a), true) => outln!(
            "agent: running (pid {}) since {}; last event {}{}",
            a.pid.unwrap_or(0),
            a.started_at.map(local_time).unwrap_or_default(),
            a.last_event_at
                .map(local_time)
                .unwrap_or_else(|| "none yet".into()),
            match snapshot["pause_reason"].as_str() {
                Some("service_unreachable") => format!(
                    "; UPLOADS WAITING: service unreachable since {}",
                    snapshot["unreachable_since"]
                        .as_i64()
                        .map(local_time)
                        .unwrap_or_default()
                ),
                Some("paused_by_user") => format!(
                    "; UPLOADS PAUSED {}",
                    snapshot["user_pause"]["until_ms"]
                        .as_i64()
                        .map(|u| format!("until {}", local_time(u)))
                        .unwrap_or_else(|| "until `autorender-sync resume`".into())
                ),
                Some("paused_by_schedule") => "; UPLOADS PAUSED by the schedule".into(),
                _ if snapshot["rate_limited_until"].is_i64() => format!(
                    "; UPLOADS WAITING: rate-limited by the service (429) until {}",
                    snapshot["rate_limited_until"]
                        .as_i64()
                        .map(local_time)
                        .unwrap_or_default()
                ),
                _ if snapshot["paused"].as_bool() == Some(true) =>
                    "; UPLOADS PAUSED (API key rejected)".into(),
                _ => String::new(),
            }
        ),
        (Some(a), false) => outln!(
            "agent: not running (last seen {})",
            a.heartbeat_at.map(local_time).unwrap_or_default()
        ),
        (None, _) => outln!("agent: has not run yet (journal: {})", state_dir.display()),
    }
    if let Some(url) = &control {
        outln!("control API: {url} (dashboard: `autorender-sync dashboard`)");
    }
    if running && let Some(c) = snapshot["concurrency"].as_object() {
        outln!(
            "transfer: {} of {} requests in flight ({}); {}",
            c["in_flight"].as_u64().unwrap_or(0),
            c["limit"].as_u64().unwrap_or(0),
            if c["adaptive"].as_bool() == Some(true) {
                format!("adaptive, at most {}", c["max"].as_u64().unwrap_or(0))
            } else {
                "fixed per file".to_string()
            },
            c["detail"].as_str().unwrap_or("")
        );
    }
    if running && let Some(s) = snapshot["schedule"].as_object() {
        outln!(
            "schedule: {} ({}){}",
            s["limit"].as_str().unwrap_or("?"),
            s["window"].as_str().unwrap_or("no window in force"),
            s["next_change"]
                .as_i64()
                .map(|t| format!("; changes at {}", local_time(t)))
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
        if c.deletes_waiting > 0 {
            outln!(
                "  {} deleted locally: their remote copies are deleted after delete_after (mirror_deletes)",
                c.deletes_waiting
            );
        }
        if let Some(why) = &c.deletes_held {
            outln!("  remote deletes held: {why}");
        }
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
        outln!(
            "uploading now: {}",
            crate::agent::total_line(&flights).unwrap_or_default()
        );
        for f in &flights {
            outln!("  {}", f.line());
        }
    }
    // What waits its turn, in all: files and bytes queued.
    let (queued, queued_bytes) = counts.iter().fold((0, 0), |(n, b), c| {
        (n + c.pending, b + c.pending_bytes.max(0) as u64)
    });
    if queued > 0 {
        outln!(
            "queued: {queued} file(s), {}",
            crate::units::format_bytes(queued_bytes)
        );
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
