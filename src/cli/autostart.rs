//! `autostart install | uninstall | status`: start `run` at login. The plan
//! (files and commands) comes from `crate::autostart`; `--print` shows it and
//! touches nothing. Install validates the config first, so what starts at
//! login is known to work.

use std::process::ExitCode;

use super::{Cli, CliError, CliResult};
use crate::autostart::{self, Context, Plan, linux};
use crate::config::resolve_config_path;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Start the agent at login (idempotent)
    Install {
        /// Print exactly what would be written and run; change nothing
        #[arg(long)]
        print: bool,
        /// Linux only: systemd user unit, or XDG autostart .desktop entry [default: systemd where installed]
        #[arg(long, value_enum)]
        method: Option<linux::Method>,
    },
    /// Remove what install wrote
    Uninstall,
    /// Show what is installed and whether the agent runs
    Status {
        #[arg(long)]
        json: bool,
    },
}

fn context(cli: &Cli) -> Result<Context, CliError> {
    let (config, _) = resolve_config_path(cli.config.as_deref()).map_err(CliError::Usage)?;
    let config = config.canonicalize().map_err(|_| {
        CliError::Usage(format!(
            "{} does not exist; create it with `autorender-sync init` and verify it with `autorender-sync check` first",
            config.display()
        ))
    })?;
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| CliError::Failed(format!("cannot find this program's own path: {e}")))?;
    Context::from_env(exe, config).map_err(CliError::Failed)
}

fn uid() -> String {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "501".into())
}

fn plan_for(ctx: &Context, method: Option<linux::Method>) -> Plan {
    if cfg!(target_os = "macos") {
        autostart::macos::plan(ctx, &uid())
    } else if cfg!(windows) {
        autostart::windows::plan(ctx)
    } else {
        autostart::linux::plan(ctx, linux::choose(method), linux::user_systemd_reachable())
    }
}

pub fn run(cli: &Cli, args: &Args) -> CliResult {
    let ctx = context(cli)?;
    match &args.action {
        Action::Install { print, method } => {
            let settings = super::load_settings(cli)?;
            if settings.watches.is_empty() {
                return Err(CliError::Usage(format!(
                    "{} has no [[watch]] entries, so the agent would have nothing to do; add one first",
                    ctx.config.display()
                )));
            }
            let plan = plan_for(&ctx, *method);
            if *print {
                super::write_stdout(plan.describe().as_bytes());
                return Ok(ExitCode::SUCCESS);
            }
            let warnings = plan.apply().map_err(CliError::Failed)?;
            for f in &plan.files {
                outln!("wrote {}", f.path.display());
            }
            outln!(
                "installed: {} (runs `{}`)",
                plan.method,
                autostart::shell_words(&ctx.argv())
            );
            for n in &plan.notes {
                outln!("note: {n}");
            }
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Uninstall => {
            let done = if cfg!(target_os = "macos") {
                autostart::macos::uninstall(&ctx, &uid())
            } else if cfg!(windows) {
                autostart::windows::uninstall()
            } else {
                autostart::linux::uninstall(&ctx, linux::user_systemd_reachable())
            }
            .map_err(CliError::Failed)?;
            if done.is_empty() {
                outln!("nothing to remove: autostart was not installed");
            }
            for d in done {
                outln!("{d}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Status { json } => {
            let installed = if cfg!(target_os = "macos") {
                autostart::macos::installed(&ctx)
            } else if cfg!(windows) {
                autostart::windows::installed()
            } else {
                autostart::linux::installed(&ctx)
            };
            let running = super::load_settings(cli)
                .map(|s| crate::journal::agent_running(&s.agent.state_dir))
                .unwrap_or(false);
            if *json {
                outln!(
                    "{}",
                    serde_json::json!({ "installed": installed, "agent_running": running })
                );
            } else {
                if installed.is_empty() {
                    outln!("autostart: not installed (`autorender-sync autostart install`)");
                }
                for i in &installed {
                    outln!("autostart: {} at {}", i.method, i.path.display());
                }
                outln!("agent: {}", if running { "running" } else { "not running" });
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
