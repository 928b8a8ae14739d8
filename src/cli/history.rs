//! `history`: recent uploads from the journal (local path → remote
//! folder/name, file_no, url, size, when); `--failed` for the failures.

use std::process::ExitCode;

use super::{Cli, CliError, CliResult};
use crate::journal;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many entries, newest first
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Only files that failed
    #[arg(long)]
    pub failed: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: &Cli, args: &Args) -> CliResult {
    let settings = super::load_settings(cli)?;
    let rows = match journal::Reader::open(&settings.agent.state_dir).map_err(super::journal_read_error)? {
        Some(r) => r
            .history(args.limit, args.failed)
            .map_err(|e| CliError::Failed(e.to_string()))?,
        None => Vec::new(),
    };
    if args.json {
        super::output::print_json(&rows.iter().map(super::output::file_json).collect());
    } else if rows.is_empty() && args.failed {
        outln!("no failed uploads recorded");
    } else if rows.is_empty() {
        outln!("no uploads recorded yet");
    } else {
        rows.iter().for_each(super::output::print_history_row);
    }
    Ok(ExitCode::SUCCESS)
}
