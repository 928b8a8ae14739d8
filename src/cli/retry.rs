//! `retry`: put failed files back in the queue (named ones, or `--all`).
//! Safe while an agent runs: it picks them up within a second.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Cli, CliError, CliResult};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Failed files (or folders) to retry
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Retry every failed file
    #[arg(long, conflicts_with = "paths")]
    pub all: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    if args.paths.is_empty() && !args.all {
        return Err(CliError::Usage(
            "name the failed files to retry, or pass --all".into(),
        ));
    }
    let settings = super::load_settings(cli)?;
    let paths = super::absolute_paths(&args.paths);
    let journal = super::open_journal(&settings)?;
    let done = journal
        .retry(paths)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if args.json {
        super::output::print_json(
            &serde_json::json!({ "requeued": done.requeued, "not_failed": done.not_failed }),
        );
    } else {
        outln!("{} failed file(s) queued again", done.requeued);
        for p in &done.not_failed {
            eprintln!(
                "error: {}: no failed file there (`autorender-sync status` lists the failed files)",
                p.display()
            );
        }
    }
    // A path that named nothing to retry is a mistake worth an exit status.
    Ok(if done.not_failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
