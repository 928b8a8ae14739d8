//! A set's ASC MHL check (`set_mhl`): before a set whose folder holds an
//! `ascmhl/` history is released, every file of it is read once (the
//! sha256 the upload needs and each format the history uses, together),
//! compared with the latest generation, and the sha256 recorded as the
//! file's pre-hash, so the upload does not read it for hashing again. A
//! mismatch or a listed file missing holds the set with the report; nothing
//! of it is sent.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;

use super::*;
use crate::config::Mhl;
use crate::control::Event;
use crate::journal::{SetFile, SetRow};
use crate::mhl::{Checked, Digests, Format, History};

/// One file of the set as the check read it.
#[derive(Debug, Clone)]
pub(super) struct Hashed {
    pub rel: String,
    pub id: crate::fileid::FileId,
    pub digests: Digests,
}

/// Where a set's check stands, for the set's last change.
#[derive(Debug)]
pub(super) enum MhlState {
    Checking,
    Passed {
        history: Option<History>,
        files: Vec<Hashed>,
    },
    /// The one-line reason and the whole report; said (log, event) when
    /// the set would go, not before: a check begun while a card is still
    /// being copied finds files missing that are on their way.
    Failed {
        summary: String,
        report: String,
        said: bool,
    },
}

/// What a check task found.
pub(super) enum MhlFound {
    Checked {
        history: Option<History>,
        files: Vec<Hashed>,
        checked: Option<Checked>,
    },
    /// The history cannot be trusted (named).
    Unusable(String),
    /// A file changed while it was read: checked again at the next beat.
    Again(String),
}

const CHECKING: &str = "checking its files against the ASC MHL history";

/// The formats a check computes: the history's, plus xxh128 when a
/// generation of ours will be written.
fn formats_for(history: Option<&History>, writes: bool) -> Vec<Format> {
    let mut f = history.map(History::formats).unwrap_or_default();
    if writes {
        f.push(Format::Xxh128);
    }
    f.sort();
    f.dedup();
    f
}

/// The check: the history, each file read once, the comparison.
async fn run_check(
    anchor: PathBuf,
    card: PathBuf,
    files: Vec<(String, String)>,
    writes: bool,
    known: HashMap<String, Hashed>,
) -> MhlFound {
    let (a, c) = (anchor.clone(), card.clone());
    let history = match tokio::task::spawn_blocking(move || History::load(&a, &c)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return MhlFound::Unusable(e),
        Err(e) => return MhlFound::Unusable(e.to_string()),
    };
    if history.is_none() && !writes {
        return MhlFound::Checked {
            history: None,
            files: Vec::new(),
            checked: None,
        };
    }
    let formats = formats_for(history.as_ref(), writes);
    // Two files at a time (as the pre-hash reads them): one disk stream
    // and one core each.
    let results: Vec<Result<(String, Hashed), MhlFound>> = futures_util::stream::iter(files)
        .map(|(rel, inner)| {
            let reuse = known.get(&rel).cloned();
            let (anchor, formats) = (anchor.clone(), formats.clone());
            async move {
                hash_member(anchor, rel, reuse, &formats)
                    .await
                    .map(|h| (inner, h))
            }
        })
        .buffered(2)
        .collect()
        .await;
    let mut hashed = Vec::new();
    let mut by_card = BTreeMap::new();
    for r in results {
        let (inner, h) = match r {
            Ok(x) => x,
            Err(found) => return found,
        };
        by_card.insert(inner, (h.id.size, h.digests.clone()));
        hashed.push(h);
    }
    let checked = history
        .as_ref()
        .map(|h| crate::mhl::check(&anchor, &card, h, &by_card));
    MhlFound::Checked {
        history,
        files: hashed,
        checked,
    }
}

