//! `verify [PATH...]`: for every file the journal records as done (or those
//! under PATH), ask the workspace whether it still holds it: the file_no (or,
//! failing that, the name) in its folder's listing, with the same size and,
//! where the service exposes metadata, the same sha256. Lists what is missing
//! or different and exits 1 if anything is; `--requeue` queues those again.
//! Each folder is listed once, so the cost is pages, not a request per file.
//!
//! The sha256 in the remote metadata is the one this agent sent: it proves
//! what was asked for, not what storage holds. `--content` downloads what
//! each file's `url` serves and hashes it (streamed, a few at a time), and
//! tells "different content" apart from "missing". Other objects with the
//! same name in the folder (left by past duplicates) are listed as extra
//! copies; they do not fail the check.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use futures_util::StreamExt;
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

use super::{Cli, CliError, CliResult};
use crate::api::ApiError;
use crate::journal::FileRow;
use crate::workspace::Workspace;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only files under these paths [default: every done file]
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Put missing or different files back in the queue (the agent, or `run --once`, uploads them)
    #[arg(long)]
    pub requeue: bool,
    /// Also download what each file's url serves and compare its sha256 with the file's (the
    /// metadata only echoes what was sent)
    #[arg(long)]
    pub content: bool,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

/// Files hashed through their url at once.
const CONTENT_CONCURRENCY: usize = 4;

