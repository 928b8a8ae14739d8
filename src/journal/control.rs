//! What the control plane keeps across restarts: a pause set by the user,
//! and the outbox of notifications not yet delivered.

use rusqlite::{OptionalExtension, params};

use super::*;

/// A pause the user asked for: until when (unix ms), or until `resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UserPause {
    pub since_ms: i64,
    pub until_ms: Option<i64>,
}

/// A notification waiting for its receiver (`target` indexes `[[notify]]`;
/// [`HEALTHCHECK_TARGET`] is the healthcheck url).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub target: i64,
    pub event: String,
    pub body: String,
    pub attempts: u32,
}

/// One message for the outbox.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub target: i64,
    pub event: String,
    pub body: String,
}

const PAUSE_KEY: &str = "pause";

impl Sqlite {
    pub async fn user_pause(&self) -> Result<Option<UserPause>, JournalError> {
        self.call(|c| {
            let v: Option<String> = c
                .query_row(
                    "SELECT value FROM agent_state WHERE key = ?1",
                    params![PAUSE_KEY],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(v.and_then(|v| {
                let (since, until) = v.split_once(' ')?;
                Some(UserPause {
                    since_ms: since.parse().ok()?,
                    until_ms: until.parse().ok(),
                })
            }))
        })
        .await
    }

    pub async fn set_user_pause(&self, pause: Option<UserPause>) -> Result<(), JournalError> {
        self.call(move |c| {
            match pause {
                Some(p) => {
                    let until = p.until_ms.map_or_else(|| "-".to_string(), |u| u.to_string());
                    c.execute(
                        "INSERT INTO agent_state (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = ?2",
                        params![PAUSE_KEY, format!("{} {until}", p.since_ms)],
                    )?;
                }
                None => {
                    c.execute("DELETE FROM agent_state WHERE key = ?1", params![PAUSE_KEY])?;
                }
            }
            Ok(())
        })
        .await
    }

    pub async fn outbox_push(&self, items: Vec<OutboxItem>, now: i64) -> Result<(), JournalError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "INSERT INTO outbox (target, event, body, next_at, created_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            )?;
            for i in &items {
                stmt.execute(params![i.target, i.event, i.body, now])?;
            }
            Ok(())
        })
        .await
    }

    pub async fn outbox_due(&self, now: i64, limit: usize) -> Result<Vec<OutboxRow>, JournalError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, target, event, body, attempts FROM outbox WHERE next_at <= ?1 ORDER BY next_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit as i64], |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    target: r.get(1)?,
                    event: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get::<_, i64>(4)? as u32,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn outbox_next(&self) -> Result<Option<i64>, JournalError> {
        self.call(|c| c.query_row("SELECT min(next_at) FROM outbox", [], |r| r.get(0)))
            .await
    }

    pub async fn outbox_delivered(&self, id: i64) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute("DELETE FROM outbox WHERE id = ?1", params![id])
                .map(|_| ())
        })
        .await
    }

    pub async fn outbox_retry(&self, id: i64, next_at: i64, error: String) -> Result<(), JournalError> {
        self.call(move |c| {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?2, last_error = ?3 WHERE id = ?1",
                params![id, next_at, error],
            )
            .map(|_| ())
        })
        .await
    }
}