/// One file of the set, read once for every format (or, still the same
/// file by the identity rule and hashed in every format before, not read).
async fn hash_member(
    anchor: PathBuf,
    rel: String,
    reuse: Option<Hashed>,
    formats: &[Format],
) -> Result<Hashed, MhlFound> {
    let path = anchor.join(&rel);
    if let Some(h) = reuse
        && formats.iter().all(|f| h.digests.mhl.contains_key(f))
        && crate::anchor::file_id(&anchor, &path).ok() == Some(h.id)
    {
        return Ok(h);
    }
    let (a, p) = (anchor.clone(), path.clone());
    let file = match tokio::task::spawn_blocking(move || crate::anchor::open_file(&a, &p)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MhlFound::Again(format!("{} went away", path.display())));
        }
        Ok(Err(e)) => return Err(MhlFound::Unusable(format!("{}: {e}", path.display()))),
        Err(e) => return Err(MhlFound::Unusable(e.to_string())),
    };
    let Ok(before) = crate::fileid::FileId::of_file(&file) else {
        return Err(MhlFound::Again(format!("{} could not be read", path.display())));
    };
    let digests = match file.try_clone() {
        Ok(reader) => crate::fileid::hash_open_with(reader, formats).await,
        Err(e) => Err(e),
    };
    let after = crate::fileid::FileId::of_file(&file).ok();
    let now = crate::anchor::file_id(&anchor, &path).ok();
    match digests {
        Ok(digests) if after == Some(before) && now == Some(before) => Ok(Hashed {
            rel,
            id: before,
            digests,
        }),
        Ok(_) => Err(MhlFound::Again(format!(
            "{} changed while it was checked",
            path.display()
        ))),
        Err(e) => Err(MhlFound::Unusable(format!("{}: {e}", path.display()))),
    }
}

impl Agent {
    /// Whether a set about to be released may go: None, or why it waits
    /// (its check is under way, or failed). Starts the check when the set
    /// has not been checked since its last change.
    pub(super) async fn mhl_gate(
        &mut self,
        id: RootId,
        set: &SetRow,
        files: &[SetFile],
        ready: bool,
    ) -> Result<Option<String>, AgentError> {
        let Some(rules) = self.settings.root(id).sets.clone() else {
            return Ok(None);
        };
        if rules.mhl == Mhl::Off && !rules.mhl_new {
            return Ok(None);
        }
        let key = (self.key(id), set.set_rel.clone());
        let mut refused = None;
        match self.sets.mhl.get_mut(&key) {
            Some((change, state)) if *change == set.last_change_at => match state {
                MhlState::Checking => return Ok(Some(CHECKING.into())),
                MhlState::Passed { .. } => return Ok(None),
                MhlState::Failed {
                    summary,
                    report,
                    said,
                } => {
                    if ready && !*said {
                        *said = true;
                        refused = Some((summary.clone(), report.clone()));
                    } else {
                        return Ok(Some(summary.clone()));
                    }
                }
            },
            _ => {}
        }
        if let Some((summary, report)) = refused {
            let dir = self.settings.root(id).path.join(&set.set_rel);
            self.mhl_refused(&dir, &set.set_rel, &summary, &report).await?;
            return Ok(Some(summary));
        }
        let anchor = self.settings.root(id).path.clone();
        let card = anchor.join(&set.set_rel);
        let prefix = format!("{}/", set.set_rel);
        let members: Vec<(String, String)> = files
            .iter()
            .filter(|f| f.state != State::Skipped)
            .filter_map(|f| {
                let inner = f.rel.strip_prefix(&prefix)?;
                (!inner.starts_with("ascmhl/")).then(|| (f.rel.clone(), inner.to_string()))
            })
            .collect();
        let writes = rules.mhl == Mhl::Write || rules.mhl_new;
        self.sets
            .mhl
            .insert(key.clone(), (set.last_change_at, MhlState::Checking));
        let change = set.last_change_at;
        // Files hashed by an earlier check of this set, still the same.
        let known: HashMap<String, Hashed> = self
            .sets
            .digests
            .get(&key)
            .map(|v| v.iter().map(|h| (h.rel.clone(), h.clone())).collect())
            .unwrap_or_default();
        self.tasks.spawn(async move {
            let found = run_check(anchor, card, members, writes, known).await;
            TaskResult::MhlChecked {
                root: key.0,
                set_rel: key.1,
                change,
                found: Box::new(found),
            }
        });
        Ok(Some(CHECKING.into()))
    }

