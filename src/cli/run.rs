//! `run`: the agent. Initial scan, then watch until SIGINT/SIGTERM (a second
//! signal exits at once; the journal is crash-safe either way). `--once`
//! scans, uploads what is pending and exits; `--dry-run` only logs.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::signals::{StopSignals, stop_on_signals};
use super::{Cli, CliError, CliResult};
use crate::agent::{AgentError, RunOptions};
use crate::app::Reload;
use crate::config::Settings;
use crate::journal::{self, Journal, JournalError};
use crate::secrets::{self, ApiKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scan, upload what is pending, then exit (for cron and scripts)
    #[arg(long)]
    pub once: bool,
    /// Log what would be uploaded (and which remote copies mirror_deletes would
    /// delete); send nothing and record nothing
    #[arg(long)]
    pub dry_run: bool,
    /// With --once: start no new upload once this much has been started (e.g. 50GiB; as
    /// rclone's --max-transfer); the rest waits for the next run
    #[arg(long, value_name = "SIZE", requires = "once", value_parser = parse_max_transfer)]
    pub max_transfer: Option<u64>,
    /// With a damaged or empty journal: move it aside (named in the log) and
    /// rebuild the state from the workspace by adoption, instead of refusing to start
    #[arg(long, conflicts_with = "dry_run")]
    pub recover: bool,
}

