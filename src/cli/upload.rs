//! `upload FILE...`: one-shot upload of named files (an explicit request, so
//! always sent). A progress bar per file on a terminal, plain lines otherwise,
//! `--json` for machines. A rejected key stops everything with exit 3.
//!
//! Each upload is recorded in the journal as the agent records its own, so
//! an `upload` stopped by Ctrl-C (or a crash) resumes its multipart session
//! from the parts already stored when the same file is uploaded again.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use super::signals::StopSignals;
use super::{Cli, CliError, CliResult};
use crate::agent::{JournalObserver, usable};
use crate::config::{Subfolders, normalise_remote_folder};
use crate::fileid::Fingerprint;
use crate::journal::{DoneRecord, Journal};
use crate::mapping;
use crate::scan;
use crate::upload::{Job, Observer, Outcome, UploadError};

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
                    "at": super::output::json_time(Some(at)),
                    "at_ms": at,
                    "file": path,
                    "path": o.folder,
                    "name": o.name,
                }),
                Err(e) => json!({
                    "local_path": path,
                    "ok": false,
                    "error": e,
                    "at": super::output::json_time(Some(at)),
                    "at_ms": at,
                    "file": path,
                }),
            }
        }));
        super::output::print_json(&serde_json::Value::Array(out));
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
                        .map_or_else(|| "-".into(), super::output::display_url),
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

/// Why `upload` leaves a file inside a watched root to the agent.
enum Left {
    /// Already uploaded as this very version.
    Uploaded { remote: String, file_no: String },
    /// The agent that watches its folder is running: it sends it.
    ToAgent { root: PathBuf },
}

impl Left {
    fn describe(&self, path: &Path) -> String {
        match self {
            Left::Uploaded { remote, file_no } => format!(
                "{}: already uploaded as this very version → {remote}  file_no={file_no}; not sent again",
                path.display()
            ),
            Left::ToAgent { root } => format!(
                "{}: left to the running agent, which watches {} (sending it here too would store it twice; \
                 `autorender-sync status` shows its progress)",
                path.display(),
                root.display()
            ),
        }
    }

    fn json(&self, path: &Path) -> serde_json::Value {
        let at = crate::clock::system_ms();
        match self {
            Left::Uploaded { remote, file_no } => json!({
                "local_path": path, "ok": true, "skipped": "already_uploaded",
                "remote_path": remote, "file_no": file_no, "error": null,
                "at": super::output::json_time(Some(at)), "at_ms": at, "file": path,
            }),
            Left::ToAgent { root } => json!({
                "local_path": path, "ok": true, "skipped": "left_to_agent", "watched_root": root,
                "error": null, "at": super::output::json_time(Some(at)), "at_ms": at, "file": path,
            }),
        }
    }
}

/// Whether a named file inside a watched root is left alone (see [`Left`]).
async fn left_alone(
    settings: &crate::config::Settings,
    journal: Option<&Journal>,
    agent_runs: bool,
    path: &Path,
) -> Option<Left> {
    let abs = path.canonicalize().ok()?;
    let (w, rel) = settings
        .watches
        .iter()
        .find_map(|w| scan::relative(w, &abs).ok().map(|rel| (w, rel)))?;
    let now = crate::anchor::file_id(&w.path, &abs).ok()?;
    if let Some(j) = journal
        && let Ok(Some(row)) = j.lookup(w.key(), rel).await
        && row.is_uploaded_version(&now)
    {
        return Some(Left::Uploaded {
            remote: row.remote_path.clone().unwrap_or_default(),
            file_no: row.file_no.clone().unwrap_or_default(),
        });
    }
    agent_runs.then(|| Left::ToAgent { root: w.path.clone() })
}

/// Records successful uploads in the journal. An upload that worked is never
/// reported as failed because the journal could not be written: warn instead.
async fn record(
    journal: &Journal,
    settings: &crate::config::Settings,
    results: &[(PathBuf, Result<Outcome, String>, bool)],
) {
    // All records are queued before any is awaited, so the journal's group
    // commit writes them in a few transactions instead of one fsync each.
    let mut pending = Vec::new();
    for (path, result, _) in results {
        let Ok(o) = result else { continue };
        let Some((root, rel, fingerprint)) = place_of(settings, path) else {
            continue;
        };
        let done = DoneRecord {
            fingerprint,
            identity: o.source,
            sha256: o.sha256.clone(),
            remote_folder: o.folder.clone(),
            remote_name: o.name.clone(),
            file_no: o.file.file_no.clone(),
            url: o.file.url.clone(),
            adopted: None,
        };
        pending.push(async move {
            if let Err(e) = journal.record_upload(root, rel, done).await {
                tracing::warn!("{} not recorded in the journal: {e}", path.display());
            }
        });
    }
    futures_util::future::join_all(pending).await;
    if let Err(e) = journal.checkpoint().await {
        tracing::warn!("the journal's write-ahead log was not folded back: {e}");
    }
}

/// Where the journal keeps `path`'s record, and its version: under the
/// watched root that holds it (so the agent skips it once uploaded), else
/// under its own folder.
fn place_of(settings: &crate::config::Settings, path: &Path) -> Option<(String, String, Fingerprint)> {
    let abs = path.canonicalize().ok()?;
    let fingerprint = Fingerprint::of(&abs).ok()?;
    let (root, rel) = settings
        .watches
        .iter()
        .find_map(|w| scan::relative(w, &abs).ok().map(|rel| (w.key(), rel)))
        .unwrap_or_else(|| {
            let parent = abs.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = abs
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (parent.to_string_lossy().into_owned(), name)
        });
    Some((root, rel, fingerprint))
}

