//! `check`: every config problem at once, the resolved paths, which key source
//! was used (never the key), and one authenticated call unless `--offline`.

use std::process::ExitCode;

use super::{Cli, CliError, CliResult};
use crate::api::{ApiError, Client};
use crate::config::{AfterUpload, resolve_config_path};
use crate::secrets;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not contact the service (skip the API key verification)
    #[arg(long)]
    pub offline: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let (path, _) = resolve_config_path(cli.config.as_deref()).map_err(CliError::Usage)?;
    let settings = super::load_settings(cli)?;
    match &settings.source {
        Some(p) => outln!("config: {} (valid)", p.display()),
        None => outln!("config: {} does not exist; using the defaults", path.display()),
    }
    outln!("endpoint: {}", settings.api.endpoint);
    outln!("state dir: {}", settings.agent.state_dir.display());
    let running = crate::journal::agent_running(&settings.agent.state_dir)
        .then(|| crate::control::status::control_url(&settings.agent.state_dir))
        .flatten();
    match (settings.control.listen, running) {
        (None, _) => outln!("control API: off"),
        (Some(a), Some(url)) if url == format!("http://{a}") => {
            outln!("control API: {url} (the running agent's)")
        }
        (Some(a), Some(url)) => outln!(
            "control API: {a}{}; the running agent listens on {url}",
            if settings.control.explicit {
                ""
            } else {
                " (the default)"
            }
        ),
        (Some(a), None) => outln!(
            "control API: http://{a}{}",
            if settings.control.explicit {
                ""
            } else {
                " (the default; another port if taken)"
            }
        ),
    }
    if settings.watches.is_empty() {
        outln!("watches: none (`run` needs at least one [[watch]]; `upload` works without)");
    }
    for w in &settings.watches {
        let after = match &w.after_upload {
            AfterUpload::Keep => "keep".to_string(),
            AfterUpload::Delete => "delete".to_string(),
            AfterUpload::Move(p) => format!("move to {}", p.display()),
        };
        outln!(
            "watch: {} → {} (include {:?}, exclude {:?}, settle {:?}, after upload: {after})",
            w.path.display(),
            if w.remote_folder.is_empty() {
                "/"
            } else {
                &w.remote_folder
            },
            w.include_patterns,
            w.exclude_patterns,
            w.settle,
        );
        for (key, hook) in [
            ("on_uploaded", &w.hooks.on_uploaded),
            ("on_set_complete", &w.hooks.on_set_complete),
        ] {
            if let Some(h) = hook {
                outln!(
                    "  {key}: {} (no shell; stopped after {:?})",
                    h.argv
                        .iter()
                        .map(|a| crate::text::shown(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" "),
                    h.timeout
                );
            }
        }
    }
    let windows = &settings.agent.schedule;
    if !windows.is_empty() {
        let (now, tz) = (crate::clock::system_ms(), jiff::tz::TimeZone::system());
        for w in windows {
            outln!("schedule window: {}", w.describe());
        }
        let window = crate::schedule::in_force(windows, now, &tz);
        let limit = crate::schedule::limit(windows, window, settings.agent.bandwidth_limit);
        outln!(
            "schedule now: {limit} ({}){}",
            window.map_or_else(|| "no window in force".to_string(), |i| windows[i].describe()),
            crate::schedule::next_change(windows, now, &tz)
                .map(|t| format!("; changes at {}", super::output::local_time(t)))
                .unwrap_or_default()
        );
    }
    if let Some(f) = &settings.fleet {
        outln!(
            "fleet: node \"{}\", lease {}s, database from {}",
            f.node,
            f.lease.as_secs_f64(),
            match &f.database {
                crate::config::FleetDb::Url(_) => "`fleet.database`".to_string(),
                crate::config::FleetDb::Env(name) => format!("${name}"),
            }
        );
    }
    let (key, source) = secrets::lookup_logged(&settings.api).map_err(|e| CliError::Usage(e.to_string()))?;
    outln!("API key: from {source}");
    if args.offline {
        outln!("API key not verified (--offline)");
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::new(settings.api.endpoint.clone(), key, settings.api.request_timeout)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    match client.verify_key().await {
        Ok(()) => {
            outln!("API key: accepted by {}", settings.api.endpoint);
            if let Some(f) = &settings.fleet {
                let doc = crate::journal::Fleet::read_status(f)
                    .await
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                outln!(
                    "fleet database: reachable; {} node(s) have joined",
                    doc["nodes"].as_array().map_or(0, Vec::len)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ApiError::Auth { status, message }) => Err(CliError::Auth(format!(
            "the service rejected the API key from {source} ({status}: {message}); set the right key"
        ))),
        Err(e) => Err(CliError::Failed(format!(
            "could not verify the API key with {}: {e}",
            settings.api.endpoint
        ))),
    }
}
