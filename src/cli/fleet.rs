//! `fleet status`: every node of the fleet, its heartbeat, the leases it
//! holds and its recent throughput, and the files per state across the
//! fleet, read from the `[fleet]` database.

use std::process::ExitCode;

use serde_json::Value;

use super::output::{local_time, print_json};
use super::{Cli, CliError, CliResult};
use crate::units::format_bytes;

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Every node: its last heartbeat, the files it holds leases on, its recent throughput;
    /// and the files per state across the fleet
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cli: &Cli, cmd: &FleetCommand) -> CliResult {
    let FleetCommand::Status(args) = cmd;
    let settings = super::load_settings(cli)?;
    let Some(fleet) = &settings.fleet else {
        return Err(CliError::Usage(
            "the config has no [fleet] table; add one (database, node, lease) to run several agents on one share"
                .into(),
        ));
    };
    let doc = crate::journal::Fleet::read_status(fleet)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    if args.json {
        print_json(&doc);
    } else {
        print!("{}", render(&doc));
    }
    Ok(ExitCode::SUCCESS)
}

/// The human view of `fleet status --json`.
pub fn render(doc: &Value) -> String {
    let mut out = String::new();
    let nodes = doc["nodes"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "{} node{}\n",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" }
    ));
    for n in &nodes {
        let recent = &n["recent"];
        let minutes = recent["minutes"].as_u64().unwrap_or(10).max(1);
        let bytes = recent["bytes"].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "  {:<20} {:<8} heartbeat {} ({}s ago)  leases {}  last {minutes} min: {} files, {}/s  total {} files\n",
            n["node"].as_str().unwrap_or("?"),
            n["state"].as_str().unwrap_or("?"),
            local_time(n["heartbeat_at_ms"].as_i64().unwrap_or(0)),
            n["heartbeat_age_ms"].as_i64().unwrap_or(0) / 1000,
            n["leases"].as_i64().unwrap_or(0),
            recent["files"].as_u64().unwrap_or(0),
            format_bytes(bytes / (minutes * 60)),
            n["total"]["files"].as_u64().unwrap_or(0),
        ));
        for f in n["leased_files"].as_array().into_iter().flatten() {
            out.push_str(&format!("      leased: {}\n", f.as_str().unwrap_or("?")));
        }
    }
    out.push_str("files across the fleet:\n");
    match doc["files"].as_object() {
        Some(m) if !m.is_empty() => {
            for (state, v) in m {
                out.push_str(&format!(
                    "  {state:<10} {} ({})\n",
                    v["files"].as_u64().unwrap_or(0),
                    format_bytes(v["bytes"].as_u64().unwrap_or(0))
                ));
            }
        }
        _ => out.push_str("  none yet\n"),
    }
    out
}