#[derive(Debug, Serialize)]
struct Extra {
    remote: String,
    file_no: String,
    size: Option<u64>,
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
    let (uploader, source) = crate::upload::Uploader::connect(&settings).map_err(CliError::Usage)?;
    let workspace: &Workspace = &uploader.workspace;
    let paths = super::absolute_paths(&args.paths);
    let journal = super::open_journal(&settings)?;
    let rows = journal
        .done_files(paths)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let total_bytes: u64 = rows.iter().map(|r| r.done_size.unwrap_or(0).max(0) as u64).sum();
    let bar =
        (!args.json && !cli.quiet && std::io::stderr().is_terminal() && (rows.len() > 50 || args.content))
            .then(|| {
                let (len, template) = if args.content {
                    (
                        total_bytes,
                        "verifying content {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                } else {
                    (rows.len() as u64, "verifying {bar:30} {pos}/{len} files {eta}")
                };
                let b = indicatif::ProgressBar::new(len);
                b.set_style(
                    indicatif::ProgressStyle::with_template(template)
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b
            });
    let content = args.content;
    let checks = futures_util::stream::iter(rows.iter().map(|row| {
        let bar = bar.clone();
        async move {
            let r = check(workspace, row, content).await;
            if let Some(b) = &bar {
                b.inc(if content {
                    row.done_size.unwrap_or(0).max(0) as u64
                } else {
                    1
                });
            }
            (row.id, r)
        }
    }))
    .buffered(if content { CONTENT_CONCURRENCY } else { 1 });
    let results: Vec<(i64, Result<Checked, ApiError>)> = checks.collect().await;
    let mut problems: Vec<(i64, Problem)> = Vec::new();
    let mut extras: Vec<Extra> = Vec::new();
    for (id, r) in results {
        match r {
            Ok(c) => {
                if let Some(p) = c.problem {
                    problems.push((id, p));
                }
                extras.extend(c.extra);
            }
            Err(e @ ApiError::Auth { .. }) => {
                return Err(CliError::Auth(format!("{e}; check the key in {source}")));
            }
            Err(e) => return Err(CliError::Failed(format!("cannot ask the workspace: {e}"))),
        }
    }
    // One object can be the extra copy beside several records' files.
    extras.sort_by(|a, b| a.file_no.cmp(&b.file_no));
    extras.dedup_by(|a, b| a.file_no == b.file_no);
    let recorded: std::collections::HashSet<&str> =
        rows.iter().filter_map(|r| r.file_no.as_deref()).collect();
    extras.retain(|e| !recorded.contains(e.file_no.as_str()));
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
        let out = serde_json::json!({"checked": rows.len(), "content": args.content, "problems": list,
                                     "extra_copies": extras, "requeued": requeued});
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
        for e in &extras {
            super::print_stdout(&format!(
                "extra copy: {} (file_no {}, {})",
                crate::text::shown(&e.remote),
                e.file_no,
                e.size
                    .map(crate::units::bytes_exact)
                    .unwrap_or_else(|| "size unknown".into())
            ));
        }
        super::print_stdout(&format!(
            "{} file(s) checked{}, {} missing or different{}{}",
            rows.len(),
            if args.content { " by content" } else { "" },
            problems.len(),
            if extras.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} extra same-name copies (not this agent's record; delete them in the workspace if unwanted)",
                    extras.len()
                )
            },
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

/// What one record's check found.
struct Checked {
    problem: Option<Problem>,
    extra: Vec<Extra>,
}

/// `problem: None`: the workspace holds this file as recorded (by content
/// too, with `content`).
async fn check(workspace: &Workspace, row: &FileRow, content: bool) -> Result<Checked, ApiError> {
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
        path: crate::text::shown(&row.local_path().display().to_string()).into_owned(),
        remote: crate::text::shown(&remote).into_owned(),
        file_no: row.file_no.clone(),
        problem: what.to_string(),
    };
    // The folder's listing, fetched once per run and indexed: each record
    // is a lookup, not a pass over the folder.
    let listing = workspace.listing(&folder).await?;
    let by_no = row.file_no.as_deref().and_then(|no| listing.by_file_no(no));
    let same_name: Vec<_> = listing.named(&name).collect();
    let found = by_no.or_else(|| same_name.first().copied());
    // Other objects under this name than the one recorded: the trace of
    // past duplicates (told, not counted as a problem).
    let extra = match found {
        Some(f) => same_name
            .iter()
            .filter(|o| o.file_no != f.file_no)
            .map(|o| Extra {
                remote: remote.clone(),
                file_no: o.file_no.clone(),
                size: o.size,
            })
            .collect(),
        None => Vec::new(),
    };
    let found = match found {
        Some(f) => Some(f.clone()),
        // A listing may lag or hide items; the file's own record is the last word.
        None => match &row.file_no {
            Some(no) => workspace.client().file_details(no).await?,
            None => None,
        },
    };
    let done = |problem: Option<Problem>| {
        Ok(Checked {
            problem,
            extra: Vec::new(),
        })
    };
    let Some(f) = found else {
        return done(Some(problem("missing")));
    };
    let checked = |problem: Option<Problem>| Ok(Checked { problem, extra });
    if let (Some(remote_size), Some(local)) = (f.size, row.done_size)
        && remote_size != local as u64
    {
        return checked(Some(problem(&format!(
            "different size ({remote_size} bytes, recorded {local})"
        ))));
    }
    if let (Some(remote_sha), Some(local)) = (&f.sha256, &row.done_sha256)
        && remote_sha != local
    {
        return checked(Some(problem("different content (sha256 in metadata)")));
    }
    if !content {
        return checked(None);
    }
    let (Some(local_sha), Some(size)) = (&row.done_sha256, row.done_size) else {
        return checked(Some(problem("no content hash recorded: cannot compare content")));
    };
    let url = match f.url.clone().or_else(|| row.url.clone()) {
        Some(u) => Some(u),
        None => workspace
            .client()
            .file_details(&f.file_no)
            .await?
            .and_then(|d| d.url),
    };
    let Some(url) = url else {
        return checked(Some(problem(
            "the service gives no url to read it by: content not checked",
        )));
    };
    match workspace.client().url_sha256(&url, size.max(0) as u64).await {
        Ok(Some(sha)) if &sha == local_sha => checked(None),
        Ok(_) => checked(Some(problem(
            "different content (the bytes served hash otherwise)",
        ))),
        Err(ApiError::Rejected {
            status: 404 | 410, ..
        }) => checked(Some(problem("missing (its url serves nothing)"))),
        Err(e) => Err(e),
    }
}