    /// A set's check ended: its pre-hashes recorded, and the verdict kept
    /// (and reported) for the set's next judgement.
    pub(super) async fn mhl_checked(
        &mut self,
        root: String,
        set_rel: String,
        change: i64,
        found: MhlFound,
    ) -> Result<(), AgentError> {
        let key = (root.clone(), set_rel.clone());
        if self.sets.mhl.get(&key).is_none_or(|(c, _)| *c != change) {
            return Ok(());
        }
        let dir = self
            .roots
            .of_key(&root)
            .map(|id| self.settings.root(id).path.join(&set_rel))
            .unwrap_or_else(|| PathBuf::from(&set_rel));
        let state = match found {
            MhlFound::Again(why) => {
                tracing::info!("set {}: {why}; its ASC MHL check starts again", dir.display());
                self.sets.mhl.remove(&key);
                self.sets.judge_all_again();
                return Ok(());
            }
            MhlFound::Unusable(why) => MhlState::Failed {
                summary: format!("ASC MHL history unusable: {why}"),
                report: why,
                said: false,
            },
            MhlFound::Checked {
                history,
                files,
                checked,
            } => {
                for f in &files {
                    self.journal
                        .record_prehash(root.clone(), f.rel.clone(), f.id, f.digests.sha256.clone())
                        .await?;
                }
                self.sets.digests.insert(key.clone(), files.clone());
                match checked {
                    Some(c) if !c.passed() => MhlState::Failed {
                        summary: c.summary(),
                        report: c.report(),
                        said: false,
                    },
                    Some(c) => {
                        let latest = history
                            .as_ref()
                            .and_then(|h| h.gens.last())
                            .map(|g| g.to_string());
                        tracing::info!(
                            "set {}: {} file(s) match the ASC MHL history (latest: {}){}",
                            dir.display(),
                            c.matched,
                            latest.unwrap_or_default(),
                            if c.not_sent > 0 {
                                format!(
                                    "; {} listed file(s) are left out by this watch's filters",
                                    c.not_sent
                                )
                            } else {
                                String::new()
                            }
                        );
                        for u in &c.unlisted {
                            tracing::warn!(
                                "set {}: {u} is not in the ASC MHL history; it is uploaded unchecked",
                                dir.display()
                            );
                        }
                        MhlState::Passed { history, files }
                    }
                    None => MhlState::Passed { history, files },
                }
            }
        };
        self.sets.mhl.insert(key, (change, state));
        self.sets.judge_all_again();
        self.dispatch.look_again();
        Ok(())
    }

    async fn mhl_refused(
        &mut self,
        dir: &Path,
        set_rel: &str,
        summary: &str,
        report: &str,
    ) -> Result<(), AgentError> {
        tracing::error!(
            "set {} is refused; nothing of it is sent: {summary}\n{report}\n\
             Copy the card again from its source (or set set_mhl = \"off\" for this watch to send it unchecked)",
            dir.display()
        );
        let mut e = Event::new("mhl_failed", self.clock.wall_ms()).path(dir);
        e.error = Some(summary.to_string());
        self.emit(
            e.with("set", set_rel.to_string())
                .with("report", report.to_string()),
        )
        .await
    }
}

/// The comment that marks our generation for one round of one set, so a
/// restart between writing it and uploading it does not write another.
fn round_mark(set: &SetRow) -> String {
    format!("autorender-sync set {} round {}", set.set_rel, set.round)
}

