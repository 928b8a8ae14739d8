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
use crate::control::ReloadFn;
use crate::control::notify::Current;
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
            how: reloader(path.clone(), &settings, uploader.limiter.clone()),
            hangups: hangup_rx,
        }),
        _ => None,
    };
    let fleet_journal = settings.fleet.is_some().then(|| journal.clone());
    let report = run_agent(settings, uploader, journal, opts, token, reload).await?;
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

/// How a running agent re-reads its config: on `POST /api/reload`, and on
/// each SIGHUP that arrives on `hangups`.
pub(super) struct Reload {
    pub how: ReloadFn,
    pub hangups: tokio::sync::mpsc::Receiver<()>,
}

/// Loads the config at `path` again and builds an uploader from it; every
/// problem is listed. What cannot change while running (the state dir, the
/// control address, the log file) keeps its value, with a warning.
/// The new uploader shares `limiter` with the old one, so a schedule's rate
/// reaches the transfers still in flight.
fn reloader(
    path: std::path::PathBuf,
    running: &Settings,
    limiter: Option<Arc<crate::limiter::Limiter>>,
) -> ReloadFn {
    let (state_dir, listen, log_file, fleet) = (
        running.agent.state_dir.clone(),
        running.control.listen,
        running.agent.log_file.clone(),
        running.fleet.clone(),
    );
    Arc::new(move || {
        let mut s =
            Settings::load(&path, true).map_err(|e| e.0.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
        if s.watches.is_empty() {
            return Err(vec![format!(
                "{} has no [[watch]] table left; an agent with nothing to watch is stopped, not reloaded",
                path.display()
            )]);
        }
        // The journal's backend is chosen at start: joining, leaving or
        // moving a fleet needs a restart, and the old settings stay meanwhile.
        if s.fleet != fleet {
            return Err(vec![
                "`[fleet]` changed; joining, leaving or changing a fleet takes a restart of the agent \
                 (`autorender-sync run`), so this config was not applied"
                    .to_string(),
            ]);
        }
        for (what, changed) in [
            ("agent.state_dir", s.agent.state_dir != state_dir),
            ("control.listen", s.control.listen != listen),
            ("agent.log_file", s.agent.log_file != log_file),
        ] {
            if changed {
                tracing::warn!("`{what}` changed; it takes effect when the agent is restarted");
            }
        }
        s.agent.state_dir = state_dir.clone();
        s.control.listen = listen;
        s.agent.log_file = log_file.clone();
        let (mut uploader, _) = Uploader::connect(&s).map_err(|e| vec![e])?;
        if limiter.is_some() {
            uploader.limiter = limiter.clone();
        }
        let transfer: Arc<dyn crate::upload::Transfer> = Arc::new(uploader);
        Ok((Arc::new(s), transfer))
    })
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
    reload: Option<Reload>,
) -> Result<Report, CliError> {
    let live = Arc::new(crate::control::Live::default());
    let current: Current = Arc::new(std::sync::RwLock::new(Arc::new(settings.clone())));
    let (commands_tx, commands_rx) = tokio::sync::mpsc::channel(16);
    let (reload_how, hangups) = match reload {
        Some(r) => (Some(r.how), Some(r.hangups)),
        None => (None, None),
    };
    let reload_fn: ReloadFn = reload_how.clone().unwrap_or_else(|| {
        Arc::new(|| {
            Err(vec![
                "this agent was started without a config file, so there is none to reload".into(),
            ])
        })
    });
    if let Some(mut hangups) = hangups {
        let (how, commands) = (reload_fn.clone(), commands_tx.clone());
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reading the config again");
                match crate::control::reload_now(&how, &commands).await {
                    Ok(_) => {}
                    Err(problems) => tracing::error!(
                        "the config was not reloaded; the agent goes on with the one it has:\n  - {}",
                        problems.join("\n  - ")
                    ),
                }
            }
        });
    }
    if !opts.dry_run {
        tokio::spawn(crate::control::notify::run(
            journal.clone(),
            current.clone(),
            live.clone(),
            token.clone(),
        ));
    }
    // The control plane serves a running agent (not a one-shot or dry run).
    let control = match settings.control.listen {
        Some(listen) if !opts.once && !opts.dry_run => {
            let for_status = current.clone();
            let status: crate::control::DocFn = Arc::new(move || {
                let s = for_status.read().expect("settings lock").clone();
                super::status::gather(&s)
                    .map(|g| super::status::document(&g))
                    .map_err(|e| e.to_string())
            });
            let state_dir = settings.agent.state_dir.clone();
            let history: crate::control::HistoryFn = Arc::new(move |limit, failed| {
                let rows = match journal::Reader::open(&state_dir).map_err(|e| e.to_string())? {
                    Some(r) => r.history(limit, failed).map_err(|e| e.to_string())?,
                    None => Vec::new(),
                };
                Ok(serde_json::Value::Array(
                    rows.iter().map(super::output::file_json).collect(),
                ))
            });
            let hooks = crate::control::Hooks {
                status,
                history,
                reload: reload_fn.clone(),
                commands: commands_tx.clone(),
                journal: journal.clone(),
            };
            let started = crate::control::Control::start(
                listen,
                &settings.agent.state_dir,
                live.clone(),
                hooks,
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
    .with_commands(commands_rx)
    .with_current(current)
    .run(token)
    .await;
    if let Some(c) = &control {
        c.remove_files();
    }
    result.map_err(|e| match e {
        AgentError::Auth(m) => CliError::Auth(m),
        AgentError::Watch(e) => CliError::Usage(e.to_string()),
        AgentError::Shared(m) => CliError::Usage(m),
        AgentError::Journal(j) => journal_error(j),
    })
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