/// The journal observer for `path`'s upload (progress still shown), and
/// the session an interrupted upload of this very version left, if any.
async fn recorded(
    journal: &Journal,
    settings: &crate::config::Settings,
    path: &Path,
    progress: Arc<dyn Observer>,
) -> (Arc<dyn Observer>, Option<crate::upload::Resume>) {
    let Some((root, rel, fp)) = place_of(settings, path) else {
        return (progress, None);
    };
    match journal.upload_slot(root, rel, fp).await {
        Ok((id, saved)) => (
            Arc::new(JournalObserver::new(journal.clone(), id, Some(progress))),
            saved.and_then(|s| usable(s, fp)),
        ),
        Err(e) => {
            tracing::warn!(
                "{}: not recorded in the journal ({e}); it cannot resume if stopped",
                path.display()
            );
            (progress, None)
        }
    }
}

/// What to send: each file named, and each file found under each folder
/// named, with its path relative to what was named (sub-paths are kept
/// under --folder). A path that is neither is kept so it is reported.
fn expand(settings: &crate::config::Settings, paths: &[PathBuf]) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            let rel = path.file_name().map(PathBuf::from).unwrap_or_default();
            out.push((path.clone(), rel));
            continue;
        }
        let Some(w) = folder_rules(settings, path) else {
            out.push((path.clone(), PathBuf::new()));
            continue;
        };
        let start = w.path.clone();
        let before = out.len();
        crate::scan::walk_folders(&w, &start, |folder| {
            out.extend(folder.files.into_iter().map(|f| (f.path, PathBuf::from(f.rel))));
            true
        });
        if out.len() == before {
            tracing::warn!("{}: no files to upload in this folder", path.display());
        }
    }
    out
}

/// The rules a folder's files are chosen by: a watched root's own (include,
/// exclude, recursive), else every file below it but the built-in
/// temp-file excludes.
fn folder_rules(settings: &crate::config::Settings, dir: &Path) -> Option<crate::config::WatchSettings> {
    let dir = dir.canonicalize().ok()?;
    if let Some(w) = settings.watches.iter().find(|w| w.path == dir) {
        return Some(w.clone());
    }
    let text = format!(
        "[[watch]]\npath = {}\nremote_folder = \"upload\"\n",
        toml::Value::String(dir.to_string_lossy().into_owned())
    );
    crate::config::Settings::parse(&text, "(upload)", None)
        .ok()
        .and_then(|s| s.watches.into_iter().next())
}

fn dry_run(items: &[(PathBuf, PathBuf)], folder: &str, json: bool) -> CliResult {
    let mut rows = Vec::new();
    for (path, rel) in items {
        let row = match prepare(path, rel, folder, &[]) {
            Ok(job) => {
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                json!({
                    "local_path": path,
                    "would_upload": true,
                    "remote_folder": job.folder,
                    "remote_name": job.file_name,
                    "remote_path": mapping::remote_path(&job.folder, &job.file_name),
                    "size": size,
                })
            }
            Err(e) => json!({"local_path": path, "would_upload": false, "error": e}),
        };
        if !json {
            match row["would_upload"].as_bool() {
                Some(true) => outln!(
                    "would upload {} → {} ({})",
                    path.display(),
                    row["remote_path"].as_str().unwrap_or(""),
                    crate::units::format_bytes(row["size"].as_u64().unwrap_or(0))
                ),
                _ => eprintln!(
                    "error: {}",
                    crate::text::shown(&format!(
                        "{}: {}",
                        path.display(),
                        row["error"].as_str().unwrap_or("")
                    ))
                ),
            }
        }
        rows.push(row);
    }
    if json {
        super::output::print_json(&serde_json::Value::Array(rows.clone()));
    }
    let bad = rows.iter().any(|r| r["would_upload"] == false);
    Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The job for `path`, sent to `folder` plus the folders of `rel` (its path
/// below the folder named on the command line; just its name for a file).
fn prepare(path: &Path, rel: &Path, folder: &str, tags: &[String]) -> Result<Job, String> {
    // Anchored at the folder named on the command line (a named file's own
    // folder): nothing below it is reached through a symlink.
    let root = path
        .ancestors()
        .nth(rel.components().count())
        .filter(|r| !r.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    use crate::anchor::Kind;
    match crate::anchor::stat(&root, path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        _ => e.to_string(),
    })? {
        Kind::File(_) => {}
        Kind::Dir => return Err("a folder that cannot be read".into()),
        Kind::Symlink => return Err(crate::anchor::Refusal::Symlink.to_string()),
        Kind::Other => return Err(crate::anchor::Refusal::NotAFile.to_string()),
    }
    let remote = mapping::map(rel, folder, Subfolders::Preserve).map_err(|e| e.to_string())?;
    Ok(Job {
        root,
        settled: None,
        path: path.to_path_buf(),
        file_name: remote.name,
        folder: remote.folder,
        format: remote.format,
        tags: tags.to_vec(),
        metadata: serde_json::Map::new(),
        random_prefix: false,
        adopt: false,
        hold: Default::default(),
        known_sha256: None,
        in_parts: false,
    })
}

/// Whether `upload` tries a file again: a transient answer (not a failed
/// connection: that was retried already, and a wrong endpoint should fail
/// in seconds) or an upload the service stored altered.
fn again(e: &UploadError) -> bool {
    match e {
        UploadError::Api(a) => a.is_transient() && !a.never_sent(),
        UploadError::Verify(_) | UploadError::Unresolved { .. } => true,
        _ => false,
    }
}
