//! `history`: recent uploads from the journal (local path → remote
//! folder/name, file_no, url, size, when); `--failed` for the failures.

use std::process::ExitCode;

use super::{Cli, CliError, CliResult};
use crate::journal::{self, HistoryRow};
use crate::units::format_bytes;

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

pub fn print_row(h: &HistoryRow) {
    let when = super::status::format_time(h.at);
    if h.ok {
        println!(
            "{when}  {} → {}/{}  file_no={}  {}  {}",
            h.local_path,
            h.remote_folder.as_deref().unwrap_or(""),
            h.remote_name.as_deref().unwrap_or(""),
            h.file_no.as_deref().unwrap_or("-"),
            format_bytes(h.size.unwrap_or(0).max(0) as u64),
            h.url.as_deref().unwrap_or("-")
        );
    } else {
        println!(
            "{when}  {}  FAILED: {}",
            h.local_path,
            h.error.as_deref().unwrap_or("")
        );
    }
}

pub fn run(cli: &Cli, args: &Args) -> CliResult {
    let settings = super::load_settings(cli)?;
    let rows = match journal::open_read_only(&settings.agent.state_dir).map_err(super::journal_read_error)? {
        Some(c) => {
            journal::history(&c, args.limit, args.failed).map_err(|e| CliError::Failed(e.to_string()))?
        }
        None => Vec::new(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
    } else if rows.is_empty() {
        println!("no uploads recorded yet");
    } else {
        rows.iter().for_each(print_row);
    }
    Ok(ExitCode::SUCCESS)
}
