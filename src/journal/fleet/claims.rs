//! The claim and its fenced steps: taking files, recording the session
//! and its parts, the checks before complete and with the result, giving
//! claims back, and renewing leases. Every write about an upload names the
//! claim's fencing token; a node whose token was replaced writes nothing.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_postgres::types::ToSql;

use super::pg::{Candidate, Claimed, Pg, PgError};
use crate::api::Session;
use crate::fileid::Fingerprint;
use crate::journal::{DoneRecord, SavedSession};

impl Pg {
    /// Registers the candidates (one row per version, whichever node saw
    /// it first) and claims those nobody else holds, up to `limit`, in the
    /// order given. Rows another node is claiming this instant are skipped
    /// (`SKIP LOCKED`) and come back as busy for a moment.
    pub async fn claim(&self, cands: &[Candidate], limit: usize) -> Result<Vec<Claimed>, PgError> {
        // Inserted in key order: nodes inserting overlapping versions at
        // once then wait on each other in one order, never in a cycle.
        let mut sorted: Vec<Candidate> = cands.to_vec();
        sorted.sort_by(|a, b| {
            (&a.share, &a.rel, a.fp.size, a.fp.mtime_ns).cmp(&(&b.share, &b.rel, b.fp.size, b.fp.mtime_ns))
        });
        let (s_shares, s_rels, s_sizes, s_mtimes) = Pg::columns(&sorted);
        let (shares, rels, sizes, mtimes) = Pg::columns(cands);
        let mut c = self.client().await?;
        c.execute(
            "INSERT INTO fleet_files (share, rel, size, mtime_ns)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
             ON CONFLICT (share, rel, size, mtime_ns) DO NOTHING",
            &[&s_shares, &s_rels, &s_sizes, &s_mtimes],
        )
        .await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query(
                "SELECT f.id, f.share, f.rel, f.size, f.mtime_ns, f.state, f.node, f.instance,
                        COALESCE((EXTRACT(EPOCH FROM (f.lease_until - now())) * 1000)::bigint, 0),
                        f.phase, f.session, f.parts_done, f.sha256,
                        f.remote_folder, f.remote_name, f.file_no, f.url, f.done_sha256, f.done_node
                 FROM fleet_files f
                 JOIN unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS c(share, rel, size, mtime_ns)
                   USING (share, rel, size, mtime_ns)
                 FOR UPDATE OF f SKIP LOCKED",
                &[&shares, &rels, &sizes, &mtimes],
            )
            .await?;
        let mut by_key = std::collections::HashMap::new();
        for r in rows {
            let key: (String, String, i64, i64) = (r.get(1), r.get(2), r.get(3), r.get(4));
            by_key.insert(key, r);
        }
        let mut out = Vec::with_capacity(cands.len());
        let mut take: Vec<(usize, i64, Option<String>)> = Vec::new();
        for (i, cand) in cands.iter().enumerate() {
            let key = (
                cand.share.clone(),
                cand.rel.clone(),
                cand.fp.size as i64,
                cand.fp.mtime_ns as i64,
            );
            let Some(r) = by_key.get(&key) else {
                // Locked by another node's claim right now.
                out.push(Claimed::Busy {
                    node: "another node".into(),
                    left_ms: 1000,
                });
                continue;
            };
            let state: String = r.get(5);
            let node: Option<String> = r.get(6);
            let instance: Option<String> = r.get(7);
            let left_ms: i64 = r.get(8);
            match state.as_str() {
                "done" => {
                    out.push(Claimed::Done {
                        record: DoneRecord {
                            fingerprint: cand.fp,
                            // Another node read it: this one hashes it once.
                            identity: None,
                            sha256: r.get::<_, Option<String>>(17).unwrap_or_default(),
                            remote_folder: r.get::<_, Option<String>>(13).unwrap_or_default(),
                            remote_name: r.get::<_, Option<String>>(14).unwrap_or_default(),
                            file_no: r.get::<_, Option<String>>(15).unwrap_or_default(),
                            url: r.get(16),
                            adopted: None,
                            retire: None,
                        },
                        node: r.get::<_, Option<String>>(18).unwrap_or_default(),
                    });
                    continue;
                }
                "claimed" if left_ms > 0 && instance.as_deref() != Some(&*self.instance) => {
                    out.push(Claimed::Busy {
                        node: node.unwrap_or_default(),
                        left_ms,
                    });
                    continue;
                }
                _ => {}
            }
            if take.len() >= limit {
                out.push(Claimed::NotNow);
                continue;
            }
            let took_over = (state == "claimed" && instance.as_deref() != Some(&*self.instance))
                .then(|| node.unwrap_or_default());
            take.push((i, r.get(0), took_over));
            out.push(Claimed::NotNow);
        }
        if !take.is_empty() {
            let ids: Vec<i64> = take.iter().map(|t| t.1).collect();
            let granted = tx
                .query(
                    "UPDATE fleet_files SET state = 'claimed', node = $2, instance = $3,
                            token = nextval('fleet_tokens'),
                            lease_until = now() + $4::float8 * interval '1 millisecond',
                            claims = claims + 1, error = NULL, updated_at = now()
                     WHERE id = ANY($1) RETURNING id, token",
                    &[&ids, &&*self.node, &&*self.instance, &(self.lease_ms() as f64)],
                )
                .await?;
            let tokens: std::collections::HashMap<i64, i64> =
                granted.iter().map(|r| (r.get(0), r.get(1))).collect();
            for (i, pg_id, took_over) in take {
                let cand = &cands[i];
                let key = (
                    cand.share.clone(),
                    cand.rel.clone(),
                    cand.fp.size as i64,
                    cand.fp.mtime_ns as i64,
                );
                let r = &by_key[&key];
                let Some(token) = tokens.get(&pg_id) else {
                    continue;
                };
                let saved = saved_session(r.get(9), r.get(10), r.get(11), r.get(12), cand.fp);
                out[i] = Claimed::Mine {
                    pg_id,
                    token: *token,
                    saved,
                    took_over,
                };
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// A fenced write: runs only while this node's claim (token) stands and
    /// its lease has at least `margin` left. False: the claim is lost.
    async fn fenced(
        &self,
        sql: &str,
        pg_id: i64,
        token: i64,
        margin: Duration,
        extra: &[&(dyn ToSql + Sync)],
    ) -> Result<bool, PgError> {
        let c = self.client().await?;
        let margin_ms = margin.as_millis() as f64;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&pg_id, &token, &margin_ms];
        params.extend_from_slice(extra);
        let sql = format!(
            "{sql} WHERE id = $1 AND token = $2 AND state = 'claimed'
               AND lease_until > now() + $3::float8 * interval '1 millisecond'"
        );
        Ok(c.execute(&sql, &params).await? == 1)
    }

    /// Records the session before any part is sent.
    pub async fn save_session(
        &self,
        pg_id: i64,
        token: i64,
        s: &Session,
        sha256: &str,
    ) -> Result<bool, PgError> {
        let json = session_json(s);
        let done = "0".repeat(s.parts.len());
        self.fenced(
            "UPDATE fleet_files SET phase = 'parts', session = $4, parts_done = $5, sha256 = $6,
                    session_node = $7, updated_at = now()",
            pg_id,
            token,
            Duration::ZERO,
            &[&json, &done, &sha256, &&*self.node],
        )
        .await
    }

    /// Part `index` is stored (not fenced on the lease: a part stored is a
    /// fact of the session, whoever holds it now; only a claim's owner writes).
    pub async fn part_done(&self, pg_id: i64, token: i64, index: usize) -> Result<(), PgError> {
        let c = self.client().await?;
        let at = index as i32 + 1;
        c.execute(
            "UPDATE fleet_files SET parts_done = overlay(parts_done placing '1' from $3 for 1)
             WHERE id = $1 AND token = $2 AND parts_done IS NOT NULL AND length(parts_done) >= $3",
            &[&pg_id, &token, &at],
        )
        .await?;
        Ok(())
    }

    /// Complete is about to be sent: only with the claim standing and
    /// `margin` of lease left, so no node that lost its lease sends it.
    /// Every part is stored by now, so every part is marked here: a mark
    /// still on its way (or lost to an outage) must not make a later holder
    /// PUT a part again, since storage refuses parts of a completed upload
    /// (404 NoSuchUpload) and the file would be reported failed.
    pub async fn completing(&self, pg_id: i64, token: i64, margin: Duration) -> Result<bool, PgError> {
        self.fenced(
            "UPDATE fleet_files SET phase = 'completing', parts_done = repeat('1', length(parts_done)),
                    updated_at = now()",
            pg_id,
            token,
            margin,
            &[],
        )
        .await
    }

    pub async fn drop_session(&self, pg_id: i64, token: i64) -> Result<(), PgError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE fleet_files SET phase = NULL, session = NULL, parts_done = NULL, sha256 = NULL,
                    session_node = NULL, updated_at = now()
             WHERE id = $1 AND token = $2",
            &[&pg_id, &token],
        )
        .await?;
        Ok(())
    }

