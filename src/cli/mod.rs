//! Command-line front end: argument parsing, logging set-up, and the one place
//! where errors become exit codes (0 ok, 1 some work failed, 2 usage/config,
//! 3 API key rejected). One file per command beside this one.

/// `println!` for command output: a closed pipe (`| head`, `| true`) ends
/// the program quietly (exit 0), as Unix tools do, instead of panicking.
/// Text for people: control characters and bidi overrides in what it
/// shows (file names, service messages) are escaped ([`crate::text`]);
/// `--json` goes through `output::print_json`, which keeps exact names.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::print_text(&format!($($arg)*))
    };
}

mod autostart;
mod check;
mod demo;
mod emulator;
mod fleet;
mod history;
mod init;
mod ls;
mod manpages;
mod output;
mod release;
mod retry;
mod run;
mod signals;
mod status;
mod steer;
mod upload;
mod verify;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::{ConfigErrors, Settings, resolve_config_path};

pub const LOG_ENV: &str = "AUTORENDER_SYNC_LOG";

#[derive(Debug, Parser)]
#[command(
    name = "autorender-sync",
    version,
    about = "Watch folders and upload finished files to an AutoRender workspace",
    long_about = "Watch local folders and upload each new or changed file, once it has stopped \
changing, to an AutoRender workspace through the multipart upload API.\n\n\
Start with `autorender-sync init`, set AUTORENDER_API_KEY, then `autorender-sync check`.\n\
Try it without an account: `autorender-sync demo`.",
    after_help = "Symbolic links below a watched root are never followed; the state dir is private (0700).\n\
Exit codes: 0 success, 1 some work failed, 2 usage or config error, 3 API key rejected, 130 `upload` stopped by Ctrl-C (run it again to resume)."
)]
pub struct Cli {
    /// Config file [default: $AUTORENDER_SYNC_CONFIG, else ~/.config/autorender-sync/config.toml]
    /// (not for emulator, demo, completions and man, which take no config)
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// More log detail (-v debug, -vv trace, -vvv trace for libraries too)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only errors
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,
    /// Log line format (logs go to stderr; filter with AUTORENDER_SYNC_LOG)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = GLOBAL)]
    pub log_format: LogFormat,
    /// Write the log to PATH instead of stderr, rotated at 10 MiB (keeping 3);
    /// for `run`, `[agent] log_file` in the config does the same
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    pub log_file: Option<PathBuf>,
    /// Colour in log lines: auto (a terminal, and NO_COLOR unset), always, never
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN", help_heading = GLOBAL)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

/// The heading global options are listed under in every command's help.
const GLOBAL: &str = "Global options";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: scan, then watch and upload files as they settle
    Run(run::Args),
    /// Show the agent's state: running or not, per-folder counts, last uploads
    Status(status::Args),
    /// Recent uploads (or failures) from the journal
    History(history::Args),
    /// Queue failed files again (exit 1 if a PATH holds no failed file)
    Retry(retry::Args),
    /// Let held upload sets go now, without their trigger, quiet time or missing frames
    Release(release::Args),
    /// Upload the given files now (no watching) and print where they landed; run it
    /// again after Ctrl-C to resume from the parts already stored
    Upload(upload::Args),
    /// Validate the config, resolve paths, and verify the API key
    Check(check::Args),
    /// Ask the workspace whether it still holds every uploaded file; --requeue the missing
    Verify(verify::Args),
    /// List a workspace folder: its subfolders, then each file's size, time, file_no and name
    Ls(ls::Args),
    /// Write a commented starter config to the config path
    Init(init::Args),
    /// Stop starting uploads (parts in flight finish); lasts across restarts until `resume` or --for runs out
    Pause(steer::PauseArgs),
    /// Start uploads again after `pause`
    Resume,
    /// Make the running agent re-read its config (as SIGHUP does); a broken config is refused and listed
    Reload,
    /// Print (and on a desktop, open) the running agent's web dashboard with a one-time login link
    Dashboard(steer::DashboardArgs),
    /// Several agents on one share (`[fleet]`): `fleet status` shows every node and the shared queue
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Run a local AutoRender upload API for offline trials and tests
    Emulator(Box<emulator::Args>),
    /// Try it without an account: a local emulator and an agent on a drop folder
    Demo(demo::Args),
    /// Start the agent at login: install, uninstall, status
    Autostart(autostart::Args),
    /// Print shell completions (bash, zsh, fish, powershell, elvish)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff); with --out-dir, write every page (one per subcommand)
    Man {
        /// Write every page (autorender-sync.1 and one per subcommand) into DIR
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// What a command ends with when it cannot do its job.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Auth(_) => 3,
        }
    }
}

