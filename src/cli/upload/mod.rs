//! `upload FILE...`: one-shot upload of named files (an explicit request, so
//! always sent). A progress bar per file on a terminal, plain lines otherwise,
//! `--json` for machines. A rejected key stops everything with exit 3.
//!
//! Each upload is recorded in the journal as the agent records its own, so
//! an `upload` stopped by Ctrl-C (or a crash) resumes its multipart session
//! from the parts already stored when the same file is uploaded again.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use super::{Cli, CliError, CliResult};
use crate::cli::signals::StopSignals;
use crate::config::normalise_remote_folder;
use crate::journal::Journal;
use crate::mapping;
use crate::upload::{Observer, Outcome, UploadError};

mod plan;
mod record;
use plan::{again, dry_run, expand, prepare};
use record::{left_alone, record, recorded};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders to upload (a folder's files go recursively, keeping
    /// their sub-paths under --folder, with the built-in temp-file excludes
    /// and, for a watched folder, its include/exclude)
    #[arg(required = true, value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Remote workspace folder, e.g. uploads/videos [default: the workspace root]
    #[arg(long, value_name = "REMOTE")]
    pub folder: Option<String>,
    /// Tag to attach (repeat for several)
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Print results as JSON (one array) instead of text
    #[arg(long)]
    pub json: bool,
    /// Print what would be uploaded where; send and record nothing
    #[arg(long)]
    pub dry_run: bool,
}

struct Bar(ProgressBar);

/// A file's bar goes when its upload ends (not at the end of the run): a
/// finished file's bar left at 100% while others go looked stuck, and one
/// drawn again after the summary stayed on the screen.
impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

impl Observer for Bar {
    fn bytes(&self, delta: i64) {
        if delta >= 0 {
            self.0.inc(delta as u64);
        } else {
            self.0
                .set_position(self.0.position().saturating_sub(delta.unsigned_abs()));
        }
    }
}

