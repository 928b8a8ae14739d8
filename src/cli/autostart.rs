//! `autostart install | uninstall | status`: start `run` at login. The plan
//! (files and commands) comes from `crate::autostart`; `--print` shows it and
//! touches nothing. Install validates the config first, so what starts at
//! login is known to work.

use std::process::ExitCode;

use super::{Cli, CliError, CliResult};
use crate::autostart::{self, Context, Plan, linux};
use crate::config::{Settings, resolve_config_path};
use crate::secrets;

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
        /// Save the API key from the environment where a service started at
        /// login finds it (it does not see your shell's environment): `file`
        /// (the default) writes it beside the config (mode 0600) and sets
        /// `api_key_file`; `keyring` stores it in the OS keyring and sets
        /// `api_key_source = "keyring"`
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "file", value_name = "WHERE")]
        store_key: Option<StoreKey>,
    },
    /// Remove what install wrote
    Uninstall,
    /// Show what is installed and whether the agent runs
    Status {
        #[arg(long)]
        json: bool,
    },
}

/// Where `install --store-key` puts the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKey {
    /// `api-key` beside the config, mode 0600
    File,
    /// The OS keyring (Secret Service, Keychain, Credential Manager)
    Keyring,
}

fn context(cli: &Cli) -> Result<Context, CliError> {
    let (config, _) = resolve_config_path(cli.config.as_deref()).map_err(CliError::Usage)?;
    let config = config.canonicalize().map_err(|_| {
        CliError::Usage(format!(
            "{} does not exist; create it with `autorender-sync init` and verify it with `autorender-sync check` first",
            config.display()
        ))
    })?;
    let exe =
        own_path().map_err(|e| CliError::Failed(format!("cannot find this program's own path: {e}")))?;
    Context::from_env(exe, config).map_err(|e| CliError::Failed(e.to_string()))
}

/// The path login should start: this program as it was invoked (a link
/// on PATH such as `/opt/homebrew/bin/autorender-sync` or
/// `~/.cargo/bin/autorender-sync`), so an upgrade that moves what the link
/// points at is still found; the resolved path only where the invoked one
/// is not this very program.
fn own_path() -> std::io::Result<std::path::PathBuf> {
    let real = std::env::current_exe()?.canonicalize()?;
    let is_me = |p: &std::path::Path| p.is_absolute() && p.canonicalize().is_ok_and(|c| c == real);
    if let Some(arg0) = std::env::args_os().next() {
        let arg0 = std::path::PathBuf::from(arg0);
        let invoked = if arg0.components().count() > 1 {
            // A path (relative ones from here).
            std::env::current_dir().ok().map(|d| d.join(&arg0))
        } else {
            // A name found on PATH: the first entry with it, as the shell found it.
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(&arg0))
                    .find(|p| p.is_file())
            })
        };
        if let Some(p) = invoked.map(|p| normalise(&p)).filter(|p| is_me(p)) {
            return Ok(p);
        }
    }
    Ok(real)
}

