//! The fleet backend: several agents, one shared folder, one upload per
//! file. The queue's truth (who uploads which file version, its session
//! and parts, its result) is in PostgreSQL (`pg.rs`); each node keeps its
//! SQLite journal as its own view of its mount: what it has seen settle,
//! its notifications, its pause, its upload sets.
//!
//! A node uploads only what it has itself seen stable (its local queue)
//! and only once it holds the file's claim in the database: a lease it
//! renews (a task of its own, every quarter lease) and a fencing token
//! that every write about the upload checks. Complete is sent only after a
//! fenced write with a third of the lease still left, and the result is
//! recorded in the transaction that checks the token, so a node whose
//! lease lapsed (a paused VM, a partition) never completes a file another
//! node took over. A takeover resumes the recorded session; one that was
//! completing is completed again on the same session, never on a new one.
//!
//! Which operations are the fleet's own and which the local journal's is
//! listed in `store.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::*;
use pg::{Candidate, Claimed, Pg, PgError};

mod claims;
mod commands;
mod lease;
mod pg;
mod sessions;
mod store;
#[cfg(test)]
mod tests;
mod views;

/// The fleet's locks, taken even when a holder panicked: each critical
/// section is one insert, removal or assignment, so the data stays whole,
/// and a panic in the lease task does not become the agent's.
trait Held<T> {
    fn held(&self) -> MutexGuard<'_, T>;
}

