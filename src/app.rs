//! The composition root: what a running agent is made of and how the parts
//! meet. It owns the live counters (`Live`), the one copy of the settings
//! in force (a `watch` channel the agent publishes each reload to), the
//! command channel, the config reload (SIGHUP and `POST /api/reload`), the
//! notification task, the control server and the agent itself. `run` and
//! `demo` start an agent only through [`run`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentError, Report, RunOptions};
use crate::clock::Clock;
use crate::config::Settings;
use crate::control::ReloadFn;
use crate::journal::Journal;
use crate::upload::Uploader;

/// How a running agent re-reads its config: on `POST /api/reload`, and on
/// each SIGHUP that arrives on `hangups`.
pub struct Reload {
    pub how: ReloadFn,
    pub hangups: tokio::sync::mpsc::Receiver<()>,
}

/// Loads the config at `path` again and builds an uploader from it; every
/// problem is listed. What cannot change while running (the state dir, the
/// control address, the log file) keeps its value, with a warning.
/// The new uploader shares `limiter` with the old one, so a schedule's rate
/// reaches the transfers still in flight.
pub fn reloader(
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
/// queue is empty), with what serves it: the one way `run` and `demo` start
/// it.
pub async fn run(
    settings: Settings,
    uploader: Uploader,
    journal: Journal,
    opts: RunOptions,
    token: CancellationToken,
    reload: Option<Reload>,
) -> Result<Report, AgentError> {
    let live = Arc::new(crate::control::Live::default());
    // The one copy of the settings in force: the agent publishes each config
    // it switches to; notifications and the control plane read the newest.
    let (current, current_rx) = tokio::sync::watch::channel(Arc::new(settings.clone()));
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
            current_rx.clone(),
            live.clone(),
            token.clone(),
        ));
    }
    // The control plane serves a running agent (not a one-shot or dry run).
    let control = match settings.control.listen {
        Some(listen) if !opts.once && !opts.dry_run => {
            let hooks = crate::control::Hooks {
                settings: current_rx.clone(),
                reload: reload_fn.clone(),
                commands: commands_tx.clone(),
                journal: journal.clone(),
            };
            let started = crate::control::Control::start(
                listen,
                settings.control.explicit,
                &settings.agent.state_dir,
                live.clone(),
                hooks,
                token.clone(),
            )
            .await;
            match started {
                Ok(c) => Some(c),
                // The address the config names is another program's.
                Err(e @ crate::control::ControlError::Taken { .. }) => {
                    token.cancel();
                    return Err(e.into());
                }
                // Otherwise the agent's job is uploading: a control API
                // that cannot start is a warning, not a reason to stop.
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
    result
}