/// Writing our generation into a set's history and uploading the history:
/// what the task needs, taken from the agent before it is spawned.
pub(super) struct HistoryJob {
    /// Below this the history is read and written without following a
    /// symlink: the watched root (a card's own history) or the state dir's
    /// folder for the set (`set_manifest = "mhl"` on a set without one).
    anchor: PathBuf,
    card: PathBuf,
    /// The set's files, from the check (None after a restart: read again).
    hashed: Option<(Option<History>, Vec<Hashed>)>,
    /// The set's files (root-relative, for a check run again) and their
    /// file_no.
    members: Vec<(String, String)>,
    /// Each file's file_no and URL, as the service answered.
    file_nos: BTreeMap<String, (Option<String>, Option<String>)>,
    /// Write into the card's own history (`set_mhl = "write"`); else only
    /// a new history in the state dir when the card has none.
    into_card: bool,
    mhl_new: bool,
    mark: String,
    location: String,
    now_ms: i64,
    set_rel: String,
    template: Job,
    remote_folder: String,
    subfolders: crate::config::Subfolders,
    /// Where a new history goes (a card without one, `set_manifest = "mhl"`).
    state_folder: PathBuf,
}

impl Agent {
    /// The history work of a set whose files are all up, if its rules ask
    /// for any (`set_mhl = "write"`, `set_manifest = "mhl"`).
    pub(super) fn history_job(
        &mut self,
        id: RootId,
        set: &SetRow,
        files: &[SetFile],
        state_folder: &Path,
    ) -> Option<HistoryJob> {
        let w = self.settings.root(id).clone();
        let rules = w.sets.clone()?;
        let into_card = rules.mhl == Mhl::Write;
        if !into_card && !rules.mhl_new {
            return None;
        }
        let key = (self.key(id), set.set_rel.clone());
        let hashed = match self.sets.mhl.get(&key) {
            Some((change, MhlState::Passed { history, files })) if *change == set.last_change_at => {
                Some((history.clone(), files.clone()))
            }
            _ => None,
        };
        let prefix = format!("{}/", set.set_rel);
        let members: Vec<(String, String)> = files
            .iter()
            .filter(|f| f.state == State::Done)
            .filter_map(|f| {
                let inner = f.rel.strip_prefix(&prefix)?;
                (!inner.starts_with("ascmhl/")).then(|| (f.rel.clone(), inner.to_string()))
            })
            .collect();
        let file_nos = files
            .iter()
            .map(|f| (f.rel.clone(), (f.file_no.clone(), f.url.clone())))
            .collect();
        let template = Job::companion(
            w.path.clone(),
            "application/xml",
            &w.tags,
            &w.metadata,
            self.gate.hold_token(),
        );
        let remote = crate::mapping::remote_path(&w.remote_folder, &set.set_rel);
        Some(HistoryJob {
            anchor: w.path.clone(),
            card: w.path.join(&set.set_rel),
            hashed,
            members,
            file_nos,
            into_card,
            mhl_new: rules.mhl_new,
            mark: round_mark(set),
            location: format!("AutoRender workspace folder {remote}"),
            now_ms: self.clock.wall_ms(),
            set_rel: set.set_rel.clone(),
            template,
            remote_folder: w.remote_folder.clone(),
            subfolders: w.subfolders,
            state_folder: state_folder.to_path_buf(),
        })
    }
}