    /// The file is uploaded: recorded in the transaction that checks this
    /// node's token. False: another node holds it now (it reconciles).
    pub async fn record_done(&self, pg_id: i64, token: i64, d: &DoneRecord) -> Result<bool, PgError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT token, state FROM fleet_files WHERE id = $1 FOR UPDATE",
                &[&pg_id],
            )
            .await?;
        let holds = row
            .is_some_and(|r| r.get::<_, Option<i64>>(0) == Some(token) && r.get::<_, String>(1) == "claimed");
        if holds {
            tx.execute(
                "UPDATE fleet_files SET state = 'done', lease_until = NULL, phase = NULL, session = NULL,
                        parts_done = NULL, remote_folder = $2, remote_name = $3, file_no = $4, url = $5,
                        done_sha256 = $6, done_node = $7, done_at = now(), error = NULL, updated_at = now()
                 WHERE id = $1",
                &[
                    &pg_id,
                    &d.remote_folder,
                    &d.remote_name,
                    &d.file_no,
                    &d.url,
                    &d.sha256,
                    &&*self.node,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(holds)
    }

    /// Whether this node's claim (token) still stands, lapsed lease or not:
    /// asked when an upload failed, since a part refused by storage may only
    /// mean that another node took the file over and completed it.
    pub async fn holds(&self, pg_id: i64, token: i64) -> Result<bool, PgError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT 1 FROM fleet_files WHERE id = $1 AND token = $2 AND state = 'claimed'",
                &[&pg_id, &token],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Gives a claim back (the session stays, for whoever takes it next):
    /// `failed` after a node's last attempt, else `pending`.
    pub async fn release(&self, pg_id: i64, token: i64, failed: Option<&str>) -> Result<(), PgError> {
        let c = self.client().await?;
        let state = if failed.is_some() { "failed" } else { "pending" };
        c.execute(
            "UPDATE fleet_files SET state = $3, lease_until = NULL, error = COALESCE($4, error), updated_at = now()
             WHERE id = $1 AND token = $2 AND state = 'claimed'",
            &[&pg_id, &token, &state, &failed],
        )
        .await?;
        Ok(())
    }

    /// Renews the leases of the claims this node holds; returns the ids of
    /// those it no longer holds (another node took them over), and the pid
    /// of another running agent that heartbeats under this node's name, if
    /// one did since the last heartbeat (two agents must not share a name:
    /// `fleet status` would count them as one). Also this node's heartbeat.
    pub async fn renew(
        &self,
        claims: &[(i64, i64)],
        pid: u32,
        started_at_ms: i64,
    ) -> Result<(Vec<i64>, Option<i32>), PgError> {
        let c = self.client().await?;
        // The CTE reads the row as it was before this heartbeat replaces it.
        let twin = c
            .query_opt(
                "WITH prev AS (
                    SELECT pid FROM fleet_nodes
                    WHERE node = $1 AND instance <> $2 AND NOT stopped
                      AND heartbeat_at > now() - lease_ms * interval '1 millisecond'
                 ), beat AS (
                    INSERT INTO fleet_nodes (node, instance, pid, version, lease_ms, started_at, heartbeat_at, stopped)
                    VALUES ($1, $2, $3, $4, $5, to_timestamp($6::float8 / 1000.0), now(), false)
                    ON CONFLICT (node) DO UPDATE SET instance = $2, pid = $3, version = $4, lease_ms = $5,
                           started_at = to_timestamp($6::float8 / 1000.0), heartbeat_at = now(), stopped = false
                 )
                 SELECT pid FROM prev",
                &[
                    &&*self.node,
                    &&*self.instance,
                    &(pid as i32),
                    &env!("CARGO_PKG_VERSION"),
                    &self.lease_ms(),
                    &(started_at_ms as f64),
                ],
            )
            .await?
            .and_then(|r| r.get::<_, Option<i32>>(0));
        if claims.is_empty() {
            return Ok((Vec::new(), twin));
        }
        let ids: Vec<i64> = claims.iter().map(|c| c.0).collect();
        let tokens: Vec<i64> = claims.iter().map(|c| c.1).collect();
        let kept = c
            .query(
                "UPDATE fleet_files f SET lease_until = now() + $3::float8 * interval '1 millisecond'
                 FROM unnest($1::bigint[], $2::bigint[]) AS c(id, token)
                 WHERE f.id = c.id AND f.token = c.token AND f.state = 'claimed'
                 RETURNING f.id",
                &[&ids, &tokens, &(self.lease_ms() as f64)],
            )
            .await?;
        let kept: std::collections::HashSet<i64> = kept.iter().map(|r| r.get(0)).collect();
        Ok((ids.into_iter().filter(|id| !kept.contains(id)).collect(), twin))
    }
}