impl<T> Held<T> for Mutex<T> {
    fn held(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A claim this node holds.
#[derive(Debug, Clone)]
struct Claim {
    pg_id: i64,
    token: i64,
    root: String,
    rel: String,
    saved: Option<SavedSession>,
}

/// Whether the database answers, and when to ask again if not.
#[derive(Debug, Default)]
struct Link {
    down_since: Option<Instant>,
    next_try: Option<Instant>,
    backoff: Duration,
}

struct Inner {
    pg: Pg,
    /// Root key (its local path) → share name.
    shares: RwLock<HashMap<String, String>>,
    claims: Mutex<HashMap<i64, Claim>>,
    /// Claims lost while their upload ran: local id → why.
    lost: Mutex<HashMap<i64, String>>,
    link: Mutex<Link>,
    /// Results recorded while the database was away, written when it is back.
    unreported: Mutex<Vec<(i64, i64, DoneRecord)>>,
    migrated: std::sync::atomic::AtomicBool,
    /// Local ids last found held by another node (cleared when claimed or
    /// done here): what `run --once` leaves to the others.
    elsewhere: Mutex<std::collections::HashSet<i64>>,
    /// The last `fleet status` read (for `status` and the dashboard).
    view: Mutex<Option<(Instant, serde_json::Value)>>,
    started_at_ms: i64,
    stop: CancellationToken,
}

/// The fleet backend: the local journal plus the shared queue.
#[derive(Clone)]
pub struct Fleet {
    local: Sqlite,
    inner: Arc<Inner>,
}

impl Fleet {
    /// This node's own journal (for tests that look at its tables).
    #[cfg(test)]
    pub(in crate::journal) fn local(&self) -> &Sqlite {
        &self.local
    }
}

const LOST_LEASE: &str = "this node's lease on it lapsed and another node took it over";
const UNREACHABLE: &str = "the fleet database is unreachable";
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// How often a node reads the fleet's state for its own `status`.
const VIEW_EVERY: Duration = Duration::from_secs(15);

fn db_error(e: PgError) -> JournalError {
    JournalError::Fleet(format!("the fleet database refused a statement: {e}"))
}

impl Fleet {
    /// Opens the local journal and the fleet database (applying its schema
    /// steps). A database that cannot be reached now is not an error: the
    /// node starts, claims nothing, and keeps asking.
    pub async fn open(
        state_dir: &Path,
        settings: &crate::config::FleetSettings,
        shares: HashMap<String, String>,
    ) -> Result<Fleet, JournalError> {
        let local = Sqlite::open(state_dir)?;
        let pg = Pg::for_settings(settings).map_err(JournalError::Fleet)?;
        let inner = Arc::new(Inner {
            pg,
            shares: RwLock::new(shares),
            claims: Mutex::new(HashMap::new()),
            lost: Mutex::new(HashMap::new()),
            link: Mutex::new(Link::default()),
            unreported: Mutex::new(Vec::new()),
            migrated: false.into(),
            view: Mutex::new(None),
            elsewhere: Mutex::new(std::collections::HashSet::new()),
            started_at_ms: now_ms(),
            stop: CancellationToken::new(),
        });
        match tokio::time::timeout(pg::CALL_TIMEOUT, inner.pg.migrate()).await {
            Ok(Ok(())) => {
                inner.migrated.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(
                    "fleet: node \"{}\" joined (lease {}s)",
                    inner.pg.node,
                    inner.pg.lease.as_secs_f64()
                );
            }
            Ok(Err(PgError::Failed(m))) => {
                return Err(JournalError::Fleet(format!(
                    "the fleet database refused this node: {m}; check `fleet.database` (user, password, database name)"
                )));
            }
            Ok(Err(PgError::Unreachable(m) | PgError::Retry(m))) => {
                inner.went_down(&m);
            }
            Err(_) => {
                inner.went_down("no answer within 10s");
            }
        }
        tokio::spawn(lease::renew_loop(inner.clone()));
        Ok(Fleet { local, inner })
    }

    /// The roots' share names changed (a reload).
    pub fn set_shares(&self, shares: HashMap<String, String>) {
        *self.inner.shares.write().unwrap_or_else(PoisonError::into_inner) = shares;
    }

    /// Whether the upload of `id` ended because its claim was lost (and
    /// why). After a failed upload (`failed`) the database is asked too:
    /// a node that was stopped past its lease may see storage refuse a part
    /// of the upload another node completed before its lease task noticed.
    pub async fn claim_lost(&self, id: i64, failed: bool) -> Option<String> {
        if let Some(why) = self.inner.lost.held().remove(&id) {
            return Some(why);
        }
        let c = self.claim(id).filter(|_| failed)?;
        match tokio::time::timeout(pg::CALL_TIMEOUT, self.inner.pg.holds(c.pg_id, c.token)).await {
            Ok(Ok(false)) => {
                self.forget(id);
                Some(LOST_LEASE.to_string())
            }
            _ => None,
        }
    }

    fn claim(&self, id: i64) -> Option<Claim> {
        self.inner.claims.held().get(&id).cloned()
    }

    fn forget(&self, id: i64) -> Option<Claim> {
        self.inner.claims.held().remove(&id)
    }

    /// The claim on `id` is gone: the upload stops before anything final.
    fn lose(&self, id: i64, why: &str) -> JournalError {
        self.forget(id);
        self.inner.lost.held().insert(id, why.to_string());
        JournalError::Fleet(format!("not completed here: {why}"))
    }

    /// A fenced step: Ok(()) with the claim standing, else the claim is lost.
    async fn fence<F>(&self, id: i64, step: F) -> Result<(), JournalError>
    where
        F: AsyncFnOnce(&Pg, &Claim) -> Result<bool, PgError>,
    {
        let Some(claim) = self.claim(id) else {
            return Err(self.lose(id, LOST_LEASE));
        };
        match tokio::time::timeout(pg::CALL_TIMEOUT, step(&self.inner.pg, &claim)).await {
            Ok(Ok(true)) => {
                self.inner.came_up();
                Ok(())
            }
            Ok(Ok(false)) => Err(self.lose(id, LOST_LEASE)),
            Ok(Err(PgError::Failed(m))) => Err(db_error(PgError::Failed(m))),
            Ok(Err(PgError::Retry(m))) => {
                Err(self.lose(id, &format!("the fleet database asked to try again ({m})")))
            }
            Ok(Err(PgError::Unreachable(m))) => {
                self.inner.went_down(&m);
                Err(self.lose(id, UNREACHABLE))
            }
            Err(_) => {
                self.inner.went_down("no answer within 10s");
                Err(self.lose(id, UNREACHABLE))
            }
        }
    }

    /// Local due files this node may upload now: each claimed in the
    /// database first. Files another node holds wait a moment (no attempt
    /// spent); files uploaded by another node are recorded as such.
    pub async fn due(
        &self,
        now: i64,
        limit: usize,
        skip: Vec<i64>,
        tried: Option<Arc<std::collections::HashSet<i64>>>,
        serving: Serving,
    ) -> Result<Vec<FileRow>, JournalError> {
        let want = limit.saturating_mul(4).max(limit + 8).min(256);
        let rows = self.local.due(now, want, skip, tried, serving).await?;
        if rows.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        if let Some(wait) = self.inner.waiting() {
            self.local.postpone(ids, now + wait.as_millis() as i64).await?;
            return Ok(Vec::new());
        }
        let (cands, rows): (Vec<Candidate>, Vec<FileRow>) = {
            let shares = self.inner.shares.read().unwrap_or_else(PoisonError::into_inner);
            rows.into_iter()
                .filter_map(|r| {
                    let share = shares.get(&r.root)?.clone();
                    Some((
                        Candidate {
                            share,
                            rel: r.rel.clone(),
                            fp: r.fingerprint(),
                        },
                        r,
                    ))
                })
                .unzip()
        };
        let outcome = tokio::time::timeout(pg::CALL_TIMEOUT, self.inner.pg.claim(&cands, limit)).await;
        let claims = match outcome {
            Ok(Ok(c)) => {
                self.inner.came_up();
                c
            }
            // Another node's claim crossed this one: ask again in a moment.
            Ok(Err(PgError::Retry(m))) => {
                tracing::debug!("fleet: claiming again shortly ({m})");
                self.local.postpone(ids, now + 300).await?;
                return Ok(Vec::new());
            }
            // Refused (permissions, a broken schema): said, and asked again
            // later; the agent goes on (its other work needs no database).
            Ok(Err(PgError::Failed(m))) => {
                tracing::error!("fleet: the database refused to hand out files: {m}; asking again in 15s");
                self.local.postpone(ids, now + 15_000).await?;
                return Ok(Vec::new());
            }
            Ok(Err(PgError::Unreachable(m))) => {
                let wait = self.inner.went_down(&m);
                self.local.postpone(ids, now + wait.as_millis() as i64).await?;
                return Ok(Vec::new());
            }
            Err(_) => {
                let wait = self.inner.went_down("no answer within 10s");
                self.local.postpone(ids, now + wait.as_millis() as i64).await?;
                return Ok(Vec::new());
            }
        };
        let mut out = Vec::new();
        let mut later: HashMap<i64, Vec<i64>> = HashMap::new();
        for (row, claimed) in rows.into_iter().zip(claims) {
            {
                let mut elsewhere = self.inner.elsewhere.held();
                match claimed {
                    Claimed::Busy { .. } => elsewhere.insert(row.id),
                    Claimed::NotNow => false,
                    _ => elsewhere.remove(&row.id),
                };
            }
            match claimed {
                Claimed::Mine {
                    pg_id,
                    token,
                    saved,
                    took_over,
                } => {
                    if let Some(node) = took_over {
                        tracing::info!(
                            path = %row.local_path().display(),
                            "fleet: taking over {} from node \"{node}\", whose lease lapsed{}",
                            row.local_path().display(),
                            if saved.is_some() { "; resuming its upload from the recorded parts" } else { "" }
                        );
                    }
                    self.inner.claims.held().insert(
                        row.id,
                        Claim {
                            pg_id,
                            token,
                            root: row.root.clone(),
                            rel: row.rel.clone(),
                            saved,
                        },
                    );
                    out.push(row);
                }
                Claimed::Done { mut record, node } => {
                    tracing::info!(
                        path = %row.local_path().display(),
                        "fleet: {} was uploaded by node \"{node}\" (file_no {}); not sending it again",
                        row.local_path().display(),
                        record.file_no
                    );
                    record.adopted = Some(format!("uploaded by fleet node {node}"));
                    self.local.record_done(row.id, record).await?;
                }
                // Re-asked soon: when the holder finishes, or its lease lapses.
                Claimed::Busy { left_ms, node } => {
                    tracing::trace!("{}: held by node \"{node}\"", row.rel);
                    later.entry(left_ms.clamp(500, 2000)).or_default().push(row.id);
                }
                Claimed::NotNow => {}
            }
        }
        for (wait, ids) in later {
            self.local.postpone(ids, now + wait).await?;
        }
        Ok(out)
    }

    /// How many of this node's files were last found held by another node.
    pub fn held_elsewhere(&self) -> usize {
        self.inner.elsewhere.held().len()
    }

    /// The file is in the workspace: recorded in the database under this
    /// node's token (if it still holds the claim) and locally.
    pub async fn record_done(&self, id: i64, d: DoneRecord) -> Result<(), JournalError> {
        if let Some(c) = self.forget(id) {
            match tokio::time::timeout(pg::CALL_TIMEOUT, self.inner.pg.record_done(c.pg_id, c.token, &d))
                .await
            {
                Ok(Ok(true)) => self.inner.came_up(),
                Ok(Ok(false)) => tracing::info!(
                    "fleet: {}/{} is stored, but {LOST_LEASE}; that node finds it in the workspace",
                    c.root,
                    c.rel
                ),
                // The file is stored: whatever the database says, it is
                // recorded here, and the database is told again shortly.
                Ok(Err(PgError::Failed(m) | PgError::Retry(m))) => {
                    tracing::warn!(
                        "fleet: recording {}/{} failed ({m}); trying again shortly",
                        c.root,
                        c.rel
                    );
                    self.inner.unreported.held().push((c.pg_id, c.token, d.clone()));
                }
                Ok(Err(PgError::Unreachable(m))) => {
                    self.inner.went_down(&m);
                    self.inner.unreported.held().push((c.pg_id, c.token, d.clone()));
                }
                Err(_) => {
                    self.inner.went_down("no answer within 10s");
                    self.inner.unreported.held().push((c.pg_id, c.token, d.clone()));
                }
            }
        }
        self.local.record_done(id, d).await
    }

    pub async fn record_failure(
        &self,
        id: i64,
        error: String,
        max_attempts: u32,
        retry_at: i64,
    ) -> Result<State, JournalError> {
        let state = self
            .local
            .record_failure(id, error.clone(), max_attempts, retry_at)
            .await?;
        let failed = (state == State::Failed).then_some(error);
        self.release(id, failed).await;
        Ok(state)
    }

    /// Any state but "being uploaded" gives the claim back.
    pub async fn set_state(&self, id: i64, state: State) -> Result<(), JournalError> {
        self.local.set_state(id, state).await?;
        if !matches!(state, State::Uploading | State::Reconciling) {
            self.release(id, None).await;
        }
        Ok(())
    }

    pub async fn mark_gone(&self, root: String, rel: String) -> Result<(), JournalError> {
        let id = self
            .inner
            .claims
            .held()
            .iter()
            .find(|(_, c)| c.root == root && c.rel == rel)
            .map(|(id, _)| *id);
        if let Some(id) = id {
            self.release(id, None).await;
        }
        self.local.mark_gone(root, rel).await
    }

    /// Gives the claim on `id` back, if held (best effort: a claim not
    /// given back lapses after the lease).
    async fn release(&self, id: i64, failed: Option<String>) {
        if let Some(c) = self.forget(id) {
            let _ = tokio::time::timeout(
                pg::CALL_TIMEOUT,
                self.inner.pg.release(c.pg_id, c.token, failed.as_deref()),
            )
            .await;
        }
    }

    /// A clean stop: every claim given back, so other nodes go on at once.
    pub async fn checkpoint(&self) -> Result<(), JournalError> {
        self.inner.stop.cancel();
        if self.inner.waiting().is_none() {
            let _ = tokio::time::timeout(Duration::from_secs(3), self.inner.pg.stop()).await;
        }
        self.local.checkpoint().await
    }
}
