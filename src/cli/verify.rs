//! `verify [PATH...]`: for every file the journal records as done (or those
//! under PATH), ask the workspace whether it still holds it: the file_no (or,
//! failing that, the name) in its folder's listing, with the same size and,
//! where the service exposes metadata, the same sha256. Lists what is missing
//! or different and exits 1 if anything is; `--requeue` queues those again.
//! Each folder is listed once, so the cost is pages, not a request per file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

use super::{Cli, CliError, CliResult};
use crate::api::ApiError;
use crate::journal::FileRow;
use crate::secrets;
use crate::workspace::Workspace;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only files under these paths [default: every done file]
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Put missing or different files back in the queue (the agent, or `run --once`, uploads them)
    #[arg(long)]
    pub requeue: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Problem {
    path: String,
    remote: String,
    file_no: Option<String>,
    problem: String,
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let settings = super::load_settings(cli)?;
    let (key, source, warnings) =
        secrets::lookup(&settings.api).map_err(|e| CliError::Usage(e.to_string()))?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let uploader = super::uploader(&settings, key)?;
    let workspace: &Workspace = &uploader.workspace;
    let paths = super::absolute_paths(&args.paths);
    let journal = super::open_journal(&settings)?;
    let rows = journal
        .done_files(paths)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let bar = (!args.json && !cli.quiet && std::io::stderr().is_terminal() && rows.len() > 50).then(|| {
        let b = indicatif::ProgressBar::new(rows.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("verifying {bar:30} {pos}/{len} files {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut problems: Vec<(i64, Problem)> = Vec::new();
    for row in &rows {
        if let Some(b) = &bar {
            b.inc(1);
        }
        match check(workspace, row).await {
            Ok(None) => {}
            Ok(Some(p)) => problems.push((row.id, p)),
            Err(e @ ApiError::Auth { .. }) => {
                return Err(CliError::Auth(format!("{e}; check the key in {source}")));
            }
            Err(e) => return Err(CliError::Failed(format!("cannot ask the workspace: {e}"))),
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let requeued = if args.requeue && !problems.is_empty() {
        let n = journal
            .requeue(problems.iter().map(|(id, _)| *id).collect())
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        // In a fleet, the shared record must say "not uploaded" too, or no
        // node would send the file again.
        let lost: Vec<_> = rows
            .iter()
            .filter(|r| problems.iter().any(|(id, _)| *id == r.id))
            .cloned()
            .collect();
        crate::journal::Fleet::requeue_lost(&settings, &lost)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        n
    } else {
        0
    };
    if args.json {
        let list: Vec<&Problem> = problems.iter().map(|(_, p)| p).collect();
        let out = serde_json::json!({"checked": rows.len(), "problems": list, "requeued": requeued});
        super::output::print_json(&out);
    } else {
        for (_, p) in &problems {
            super::print_stdout(&format!(
                "{}: {} ({}, file_no {})",
                p.problem,
                p.path,
                p.remote,
                p.file_no.as_deref().unwrap_or("-")
            ));
        }
        super::print_stdout(&format!(
            "{} file(s) checked, {} missing or different{}",
            rows.len(),
            problems.len(),
            if args.requeue {
                format!(", {requeued} queued again")
            } else if problems.is_empty() {
                String::new()
            } else {
                "; `verify --requeue` queues them again".into()
            }
        ));
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `Ok(None)`: the workspace holds this file as recorded.
async fn check(workspace: &Workspace, row: &FileRow) -> Result<Option<Problem>, ApiError> {
    let folder = row.remote_path.clone().unwrap_or_default();
    let name = row.remote_name.clone().unwrap_or_else(|| {
        Path::new(&row.rel)
            .file_name()
            .map(|n| n.to_string_lossy().nfc().collect())
            .unwrap_or_default()
    });
    let remote = if folder.is_empty() {
        name.clone()
    } else {
        format!("{folder}/{name}")
    };
    let problem = |what: &str| Problem {
        path: row.local_path().display().to_string(),
        remote: remote.clone(),
        file_no: row.file_no.clone(),
        problem: what.to_string(),
    };
    let listing = workspace.listing(&folder).await?;
    let want: String = name.nfc().collect();
    let found = listing
        .iter()
        .find(|f| row.file_no.as_deref() == Some(f.file_no.as_str()))
        .or_else(|| listing.iter().find(|f| f.name.nfc().collect::<String>() == want));
    let found = match found {
        Some(f) => Some(f.clone()),
        // A listing may lag or hide items; the file's own record is the last word.
        None => match &row.file_no {
            Some(no) => workspace.client().file_details(no).await?,
            None => None,
        },
    };
    let Some(f) = found else {
        return Ok(Some(problem("missing")));
    };
    if let (Some(remote_size), Some(local)) = (f.size, row.done_size)
        && remote_size != local as u64
    {
        return Ok(Some(problem(&format!(
            "different size ({remote_size} bytes, recorded {local})"
        ))));
    }
    if let (Some(remote_sha), Some(local)) = (&f.sha256, &row.done_sha256)
        && remote_sha != local
    {
        return Ok(Some(problem("different content (sha256)")));
    }
    Ok(None)
}