pub async fn run(cli: &Cli, args: &Args) -> CliResult {
    let mut signals = StopSignals::install();
    let settings = super::load_settings(cli)?;
    let folder = match &args.folder {
        Some(f) => normalise_remote_folder(f).map_err(|e| CliError::Usage(format!("--folder {e}")))?,
        None => String::new(),
    };
    let items = expand(&settings, &args.files);
    if args.dry_run {
        return dry_run(&items, &folder, args.json);
    }
    let (uploader, source) = crate::upload::Uploader::connect(&settings).map_err(CliError::Usage)?;
    let journal = match Journal::open(&settings.agent.state_dir) {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::warn!(
                "uploads are not recorded, and an interrupted one would start again from zero: {e}"
            );
            None
        }
    };
    // Files inside a watched root: one already uploaded as this very
    // version is not sent again, and while the agent runs it owns them
    // (both sending one file stores it twice).
    // A `--folder` named is a deliberate copy elsewhere: sent.
    let agent_runs = crate::journal::agent_running(&settings.agent.state_dir);
    let mut left = Vec::new();
    let mut items_to_send = Vec::new();
    for (path, rel) in items {
        let why = match args.folder {
            Some(_) => None,
            None => left_alone(&settings, journal.as_ref(), agent_runs, &path).await,
        };
        match why {
            Some(why) => left.push((path, why)),
            None => items_to_send.push((path, rel)),
        }
    }
    let items = items_to_send;
    let show_bars = !args.json && !cli.quiet && std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:30!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());

    let work = futures_util::stream::iter(items)
        .map(|(path, rel)| {
            let uploader = &uploader;
            let folder = &folder;
            let multi = &multi;
            let style = &style;
            let journal = journal.as_ref();
            let settings = &settings;
            async move {
                let mut job = match prepare(&path, &rel, folder, &args.tags) {
                    Ok(job) => job,
                    Err(e) => return (path, Err(e), false),
                };
                let progress: Arc<dyn Observer> = if show_bars {
                    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    let bar = multi.add(ProgressBar::new(size));
                    bar.set_style(style.clone());
                    bar.set_prefix(crate::text::shown(&job.file_name).into_owned());
                    Arc::new(Bar(bar))
                } else {
                    Arc::new(crate::upload::Quiet)
                };
                // Only a multipart upload can be resumed: a small file's one
                // request is simply sent again, so it costs no journal write
                // before it goes (thousands of small files stay fast).
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let (mut observer, resume) = match journal {
                    Some(j) if !uploader.is_direct(&job, size) => {
                        recorded(j, settings, &path, progress.clone()).await
                    }
                    _ => (progress.clone(), None),
                };
                if let Some(r) = &resume {
                    tracing::info!(
                        "resuming the upload of {} ({} of {} parts already stored)",
                        path.display(),
                        r.done.iter().filter(|d| **d).count(),
                        r.done.len()
                    );
                }
                tracing::debug!(file = %path.display(), "uploading to \"{}\"", job.folder);
                let mut result = uploader.upload_resuming(&job, resume, &observer).await;
                // An unclear outcome or a 5xx spends an attempt (the upload
                // never sends twice inside one); up to `max_attempts` here,
                // asking the journal again for what the last one left.
                let mut attempt = 1;
                while let Err(e) = &result
                    && again(e)
                    && attempt < settings.agent.max_attempts
                {
                    attempt += 1;
                    let wait = match e {
                        UploadError::Unresolved { retry_in } => *retry_in,
                        _ => uploader.retry.min_delay * (1u32 << attempt.min(6)),
                    };
                    tracing::info!(
                        "{}: {e}; attempt {attempt} of {} in {wait:?}",
                        path.display(),
                        settings.agent.max_attempts
                    );
                    job.in_parts |= matches!(e, UploadError::Verify(_));
                    tokio::time::sleep(wait).await;
                    let resume;
                    (observer, resume) = match journal {
                        Some(j) if job.in_parts || !uploader.is_direct(&job, size) => {
                            recorded(j, settings, &path, progress.clone()).await
                        }
                        _ => (progress.clone(), None),
                    };
                    result = uploader.upload_resuming(&job, resume, &observer).await;
                }
                let auth = matches!(&result, Err(e) if e.is_auth());
                (path, result.map_err(|e: UploadError| e.to_string()), auth)
            }
        })
        .buffered(settings.agent.concurrent_files.max(1))
        .collect::<Vec<_>>();
    let results: Vec<(PathBuf, Result<Outcome, String>, bool)> = tokio::select! {
        results = work => results,
        _ = signals.next() => {
            let _ = multi.clear();
            if let Some(j) = &journal {
                let _ = j.flush().await;
            }
            eprintln!(
                "stopped: the parts already stored are recorded; the same command resumes from them"
            );
            return Ok(ExitCode::from(130));
        }
    };
    let _ = multi.clear();
    if let Some(j) = &journal {
        record(j, &settings, &results).await;
    }

    if let Some((_, Err(e), _)) = results.iter().find(|r| r.2) {
        return Err(CliError::Auth(format!("{e}; check the key in {source}")));
    }
    let failed = results.iter().filter(|r| r.1.is_err()).count();
    if args.json {
        let mut out: Vec<_> = left.iter().map(|(path, why)| why.json(path)).collect();
        out.extend(results.iter().map(|(path, r, _)| {
            // The keys `history --json` uses for the same things; `file`,
            // `path` and `name` are the older names, kept as aliases.
            let at = crate::clock::system_ms();
            match r {
                Ok(o) => json!({
                    "local_path": path,
                    "ok": true,
                    "remote_folder": o.folder,
                    "remote_name": o.name,
                    "remote_path": mapping::remote_path(&o.folder, &o.name),
                    "file_no": o.file.file_no.clone(),
                    "url": o.file.url,
                    "size": o.size,
                    "sha256": o.sha256,
                    "error": null,
                    "at": crate::cli::output::json_time(Some(at)),
                    "at_ms": at,
                    "file": path,
                    "path": o.folder,
                    "name": o.name,
                }),
                Err(e) => json!({
                    "local_path": path,
                    "ok": false,
                    "error": e,
                    "at": crate::cli::output::json_time(Some(at)),
                    "at_ms": at,
                    "file": path,
                }),
            }
        }));
        crate::cli::output::print_json(&serde_json::Value::Array(out));
    } else {
        for (path, why) in &left {
            outln!("{}", crate::text::shown(&why.describe(path)));
        }
        for (path, r, _) in &results {
            match r {
                Ok(o) => outln!(
                    "{} → {}  file_no={}  url={}",
                    path.display(),
                    crate::mapping::remote_path(&o.folder, &o.name),
                    o.file.file_no.clone(),
                    o.file
                        .url
                        .as_deref()
                        .map_or_else(|| "-".into(), crate::cli::output::display_url),
                ),
                Err(e) => eprintln!(
                    "error: {}",
                    crate::text::shown(&format!("{}: {e}", path.display()))
                ),
            }
        }
    }
    if failed > 0 {
        if !args.json {
            eprintln!("{failed} of {} file(s) failed", results.len());
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
