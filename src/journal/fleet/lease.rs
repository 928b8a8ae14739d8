//! Keeping claims alive: the lease task (renewals, the node's heartbeat,
//! claims another node took over, results owed from an outage, the fleet
//! view) and whether the database answers (one log line each way).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pg::{self, PgError};
use super::*;

impl Inner {
    /// The database did not answer: one line when that starts; returns how
    /// long to wait before asking again (doubling up to 15 s).
    pub(super) fn went_down(&self, why: &str) -> Duration {
        let mut link = self.link.held();
        let now = Instant::now();
        if link.down_since.is_none() {
            link.down_since = Some(now);
            link.backoff = Duration::from_secs(1);
            tracing::warn!(
                "{UNREACHABLE} ({why}): no new file is claimed; uploads in flight send their parts and wait \
                 to complete; asking again every few seconds"
            );
        } else if link.next_try.is_some_and(|t| t <= now) {
            link.backoff = (link.backoff * 2).min(MAX_BACKOFF);
        }
        link.next_try = Some(now + link.backoff);
        link.backoff
    }

    pub(super) fn came_up(&self) {
        let mut link = self.link.held();
        if let Some(since) = link.down_since.take() {
            link.next_try = None;
            tracing::info!(
                "the fleet database is reachable again after {}s; claiming resumes",
                since.elapsed().as_secs()
            );
        }
    }

    /// While the database is away and it is not yet time to ask again: how long to wait.
    pub(super) fn waiting(&self) -> Option<Duration> {
        let link = self.link.held();
        link.down_since?;
        let now = Instant::now();
        link.next_try.filter(|t| *t > now).map(|t| t - now)
    }
}

/// Renews this node's leases every quarter lease (its heartbeat too),
/// notices claims another node took over, and writes results recorded
/// while the database was away. Runs beside the agent, so a busy agent
/// loop never lets a lease lapse.
pub(super) async fn renew_loop(inner: Arc<Inner>) {
    use std::sync::atomic::Ordering;
    let every = (inner.pg.lease / 4).max(Duration::from_millis(250));
    // The first heartbeat may find this node's previous run (killed, its
    // heartbeat not yet old): only a name seen again later is another agent.
    let mut beats = 0u64;
    let mut twin_said = false;
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if inner.waiting().is_some() {
            continue;
        }
        if !inner.migrated.load(Ordering::SeqCst) {
            match tokio::time::timeout(pg::CALL_TIMEOUT, inner.pg.migrate()).await {
                Ok(Ok(())) => inner.migrated.store(true, Ordering::SeqCst),
                Ok(Err(PgError::Failed(m))) => tracing::error!("the fleet database refused its schema: {m}"),
                Ok(Err(PgError::Retry(_))) => continue,
                Ok(Err(PgError::Unreachable(m))) => {
                    inner.went_down(&m);
                    continue;
                }
                Err(_) => {
                    inner.went_down("no answer within 10s");
                    continue;
                }
            }
        }
        // Results owed from an outage first: they end claims cleanly.
        let owed: Vec<_> = std::mem::take(&mut *inner.unreported.held());
        for (pg_id, token, d) in owed {
            match tokio::time::timeout(pg::CALL_TIMEOUT, inner.pg.record_done(pg_id, token, &d)).await {
                Ok(Ok(_)) => {}
                _ => inner.unreported.held().push((pg_id, token, d)),
            }
        }
        let held: Vec<(i64, i64)> = inner.claims.held().values().map(|c| (c.pg_id, c.token)).collect();
        let renewed = tokio::time::timeout(
            pg::CALL_TIMEOUT,
            inner.pg.renew(&held, std::process::id(), inner.started_at_ms),
        )
        .await;
        match renewed {
            Ok(Ok((gone, twin))) => {
                inner.came_up();
                beats += 1;
                if let Some(pid) = twin
                    && beats > 1
                    && !twin_said
                {
                    twin_said = true;
                    tracing::warn!(
                        "fleet: another agent (pid {pid}) is running as node \"{}\" too; give each agent its \
                         own `fleet.node` (files are still uploaded once, but `fleet status` counts the two as one)",
                        inner.pg.node
                    );
                }
                if !gone.is_empty() {
                    let mut claims = inner.claims.held();
                    let mut lost = inner.lost.held();
                    claims.retain(|id, c| {
                        if gone.contains(&c.pg_id) {
                            tracing::warn!(
                                "fleet: {}/{}: {LOST_LEASE}; it is not completed here",
                                c.root,
                                c.rel
                            );
                            lost.insert(*id, LOST_LEASE.to_string());
                            false
                        } else {
                            true
                        }
                    });
                }
            }
            Ok(Err(PgError::Unreachable(m))) => {
                inner.went_down(&m);
                continue;
            }
            Ok(Err(PgError::Failed(m))) => tracing::warn!("fleet: renewing leases failed: {m}"),
            Ok(Err(PgError::Retry(_))) => continue,
            Err(_) => {
                inner.went_down("no answer within 10s");
                continue;
            }
        }
        let stale = inner
            .view
            .held()
            .as_ref()
            .is_none_or(|v| v.0.elapsed() >= VIEW_EVERY);
        if stale && let Ok(Ok(v)) = tokio::time::timeout(pg::CALL_TIMEOUT, inner.pg.status()).await {
            *inner.view.held() = Some((Instant::now(), v));
        }
    }
}