fn parse_max_transfer(s: &str) -> Result<u64, String> {
    match crate::units::parse_size(s) {
        Ok(0) => Err("must be more than 0 (drop the flag for no limit)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    // Caught from here on: a stop during start-up is a clean stop too.
    let signals = StopSignals::install();
    let settings = super::load_settings(cli)?;
    if settings.watches.is_empty() {
        return Err(CliError::Usage(match &settings.source {
            Some(file) => format!(
                "{} has no [[watch]] table, so there is nothing to watch; add one with the folder's `path` and \
                 its `remote_folder` (`autorender-sync init --force` rewrites it as a commented starter)",
                file.display()
            ),
            None => {
                let (path, _) = crate::config::resolve_config_path(None).map_err(CliError::Usage)?;
                format!(
                    "there is no config file ({} does not exist), so there is nothing to watch; create one with \
                     `autorender-sync init`, add a [[watch]] table, or name a config with --config",
                    path.display()
                )
            }
        }));
    }
    let key = match secrets::lookup_logged(&settings.api) {
        Ok((key, _)) => key,
        // Nothing is sent in a dry run, so no key is needed.
        Err(_) if args.dry_run => ApiKey::new("dry-run"),
        Err(e) => return Err(CliError::Usage(e.to_string())),
    };
    let uploader = super::uploader(&settings, key)?;
    let state_dir = settings.agent.state_dir.clone();
    let _lock = if args.dry_run {
        None
    } else {
        Some(journal::lock_agent(&state_dir).map_err(journal_error)?)
    };
    let journal = match Journal::open(&state_dir) {
        // A fleet node's local journal is opened again by the fleet backend:
        // the first handle (which only proved the file sound) is let go first.
        Ok(local) if settings.fleet.is_some() && !args.dry_run => {
            drop(local);
            open_fleet(&settings).await?
        }
        Err(JournalError::Damaged { path, reason }) if args.recover => {
            let aside = journal::move_aside(&state_dir).map_err(journal_error)?;
            tracing::warn!(
                "the journal {} was damaged ({reason}); moved aside to {}; rebuilding the state from the workspace \
                 (files already there are adopted, not sent again)",
                path.display(),
                aside.map(|p| p.display().to_string()).unwrap_or_default()
            );
            match settings.fleet {
                Some(_) => open_fleet(&settings).await?,
                None => Journal::open(&state_dir).map_err(journal_error)?,
            }
        }
        other => other.map_err(journal_error)?,
    };

    let token = CancellationToken::new();
    let opts = RunOptions {
        once: args.once,
        dry_run: args.dry_run,
        max_transfer: args.max_transfer,
    };
    // A running agent takes SIGHUP as "reload" (unless its terminal closed).
    let continuous = !args.once && !args.dry_run;
    let (hangup_tx, hangup_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(stop_on_signals(
        signals,
        token.clone(),
        continuous.then_some(hangup_tx),
    ));
    let reload = match &settings.source {
        Some(path) if continuous => Some(Reload {
            how: crate::app::reloader(path.clone(), &settings, uploader.limiter.clone()),
            hangups: hangup_rx,
        }),
        _ => None,
    };
    let fleet_journal = settings.fleet.is_some().then(|| journal.clone());
    let began = std::time::Instant::now();
    let report = crate::app::run(settings, uploader, journal, opts, token, reload)
        .await
        .map_err(agent_error)?;
    if args.dry_run {
        tracing::info!(
            "dry run: {} file(s) would be uploaded ({} new, {} changed; {}), {} already up to date",
            report.would_upload,
            report.would_upload - report.would_upload_changed,
            report.would_upload_changed,
            crate::units::format_bytes(report.would_upload_bytes),
            report.skipped
        );
        if report.would_delete > 0 {
            tracing::info!(
                "dry run: {} remote cop{} would be deleted (mirror_deletes; each after its grace period)",
                report.would_delete,
                if report.would_delete == 1 { "y" } else { "ies" }
            );
        }
    } else if args.once {
        tracing::info!(
            "{} uploaded ({} in {}), {} failed, {} already up to date, {} already in the workspace (adopted)",
            report.uploaded,
            crate::units::format_bytes(report.bytes_uploaded),
            crate::units::format_took(report.bytes_uploaded, began.elapsed()),
            report.failed,
            report.skipped,
            report.adopted
        );
        if report.transfer_limit_reached {
            tracing::info!("--max-transfer was reached: what is still queued goes at the next run");
        }
        if !report.sets_waiting.is_empty() {
            let shown: Vec<String> = report
                .sets_waiting
                .iter()
                .take(10)
                .map(|(set, why)| format!("{} ({})", crate::text::shown(set), crate::text::shown(why)))
                .collect();
            tracing::info!(
                "{} upload set(s) not complete yet, they go on at the next run: {}{}",
                report.sets_waiting.len(),
                shown.join("; "),
                if report.sets_waiting.len() > 10 {
                    "; …"
                } else {
                    ""
                }
            );
        }
        // A cron'd fleet node does not wait for files other nodes are sending.
        let elsewhere = fleet_journal
            .as_ref()
            .and_then(|j| j.fleet())
            .map_or(0, |f| f.held_elsewhere());
        if elsewhere > 0 {
            tracing::info!("{elsewhere} file(s) left to the other fleet nodes that hold them");
        }
    }
    if report.failed > 0 {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// How an agent that stopped on an error exits.
pub(super) fn agent_error(e: AgentError) -> CliError {
    match e {
        AgentError::Auth(m) => CliError::Auth(m),
        AgentError::Watch(e) => CliError::Usage(e.to_string()),
        AgentError::Shared(m) => CliError::Usage(m),
        AgentError::Control(e) => CliError::Usage(e.to_string()),
        AgentError::Journal(j) => journal_error(j),
    }
}

pub(super) fn journal_error(e: JournalError) -> CliError {
    match e {
        JournalError::Locked { .. }
        | JournalError::Open { .. }
        | JournalError::Damaged { .. }
        | JournalError::Newer { .. }
        | JournalError::Busy { .. }
        | JournalError::Vanished(_) => CliError::Usage(e.to_string()),
        other => CliError::Failed(other.to_string()),
    }
}

/// A fleet node's journal (the local one was opened, and so checked, first).
async fn open_fleet(settings: &Settings) -> Result<Journal, CliError> {
    let fleet = settings.fleet.as_ref().expect("called with [fleet]");
    Journal::open_fleet(&settings.agent.state_dir, fleet, settings.shares())
        .await
        .map_err(|e| CliError::Usage(e.to_string()))
}
