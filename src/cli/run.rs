//! `run`: the agent. Initial scan, then watch until SIGINT/SIGTERM (a second
//! signal exits at once; the journal is crash-safe either way). `--once`
//! scans, uploads what is pending and exits; `--dry-run` only logs.

use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::signals::{StopSignals, stop_on_signals};
use super::{Cli, CliError, CliResult};
use crate::agent::{Agent, AgentError, Report, RunOptions};
use crate::clock::Clock;
use crate::config::Settings;
use crate::journal::{self, Journal, JournalError};
use crate::secrets::{self, ApiKey};
use crate::upload::Uploader;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scan, upload what is pending, then exit (for cron and scripts)
    #[arg(long)]
    pub once: bool,
    /// Log what would be uploaded; send nothing and record nothing
    #[arg(long)]
    pub dry_run: bool,
    /// With a damaged or empty journal: move it aside (named in the log) and
    /// rebuild the state from the workspace by adoption, instead of refusing to start
    #[arg(long, conflicts_with = "dry_run")]
    pub recover: bool,
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
    let key = match secrets::lookup(&settings.api) {
        Ok((key, source, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            tracing::debug!("API key from {source}");
            key
        }
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
        Err(JournalError::Damaged { path, reason }) if args.recover => {
            let aside = journal::move_aside(&state_dir).map_err(journal_error)?;
            tracing::warn!(
                "the journal {} was damaged ({reason}); moved aside to {}; rebuilding the state from the workspace \
                 (files already there are adopted, not sent again)",
                path.display(),
                aside.map(|p| p.display().to_string()).unwrap_or_default()
            );
            Journal::open(&state_dir).map_err(journal_error)?
        }
        other => other.map_err(journal_error)?,
    };

    let token = CancellationToken::new();
    tokio::spawn(stop_on_signals(signals, token.clone()));
    let opts = RunOptions {
        once: args.once,
        dry_run: args.dry_run,
    };
    let report = run_agent(settings, uploader, journal, opts, token).await?;
    if args.dry_run {
        tracing::info!(
            "dry run: {} file(s) would be uploaded, {} already up to date",
            report.would_upload,
            report.skipped
        );
    } else if args.once {
        tracing::info!(
            "{} uploaded, {} failed, {} already up to date, {} already in the workspace (adopted)",
            report.uploaded,
            report.failed,
            report.skipped,
            report.adopted
        );
    }
    if report.failed > 0 {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the agent until `token` is cancelled (or, with `--once`, until the
/// queue is empty), mapping its errors to exit codes: the one way `run` and
/// `demo` start it.
pub(super) async fn run_agent(
    settings: Settings,
    uploader: Uploader,
    journal: Journal,
    opts: RunOptions,
    token: CancellationToken,
) -> Result<Report, CliError> {
    let live = Arc::new(crate::control::Live::default());
    // The control plane serves a running agent (not a one-shot or dry run).
    let control = match settings.control.listen {
        Some(listen) if !opts.once && !opts.dry_run => {
            let status_settings = settings.clone();
            let status: crate::control::StatusFn = Arc::new(move || {
                super::status::gather(&status_settings)
                    .map(|g| super::status::document(&g))
                    .map_err(|e| e.to_string())
            });
            let started = crate::control::Control::start(
                listen,
                &settings.agent.state_dir,
                live.clone(),
                status,
                journal.clone(),
                token.clone(),
            )
            .await;
            match started {
                Ok(c) => Some(c),
                // The agent's job is uploading: a control API that cannot
                // start is a warning, not a reason to stop.
                Err(e) => {
                    tracing::warn!("the control API is off: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    let result = Agent::new(
        Arc::new(settings),
        Arc::new(uploader),
        journal,
        opts,
        Clock::system(),
    )
    .with_live(live)
    .run(token)
    .await;
    if let Some(c) = &control {
        c.remove_files();
    }
    result.map_err(|e| match e {
        AgentError::Auth(m) => CliError::Auth(m),
        AgentError::Watch(e) => CliError::Usage(e.to_string()),
        AgentError::Journal(j) => journal_error(j),
    })
}

pub(super) fn journal_error(e: JournalError) -> CliError {
    match e {
        JournalError::Locked { .. }
        | JournalError::Open { .. }
        | JournalError::Damaged { .. }
        | JournalError::Newer { .. }
        | JournalError::Vanished(_) => CliError::Usage(e.to_string()),
        other => CliError::Failed(other.to_string()),
    }
}