impl HistoryJob {
    /// Writes our generation (once per round) and uploads every file of
    /// the history into the set's remote `ascmhl/` folder.
    pub(super) async fn run(
        self,
        transfer: &Arc<dyn Transfer>,
        observer: &Arc<dyn Observer>,
    ) -> Result<(), UploadError> {
        let state_folder = self.state_folder.clone();
        let fail = |m: String| UploadError::Io {
            path: self.card.join("ascmhl"),
            kind: std::io::ErrorKind::Other,
            message: format!("the ASC MHL history: {m}"),
        };
        let (history, hashed) = match self.hashed.clone() {
            Some(h) => h,
            None => match run_check(
                self.anchor.clone(),
                self.card.clone(),
                self.members.clone(),
                true,
                HashMap::new(),
            )
            .await
            {
                MhlFound::Checked {
                    history,
                    files,
                    checked,
                } => {
                    if let Some(c) = checked.filter(|c| !c.passed()) {
                        return Err(fail(c.summary()));
                    }
                    (history, files)
                }
                MhlFound::Unusable(m) | MhlFound::Again(m) => return Err(fail(m)),
            },
        };
        // Where the history lives: the card's own, or (none, and
        // set_manifest = "mhl") a new one in the state dir.
        let (anchor, card, previous) = match history {
            Some(h) if self.into_card => (self.anchor.clone(), self.card.clone(), Some(h)),
            Some(_) => return Ok(()),
            None if self.mhl_new => {
                std::fs::create_dir_all(&state_folder).map_err(|e| fail(e.to_string()))?;
                let (a, c) = (state_folder.clone(), state_folder.clone());
                let ours = tokio::task::spawn_blocking(move || History::load(&a, &c))
                    .await
                    .map_err(|e| fail(e.to_string()))?
                    .map_err(fail)?;
                (state_folder.clone(), state_folder.clone(), ours)
            }
            None => return Ok(()),
        };
        let written_already = previous.as_ref().is_some_and(|h| {
            h.gens
                .last()
                .is_some_and(|g| g.tool.starts_with("autorender-sync") && g.comment.contains(&self.mark))
        });
        if !written_already {
            let prefix = format!("{}/", self.set_rel);
            let files = hashed
                .iter()
                .map(|f| {
                    let inner = f.rel.strip_prefix(&prefix).unwrap_or(&f.rel).to_string();
                    let verified = previous
                        .as_ref()
                        .and_then(|h| h.latest.get(&inner))
                        .map(|e| e.hashes.iter().map(|(f, _)| *f).collect())
                        .unwrap_or_default();
                    crate::mhl::GenerationFile {
                        size: f.id.size,
                        mtime_ms: Some((f.id.mtime_ns / 1_000_000) as i64),
                        hashes: f.digests.mhl.clone(),
                        verified,
                        sha256: f.digests.sha256.clone(),
                        file_no: self.file_nos.get(&f.rel).and_then(|n| n.0.clone()),
                        url: self.file_nos.get(&f.rel).and_then(|n| n.1.clone()),
                        rel: inner,
                    }
                })
                .collect();
            let generation = crate::mhl::Generation {
                card_name: self
                    .card
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "card".into()),
                at_ms: self.now_ms,
                location: self.location.clone(),
                comment: format!(
                    "{}: uploaded to the {}; each file's sha256, file_no and URL are in its metadata",
                    self.mark, self.location
                ),
                files,
            };
            let (a, c) = (anchor.clone(), card.clone());
            let names = tokio::task::spawn_blocking(move || {
                crate::mhl::write_generation(&a, &c, previous.as_ref(), &generation)
            })
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(fail)?;
            tracing::info!(
                "set {}: ASC MHL generation {} written into {}",
                self.set_rel,
                names.first().map(String::as_str).unwrap_or(""),
                card.join("ascmhl").display()
            );
        }
        // Every file of the history, into the set's remote ascmhl/.
        let folder = card.join("ascmhl");
        let (a, d) = (anchor.clone(), folder.clone());
        let listed = tokio::task::spawn_blocking(move || crate::anchor::list(&a, &d))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(format!("{}: {e}", folder.display())))?;
        let mut names: Vec<String> = listed
            .into_iter()
            .filter(|l| matches!(l.kind, crate::anchor::Kind::File(_)))
            .filter_map(|l| l.name.to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        // The chain last: whoever sees it sees every generation it lists.
        names.sort_by_key(|n| (n == crate::mhl::CHAIN, n.clone()));
        for name in names {
            let remote = crate::mapping::map(
                Path::new(&format!("{}/ascmhl/{name}", self.set_rel)),
                &self.remote_folder,
                self.subfolders,
            )
            .map_err(|e| fail(e.to_string()))?;
            let mut job = self.template.clone();
            job.root = anchor.clone();
            job.path = folder.join(&name);
            job.file_name = remote.name;
            job.folder = remote.folder;
            transfer.send(&job, None, observer).await?;
        }
        Ok(())
    }
}
