//! The in-process agent's fixtures: a scripted transfer, a drop folder
//! with settings, a running agent on the paused clock, and waiting on the
//! virtual clock with a real deadline.

use std::sync::Mutex as StdMutex;

use futures_util::future::BoxFuture;

use super::super::*;
use crate::api::RemoteFile;
use crate::upload::Resume;

/// What the scripted transfer answers, attempt by attempt (then `Store`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Answer {
    Store,
    /// The upload could not be verified: a failed attempt, retried later.
    Unverified,
    /// No answer from the service: everything waits, no attempt is spent.
    Unreachable,
    /// The key is refused.
    BadKey,
}

#[derive(Default)]
pub(super) struct Scripted {
    pub(super) answers: StdMutex<std::collections::VecDeque<Answer>>,
    /// Each send: the local path and when (virtual).
    pub(super) sends: StdMutex<Vec<(PathBuf, Instant)>>,
    /// Each key check, and the answers to give (then Store = accepted).
    pub(super) checks: StdMutex<Vec<Instant>>,
    pub(super) check_answers: StdMutex<std::collections::VecDeque<Answer>>,
}

impl Scripted {
    pub(super) fn answering(answers: &[Answer]) -> Arc<Scripted> {
        let s = Scripted::default();
        s.answers.lock().unwrap().extend(answers);
        Arc::new(s)
    }
    pub(super) fn sends(&self) -> Vec<(PathBuf, Instant)> {
        self.sends.lock().unwrap().clone()
    }
    pub(super) fn checks(&self) -> Vec<Instant> {
        self.checks.lock().unwrap().clone()
    }
}

pub(super) fn answer_error(a: Answer) -> Option<UploadError> {
    match a {
        Answer::Store => None,
        Answer::Unverified => Some(UploadError::Verify("the stored size differs".into())),
        Answer::Unreachable => Some(UploadError::Api(ApiError::Unreachable(
            "connection refused".into(),
        ))),
        Answer::BadKey => Some(UploadError::Api(ApiError::Auth {
            status: 401,
            message: "invalid key".into(),
        })),
    }
}

impl Transfer for Scripted {
    fn send<'a>(
        &'a self,
        job: &'a Job,
        _resume: Option<Resume>,
        _observer: &'a Arc<dyn Observer>,
    ) -> BoxFuture<'a, Result<Outcome, UploadError>> {
        Box::pin(async move {
            let n = {
                let mut sends = self.sends.lock().unwrap();
                sends.push((job.path.clone(), Instant::now()));
                sends.len()
            };
            let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Answer::Store);
            if let Some(e) = answer_error(answer) {
                return Err(e);
            }
            let source = crate::fileid::FileId::of_path(&job.path).ok();
            let sha256 = crate::fileid::hash_file(&job.path)
                .await
                .map_err(|e| UploadError::io(&job.path, &e))?;
            let size = std::fs::metadata(&job.path).map(|m| m.len()).unwrap_or(0);
            Ok(Outcome {
                file: RemoteFile {
                    file_no: format!("F{n}"),
                    name: job.file_name.clone(),
                    id: None,
                    url: None,
                    path: None,
                    folder: Some(job.folder.clone()),
                    folder_no: None,
                    size: Some(size),
                    created_at_ms: None,
                    sha256: Some(sha256.clone()),
                    has_metadata: true,
                    hash: None,
                    is_duplicate: None,
                },
                size,
                sha256,
                folder: job.folder.clone(),
                name: job.file_name.clone(),
                adopted: None,
                renamed_from: None,
                source,
            })
        })
    }

    fn check_key(&self) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            self.checks.lock().unwrap().push(Instant::now());
            let answer = self
                .check_answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Answer::Store);
            match answer_error(answer) {
                Some(UploadError::Api(e)) => Err(e),
                _ => Ok(()),
            }
        })
    }
}

/// A drop folder, a state dir and settings over them (`extra` is added to
/// `[agent]`; `watch_extra` to the `[[watch]]` table).
pub(super) struct Place {
    pub(super) _dir: tempfile::TempDir,
    pub(super) drop: PathBuf,
    pub(super) state: PathBuf,
    pub(super) settings: Arc<Settings>,
}

pub(super) const SETTLE: Duration = Duration::from_secs(2);

pub(super) fn place(extra: &str, watch_extra: &str) -> Place {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&drop).unwrap();
    let text = format!(
        "[agent]\nstate_dir = {state:?}\nsettle = \"2s\"\n{extra}\n\n[[watch]]\npath = {drop:?}\nremote_folder = \"in\"\n{watch_extra}\n",
        state = state.to_str().unwrap(),
        drop = drop.to_str().unwrap(),
    );
    let settings = Settings::parse(&text, "test.toml", None).expect("test config parses");
    // The config canonicalises the root (e.g. a symlinked /tmp).
    let drop = settings.watches[0].path.clone();
    Place {
        _dir: dir,
        drop,
        state,
        settings: Arc::new(settings),
    }
}

/// A running agent on a paused clock.
pub(super) struct Running {
    pub(super) stop: CancellationToken,
    pub(super) task: tokio::task::JoinHandle<Result<Report, AgentError>>,
    pub(super) journal: Journal,
}

pub(super) fn start(p: &Place, transfer: Arc<Scripted>, opts: RunOptions) -> Running {
    let journal = Journal::open(&p.state).unwrap();
    let agent = Agent::new(
        p.settings.clone(),
        transfer,
        journal.clone(),
        opts,
        Clock::following_tokio(crate::clock::system_ms()),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent.run(stop.clone()));
    Running { stop, task, journal }
}

impl Running {
    pub(super) async fn stop(self) -> Report {
        self.stop.cancel();
        self.task.await.unwrap().unwrap()
    }
    pub(super) async fn row(&self, p: &Place, rel: &str) -> Option<FileRow> {
        self.journal
            .lookup(p.settings.watches[0].key(), rel.into())
            .await
            .unwrap()
    }
}

/// Polls `cond` on the (virtual) clock until it holds; panics with `what`
/// after 30 s of real time.
pub(super) async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