fn session_json(s: &Session) -> Value {
    json!({
        "session_id": s.session_id,
        "uuid": s.uuid,
        "part_size": s.part_size,
        "parts": s.parts.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "expire_at": s.expire_at,
        "began_at_ms": s.began_at_ms,
    })
}

/// The session a claim carries over, if one was recorded and it is whole.
fn saved_session(
    phase: Option<String>,
    session: Option<Value>,
    parts_done: Option<String>,
    sha256: Option<String>,
    fp: Fingerprint,
) -> Option<SavedSession> {
    phase?;
    let s = session?;
    let parts: Vec<url::Url> = s["parts"]
        .as_array()?
        .iter()
        .map(|u| u.as_str().and_then(|u| url::Url::parse(u).ok()))
        .collect::<Option<_>>()?;
    let done: Vec<bool> = parts_done?.chars().map(|c| c == '1').collect();
    if done.len() != parts.len() {
        return None;
    }
    Some(SavedSession {
        session: Session {
            session_id: s["session_id"].as_str()?.to_string(),
            uuid: s["uuid"].as_str().map(str::to_string),
            part_size: s["part_size"].as_u64()?,
            parts,
            expire_at: s["expire_at"].as_i64(),
            began_at_ms: s["began_at_ms"].as_i64().unwrap_or(0),
        },
        done,
        fingerprint: fp,
        sha256: sha256?,
        // A session that was completing is carried over as "parts all
        // sent": the next holder completes the same session (a repeated
        // complete of one session never makes a second file) rather than
        // asking the workspace and, finding nothing yet, starting another.
        completing: false,
        direct: false,
        file_id: None,
    })
}
