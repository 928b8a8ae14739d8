//! The fleet as commands see it: this node's last view (for `status` and
//! the dashboard), and `fleet status` and `verify --requeue`, which read or
//! change the database without joining the fleet.

use super::pg::{self, Candidate, Pg, PgError};
use super::*;

impl Fleet {
    /// The fleet as last read (every 15 s), with this node's name and
    /// whether the database answers now.
    pub fn view(&self) -> serde_json::Value {
        let view = self.inner.view.held().as_ref().map(|v| v.1.clone());
        let down = self.inner.link.held().down_since.is_some();
        serde_json::json!({
            "node": &*self.inner.pg.node,
            "database": if down { "unreachable" } else { "ok" },
            "nodes": view.as_ref().map(|v| v["nodes"].clone()).unwrap_or(serde_json::json!([])),
            "files": view.as_ref().map(|v| v["files"].clone()).unwrap_or(serde_json::json!({})),
        })
    }

    /// `verify --requeue` on a fleet node: the lost files' versions are
    /// due again for the whole fleet, not only in this node's journal
    /// (where they are requeued as without a fleet). No node joins.
    pub async fn requeue_lost(
        settings: &crate::config::Settings,
        rows: &[FileRow],
    ) -> Result<u64, JournalError> {
        let Some(fleet) = &settings.fleet else {
            return Ok(0);
        };
        let shares = settings.shares();
        let cands: Vec<Candidate> = rows
            .iter()
            .filter_map(|r| {
                Some(Candidate {
                    share: shares.get(&r.root)?.clone(),
                    rel: r.rel.clone(),
                    fp: r.fingerprint(),
                })
            })
            .collect();
        let pg = Pg::for_settings(fleet).map_err(JournalError::Fleet)?;
        match tokio::time::timeout(pg::CALL_TIMEOUT, pg.requeue(&cands)).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(JournalError::Fleet(format!(
                "the files were queued again on this node, but the fleet database could not be told ({e}); \
                 run `verify --requeue` again when it answers"
            ))),
            Err(_) => Err(JournalError::Fleet(format!(
                "{UNREACHABLE} (no answer within 10s)"
            ))),
        }
    }

    /// `fleet status` from a command (no node joins: only reads).
    pub async fn read_status(
        settings: &crate::config::FleetSettings,
    ) -> Result<serde_json::Value, JournalError> {
        let pg = Pg::for_settings(settings).map_err(JournalError::Fleet)?;
        let unreachable = |m: String| {
            JournalError::Fleet(format!(
                "{UNREACHABLE} ({m}); check `fleet.database` and that the server is up"
            ))
        };
        match tokio::time::timeout(pg::CALL_TIMEOUT, pg.status()).await {
            Ok(Ok(v)) => Ok(v),
            // A database no node has joined yet holds no fleet.
            Ok(Err(PgError::Failed(m))) if m.contains("42P01") => {
                Ok(serde_json::json!({"nodes": [], "files": {}}))
            }
            Ok(Err(e @ (PgError::Failed(_) | PgError::Retry(_)))) => Err(db_error(e)),
            Ok(Err(PgError::Unreachable(m))) => Err(unreachable(m)),
            Err(_) => Err(unreachable("no answer within 10s".into())),
        }
    }
}