/// `p` without `.` and `..` components (lexically: a link is kept a link).
fn normalise(p: &std::path::Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
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
        Action::Install {
            print,
            method,
            store_key,
        } => {
            let mut settings = super::load_settings(cli)?;
            if settings.watches.is_empty() {
                return Err(CliError::Usage(format!(
                    "{} has no [[watch]] entries, so the agent would have nothing to do; add one first",
                    ctx.config.display()
                )));
            }
            let plan = plan_for(&ctx, *method);
            let service_key = secrets::service_source(&settings.api);
            if *print {
                super::write_stdout(plan.describe().as_bytes());
                match &service_key {
                    // What --store-key would do, too (the key itself never shown).
                    Err(_) if *store_key == Some(StoreKey::File) => {
                        let key_file = key_file_of(&ctx.config);
                        outln!(
                            "\n--- write {} (mode 0600) ---\n(the API key from the environment)",
                            key_file.display()
                        );
                        outln!(
                            "\n--- change {} ---\n[api]\n{}",
                            ctx.config.display(),
                            api_key_file_line(&key_file)
                        );
                    }
                    Err(_) if *store_key == Some(StoreKey::Keyring) => {
                        outln!(
                            "\n--- store in the OS keyring: service \"{}\", account \"{}\" ---\n(the API key from the environment)",
                            secrets::keyring::SERVICE,
                            crate::config::DEFAULT_KEYRING_ACCOUNT
                        );
                        outln!("\n--- change {} ---\n[api]\n{KEYRING_LINE}", ctx.config.display());
                    }
                    Err(e) => outln!("note: {e}"),
                    Ok(_) => {}
                }
                return Ok(ExitCode::SUCCESS);
            }
            match service_key {
                Ok(_) => {}
                Err(_) if *store_key == Some(StoreKey::File) => {
                    let path = store_key_file(&ctx.config, &settings)?;
                    outln!(
                        "stored the API key in {} (mode 0600) and set api_key_file to it",
                        path.display()
                    );
                    settings = super::load_settings(cli)?;
                    secrets::service_source(&settings.api).map_err(|e| CliError::Usage(e.to_string()))?;
                }
                Err(_) if *store_key == Some(StoreKey::Keyring) => {
                    store_key_keyring(&ctx.config, &settings)?;
                    outln!(
                        "stored the API key in the OS keyring (service \"{}\", account \"{}\") and set api_key_source = \"keyring\"",
                        secrets::keyring::SERVICE,
                        settings
                            .api
                            .keyring_account
                            .as_deref()
                            .unwrap_or(crate::config::DEFAULT_KEYRING_ACCOUNT)
                    );
                    settings = super::load_settings(cli)?;
                    secrets::service_source(&settings.api).map_err(|e| CliError::Usage(e.to_string()))?;
                }
                Err(e) => return Err(CliError::Usage(e.to_string())),
            }
            let warnings = plan.apply().map_err(|e| CliError::Failed(e.to_string()))?;
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
            .map_err(|e| CliError::Failed(e.to_string()))?;
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
            let settings = super::load_settings(cli);
            let running = settings
                .as_ref()
                .map(|s| crate::journal::agent_running(&s.agent.state_dir))
                .unwrap_or(false);
            // Which agent runs: the one autostart starts, or one from a terminal.
            let pid = settings
                .as_ref()
                .ok()
                .filter(|_| running)
                .and_then(|s| crate::journal::Reader::open(&s.agent.state_dir).ok().flatten())
                .and_then(|r| r.agent().ok().flatten())
                .and_then(|a| a.pid)
                .map(|p| p as u32);
            let started_by = pid.and_then(|p| crate::sys::started_by(p, linux::UNIT_NAME));
            let service_key = match &settings {
                Ok(s) => secrets::service_source(&s.api).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if *json {
                super::output::print_json(&serde_json::json!({
                    "installed": installed,
                    "agent_running": running,
                    "agent_pid": pid,
                    "agent_started_by": started_by,
                    "service_key": match &service_key {
                        Ok(source) => serde_json::json!({ "found": true, "source": source.to_string() }),
                        Err(problem) => serde_json::json!({ "found": false, "problem": problem }),
                    },
                }));
            } else {
                if installed.is_empty() {
                    outln!("autostart: not installed (`autorender-sync autostart install`)");
                }
                for i in &installed {
                    outln!("autostart: {} at {}", i.method, i.path.display());
                }
                match (running, pid, &started_by) {
                    (false, ..) => outln!("agent: not running"),
                    (true, Some(p), Some(by)) if by.starts_with("its ") => {
                        outln!("agent: running (pid {p}), started by {by}")
                    }
                    (true, Some(p), Some(by)) => outln!(
                        "agent: running (pid {p}), not started by autostart: started by {by}; autostart starts \
                         its own at the next login only if this one is not running then"
                    ),
                    (true, Some(p), None) => outln!("agent: running (pid {p})"),
                    (true, None, _) => outln!("agent: running"),
                }
                match &service_key {
                    Ok(source) => outln!("API key for the service: {source}"),
                    Err(problem) => outln!("API key for the service: NOT FOUND: {problem}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `install --store-key`: the key from this shell's environment goes to
/// `api-key` beside the config (0600), and the config's [api] table gets
/// `api_key_file` pointing at it (the rest of the file is left as written).
/// Where `--store-key` keeps the key: `api-key` beside the config.
fn key_file_of(config: &std::path::Path) -> std::path::PathBuf {
    config
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("api-key")
}

/// The line `--store-key` adds to the config's `[api]` table.
fn api_key_file_line(path: &std::path::Path) -> String {
    format!(
        "api_key_file = {}",
        toml::Value::String(path.to_string_lossy().into_owned())
    )
}

fn store_key_file(config: &std::path::Path, settings: &Settings) -> Result<std::path::PathBuf, CliError> {
    let (key, _, _) = secrets::lookup(&settings.api).map_err(|e| CliError::Usage(e.to_string()))?;
    let path = key_file_of(config);
    let fail = |what: &str, e: std::io::Error| CliError::Failed(format!("cannot {what}: {e}"));
    secrets::write_key_file(&path, &key).map_err(|e| fail(&format!("write {}", path.display()), e))?;
    let text = std::fs::read_to_string(config).map_err(|e| fail(&format!("read {}", config.display()), e))?;
    let line = api_key_file_line(&path);
    std::fs::write(config, with_api_key_file(&text, &line))
        .map_err(|e| fail(&format!("update {}", config.display()), e))?;
    Ok(path)
}

/// The line `--store-key keyring` adds to the config's `[api]` table.
const KEYRING_LINE: &str = "api_key_source = \"keyring\"";

/// `install --store-key keyring`: the key from this shell's environment
/// goes into the OS keyring, read back to be sure, and the config's [api]
/// table gets `api_key_source = "keyring"`.
fn store_key_keyring(config: &std::path::Path, settings: &Settings) -> Result<(), CliError> {
    if settings.api.api_key_file.is_some() {
        return Err(CliError::Usage(
            "the config sets api.api_key_file: remove it first (the key is read from one place), then store the key in the keyring".into(),
        ));
    }
    let (key, _, _) = secrets::lookup(&settings.api).map_err(|e| CliError::Usage(e.to_string()))?;
    // Already set to the keyring (its entry missing): stored there, the
    // config left as it is.
    let configured = settings.api.keyring_account.as_deref();
    let account = configured.unwrap_or(crate::config::DEFAULT_KEYRING_ACCOUNT);
    secrets::keyring::store(account, &key).map_err(|e| CliError::Failed(e.to_string()))?;
    if secrets::keyring::read(account).map_err(|e| CliError::Failed(e.to_string()))? != key {
        return Err(CliError::Failed(
            "the OS keyring gave back another key than the one stored; nothing changed in the config".into(),
        ));
    }
    if configured.is_some() {
        return Ok(());
    }
    let text = std::fs::read_to_string(config)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", config.display())))?;
    std::fs::write(config, with_api_key_file(&text, KEYRING_LINE))
        .map_err(|e| CliError::Failed(format!("cannot update {}: {e}", config.display())))
}

/// `text` with `line` as the first key of its [api] table (added at the end
/// when there is none).
fn with_api_key_file(text: &str, line: &str) -> String {
    let mut out = String::with_capacity(text.len() + line.len() + 8);
    let mut done = false;
    for l in text.split_inclusive('\n') {
        out.push_str(l);
        let header = l.split('#').next().unwrap_or("").trim();
        if !done && header == "[api]" {
            if !l.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
            done = true;
        }
    }
    if !done {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("\n[api]\n");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_api_key_file;

    #[test]
    fn the_key_file_line_goes_into_the_api_table() {
        let line = "api_key_file = \"/k\"";
        assert_eq!(
            with_api_key_file("[api]  # the service\nendpoint = \"x\"\n", line),
            "[api]  # the service\napi_key_file = \"/k\"\nendpoint = \"x\"\n"
        );
        assert_eq!(
            with_api_key_file("[[watch]]\npath = \"/d\"", line),
            "[[watch]]\npath = \"/d\"\n\n[api]\napi_key_file = \"/k\"\n"
        );
        // A commented-out [api] is not the table.
        assert!(with_api_key_file("# [api]\n", line).ends_with("\n[api]\napi_key_file = \"/k\"\n"));
    }
}