pub type CliResult = Result<ExitCode, CliError>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging_to_file = match init_logging(&cli) {
        Ok(to_file) => to_file,
        Err(e) => {
            eprintln!("error: {}", shown_error(&e.to_string()));
            return ExitCode::from(e.exit_code());
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
        .and_then(|rt| rt.block_on(dispatch(cli)));
    match result {
        Ok(code) => code,
        Err(e) => {
            // A service's log is where its user looks: the reason it stopped goes there too.
            if logging_to_file {
                tracing::error!("{e}");
            }
            eprintln!("error: {}", shown_error(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(cli: Cli) -> CliResult {
    let takes_no_config = match &cli.command {
        Command::Emulator(_) => Some("emulator"),
        Command::Demo(_) => Some("demo"),
        Command::Completions { .. } => Some("completions"),
        Command::Man { .. } => Some("man"),
        _ => None,
    };
    if let (Some(name), Some(_)) = (takes_no_config, &cli.config) {
        return Err(CliError::Usage(format!(
            "`{name}` reads no config file, so --config has no effect there; drop it (`autorender-sync {name} --help` lists what it takes)"
        )));
    }
    match cli.command {
        Command::Run(ref args) => run::run(&cli, args).await,
        Command::Status(ref args) => status::run(&cli, args),
        Command::History(ref args) => history::run(&cli, args),
        Command::Retry(ref args) => retry::run(&cli, args).await,
        Command::Upload(ref args) => upload::run(&cli, args).await,
        Command::Check(ref args) => check::run(&cli, args).await,
        Command::Verify(ref args) => verify::run(&cli, args).await,
        Command::Release(ref args) => release::run(&cli, args).await,
        Command::Ls(ref args) => ls::run(&cli, args).await,
        Command::Init(ref args) => init::run(&cli, args),
        Command::Pause(ref args) => steer::pause(&cli, args).await,
        Command::Resume => steer::resume(&cli).await,
        Command::Reload => steer::reload(&cli).await,
        Command::Dashboard(ref args) => steer::dashboard(&cli, args).await,
        Command::Fleet(ref cmd) => fleet::run(&cli, cmd).await,
        Command::Emulator(ref args) => emulator::run(args).await,
        Command::Autostart(ref args) => autostart::run(&cli, args),
        Command::Demo(ref args) => demo::run(args).await,
        Command::Man { ref out_dir } => {
            manpages::run(out_dir.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            write_stdout(completions(shell).as_bytes());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The completion script for `shell`. clap_complete (4.6) names bash's
/// per-subcommand branches two ways for a hyphenated binary name
/// (`autorender__sync__subcmd__upload` where it decides, and
/// `autorender__subcmd__sync__subcmd__upload` where it completes), so only
/// the first word ever completed; the names are made one. Tested by
/// completing a subcommand's flags in bash, zsh and fish.
fn completions(shell: clap_complete::Shell) -> String {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "autorender-sync", &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    match shell {
        clap_complete::Shell::Bash => script.replace("autorender__subcmd__sync__", "autorender__sync__"),
        _ => script,
    }
}

/// Loads the settings every command shares (`check` uses the same path as `run`).
pub fn load_settings(cli: &Cli) -> Result<Settings, CliError> {
    let (path, explicit) = resolve_config_path(cli.config.as_deref()).map_err(CliError::Usage)?;
    Ok(Settings::load(&path, explicit)?)
}

/// The uploader every command builds the same way from the settings.
pub fn uploader(
    settings: &Settings,
    key: crate::secrets::ApiKey,
) -> Result<crate::upload::Uploader, CliError> {
    crate::upload::Uploader::from_settings(settings, key).map_err(|e| CliError::Usage(e.to_string()))
}

/// Paths named on the command line, as the journal records them: resolved
/// (symlinks too) where they exist, made absolute where they do not.
pub fn absolute_paths(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .map(|p| {
            p.canonicalize()
                .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        })
        .collect()
}

/// A journal that cannot be read: damage and a newer schema are the user's
/// to fix (exit 2, the message says how); anything else failed.
pub fn journal_read_error(e: crate::journal::JournalError) -> CliError {
    use crate::journal::JournalError;
    match e {
        JournalError::Damaged { .. } | JournalError::Newer { .. } | JournalError::Older { .. } => {
            CliError::Usage(e.to_string())
        }
        other => CliError::Failed(other.to_string()),
    }
}

/// The journal in the configured state dir, for commands beside an agent.
pub fn open_journal(settings: &Settings) -> Result<crate::journal::Journal, CliError> {
    crate::journal::Journal::open(&settings.agent.state_dir).map_err(|e| CliError::Usage(e.to_string()))
}

/// Prints one line to stdout; a closed pipe (`| head`) ends the program
/// quietly, as Unix tools do, instead of panicking.
/// An error for people: each of its lines escaped (config errors list one
/// problem a line).
fn shown_error(text: &str) -> String {
    text.split('\n')
        .map(crate::text::shown)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A line (or lines) for people, each line's hazards escaped.
pub fn print_text(text: &str) {
    let shown: Vec<_> = text.split('\n').map(crate::text::shown).collect();
    print_stdout(&shown.join("\n"));
}

pub fn print_stdout(line: &str) {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    write_stdout(text.as_bytes());
}

/// Writes `bytes` to stdout as they are; a closed pipe ends the program
/// quietly (exit 0).
pub fn write_stdout(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|_| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// `--color`: auto means a terminal, and never when NO_COLOR is set.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

/// Fields a log line's message already says in words (or, for a sha256,
/// that no reader of a terminal wants): `--log-format json` carries them as
/// fields (`path`, `remote`, `file_no`, `session`, `error`, and on an
/// upload `size`, `duration_ms`, `sha256`), the text format only once, in
/// the message.
const SAID_IN_THE_MESSAGE: [&str; 8] = [
    "path",
    "remote",
    "file_no",
    "session",
    "error",
    "size",
    "duration_ms",
    "sha256",
];

/// How the text format writes one field of a log line.
fn text_field(
    w: &mut tracing_subscriber::fmt::format::Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    // Names and service messages are other people's text: shown escaped,
    // so none can drive the terminal or start a forged log line.
    match field.name() {
        "message" => write!(w, "{}", crate::text::shown(&format!("{value:?}"))),
        name if SAID_IN_THE_MESSAGE.contains(&name) => Ok(()),
        name => write!(w, "{name}={} ", crate::text::shown(&format!("{value:?}"))),
    }
}

/// Where logs go: `--log-file`, else for `run` the config's `log_file`,
/// else stderr. Returns whether a file was opened.
fn init_logging(cli: &Cli) -> Result<bool, CliError> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn,autorender_sync=info",
        (false, 1) => "warn,autorender_sync=debug",
        (false, 2) => "info,autorender_sync=trace",
        (false, _) => "trace",
    };
    let filter = std::env::var(LOG_ENV)
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let file = match (&cli.log_file, &cli.command) {
        (Some(p), _) => Some(p.clone()),
        // A config that does not load is reported by `run` itself.
        (None, Command::Run(_)) => load_settings(cli).ok().and_then(|s| s.agent.log_file),
        (None, _) => None,
    };
    let (writer, ansi) = match &file {
        Some(path) => {
            let log = crate::logfile::RotatingFile::open(path).map_err(|e| {
                CliError::Usage(format!(
                    "cannot open the log file {}: {e}; fix --log-file or `agent.log_file`, or the folder's permissions",
                    path.display()
                ))
            })?;
            (BoxMakeWriter::new(std::sync::Arc::new(log)), false)
        }
        None => (BoxMakeWriter::new(std::io::stderr), use_color(cli.color)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match cli.log_format {
        // Machines read every line's `target` (the module that logged it).
        LogFormat::Json => builder.with_target(true).json().try_init(),
        LogFormat::Text => builder
            .with_target(cli.verbose > 0)
            .with_ansi(ansi)
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(text_field))
            .try_init(),
    };
    Ok(file.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
