//! The fleet's PostgreSQL side: the connection pool, the schema steps
//! (applied once, under an advisory lock, by whichever node gets it first),
//! and every statement the fleet runs. No other file holds fleet SQL.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Value, json};
use tokio_postgres::types::ToSql;

use crate::api::Session;
use crate::fileid::Fingerprint;
use crate::journal::{DoneRecord, SavedSession};

/// The schema's steps, in order (never edit a released one; add one).
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_fleet.sql")];
/// Any fixed number: the advisory lock that serialises schema changes.
const MIGRATION_LOCK: i64 = 0x6172_7379_6e63; // "arsync"

/// Every fleet call gives up after this long (a server that stopped
/// answering looks the same as one that is down).
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure talking to the database.
#[derive(Debug, Clone)]
pub(super) enum PgError {
    /// The server cannot be reached (down, restarting, network): the fleet
    /// waits and asks again.
    Unreachable(String),
    /// It answered with an error (a bug or a schema problem): reported.
    Failed(String),
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgError::Unreachable(m) | PgError::Failed(m) => f.write_str(m),
        }
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        let message = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        match e.as_db_error() {
            // Class 08: connection exceptions; 57P0x: the server is shutting
            // down or starting; 53: out of resources.
            Some(db) => {
                let code = db.code().code();
                if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") {
                    PgError::Unreachable(message)
                } else {
                    PgError::Failed(message)
                }
            }
            // No answer from the server: the connection failed or closed.
            // (Anything else is ours: a statement the server never saw.)
            None if e.is_closed()
                || [
                    "connect",
                    "communicat",
                    "closed",
                    "timeout",
                    "timed out",
                    "unexpected EOF",
                ]
                .iter()
                .any(|w| message.contains(w)) =>
            {
                PgError::Unreachable(message)
            }
            None => PgError::Failed(message),
        }
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => PgError::Unreachable(other.to_string()),
        }
    }
}

/// The pool, and who this node is.
#[derive(Clone)]
pub(super) struct Pg {
    pool: Pool,
    pub node: Arc<str>,
    /// This process (a node restarted is a new instance: it waits for its
    /// old leases to lapse like any other node would).
    pub instance: Arc<str>,
    pub lease: Duration,
}

/// One file version a node has seen stable and wants to upload.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub share: String,
    pub rel: String,
    pub fp: Fingerprint,
}

/// What the database says about a candidate.
#[derive(Debug, Clone)]
pub(super) enum Claimed {
    /// This node holds it now, with this fencing token (and the session
    /// another node, or an earlier run, left).
    Mine {
        pg_id: i64,
        token: i64,
        saved: Option<SavedSession>,
        /// The node whose lapsed lease this claim took over, if another's.
        took_over: Option<String>,
    },
    /// Uploaded (by whichever node): recorded here without uploading.
    Done { record: DoneRecord, node: String },
    /// Another node holds it for about this long (ms).
    Busy { node: String, left_ms: i64 },
    /// Claimable, but more than was asked for: left for the next call.
    NotNow,
}

fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl Pg {
    /// A pool for `url` (nothing is connected yet).
    pub fn new(url: &str, node: &str, lease: Duration) -> Result<Pg, String> {
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("`fleet.database` is not a PostgreSQL address: {e}"))?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(5));
        }
        cfg.application_name(format!("autorender-sync {node}"));
        let mgr = Manager::from_config(
            cfg,
            tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(4)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(Duration::from_secs(6)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| e.to_string())?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let instance = format!("{:x}-{nanos:x}", std::process::id());
        Ok(Pg {
            pool,
            node: node.into(),
            instance: instance.into(),
            lease,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        Ok(self.pool.get().await?)
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Applies the schema steps this database lacks, one node at a time.
    pub async fn migrate(&self) -> Result<(), PgError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS fleet_schema (version INTEGER NOT NULL)")
            .await?;
        let found: Option<i32> = tx
            .query_opt("SELECT version FROM fleet_schema", &[])
            .await?
            .map(|r| r.get(0));
        let found = found.unwrap_or(0) as usize;
        if found > MIGRATIONS.len() {
            return Err(PgError::Failed(format!(
                "the fleet database was set up by a newer autorender-sync (schema {found}; this one knows up to {}); \
                 run the same version on every node",
                MIGRATIONS.len()
            )));
        }
        for step in &MIGRATIONS[found..] {
            tx.batch_execute(step).await?;
        }
        let version = MIGRATIONS.len() as i32;
        if found == 0 {
            tx.execute("INSERT INTO fleet_schema (version) VALUES ($1)", &[&version])
                .await?;
        } else {
            tx.execute("UPDATE fleet_schema SET version = $1", &[&version])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Registers the candidates (one row per version, whichever node saw
    /// it first) and claims those nobody else holds, up to `limit`, in the
    /// order given. Rows another node is claiming this instant are skipped
    /// (`SKIP LOCKED`) and come back as busy for a moment.
    pub async fn claim(&self, cands: &[Candidate], limit: usize) -> Result<Vec<Claimed>, PgError> {
        let shares: Vec<&str> = cands.iter().map(|c| c.share.as_str()).collect();
        let rels: Vec<&str> = cands.iter().map(|c| c.rel.as_str()).collect();
        let sizes: Vec<i64> = cands.iter().map(|c| c.fp.size as i64).collect();
        let mtimes: Vec<i64> = cands.iter().map(|c| c.fp.mtime_ns as i64).collect();
        let mut c = self.client().await?;
        c.execute(
            "INSERT INTO fleet_files (share, rel, size, mtime_ns)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
             ON CONFLICT (share, rel, size, mtime_ns) DO NOTHING",
            &[&shares, &rels, &sizes, &mtimes],
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
                            sha256: r.get::<_, Option<String>>(17).unwrap_or_default(),
                            remote_folder: r.get::<_, Option<String>>(13).unwrap_or_default(),
                            remote_name: r.get::<_, Option<String>>(14).unwrap_or_default(),
                            file_no: r.get::<_, Option<String>>(15).unwrap_or_default(),
                            url: r.get(16),
                            adopted: None,
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
    pub async fn completing(&self, pg_id: i64, token: i64, margin: Duration) -> Result<bool, PgError> {
        self.fenced(
            "UPDATE fleet_files SET phase = 'completing', updated_at = now()",
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
    /// those it no longer holds (another node took them over). Also this
    /// node's heartbeat.
    pub async fn renew(
        &self,
        claims: &[(i64, i64)],
        pid: u32,
        started_at_ms: i64,
    ) -> Result<Vec<i64>, PgError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO fleet_nodes (node, instance, pid, version, lease_ms, started_at, heartbeat_at, stopped)
             VALUES ($1, $2, $3, $4, $5, to_timestamp($6::float8 / 1000.0), now(), false)
             ON CONFLICT (node) DO UPDATE SET instance = $2, pid = $3, version = $4, lease_ms = $5,
                    started_at = to_timestamp($6::float8 / 1000.0), heartbeat_at = now(), stopped = false",
            &[
                &&*self.node,
                &&*self.instance,
                &(pid as i32),
                &env!("CARGO_PKG_VERSION"),
                &self.lease_ms(),
                &(started_at_ms as f64),
            ],
        )
        .await?;
        if claims.is_empty() {
            return Ok(Vec::new());
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
        Ok(ids.into_iter().filter(|id| !kept.contains(id)).collect())
    }

    /// `verify --requeue`: versions the workspace lost are due again for
    /// every node (their result is forgotten). Returns how many.
    pub async fn requeue(&self, cands: &[Candidate]) -> Result<u64, PgError> {
        let shares: Vec<&str> = cands.iter().map(|c| c.share.as_str()).collect();
        let rels: Vec<&str> = cands.iter().map(|c| c.rel.as_str()).collect();
        let sizes: Vec<i64> = cands.iter().map(|c| c.fp.size as i64).collect();
        let mtimes: Vec<i64> = cands.iter().map(|c| c.fp.mtime_ns as i64).collect();
        let c = self.client().await?;
        Ok(c.execute(
            "UPDATE fleet_files f SET state = 'pending', node = NULL, lease_until = NULL, file_no = NULL,
                    url = NULL, done_sha256 = NULL, done_node = NULL, done_at = NULL, updated_at = now()
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS c(share, rel, size, mtime_ns)
             WHERE f.share = c.share AND f.rel = c.rel AND f.size = c.size AND f.mtime_ns = c.mtime_ns
               AND f.state = 'done'",
            &[&shares, &rels, &sizes, &mtimes],
        )
        .await?)
    }

    /// A clean stop: every claim given back at once (no one waits for the
    /// leases to lapse), and the node marked stopped.
    pub async fn stop(&self) -> Result<(), PgError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE fleet_files SET state = 'pending', lease_until = NULL, updated_at = now()
             WHERE state = 'claimed' AND instance = $1",
            &[&&*self.instance],
        )
        .await?;
        c.execute(
            "UPDATE fleet_nodes SET stopped = true, heartbeat_at = now() WHERE node = $1 AND instance = $2",
            &[&&*self.node, &&*self.instance],
        )
        .await?;
        Ok(())
    }

    /// `fleet status`: nodes, their leases and recent throughput, and the
    /// files per state across the fleet.
    pub async fn status(&self) -> Result<Value, PgError> {
        let c = self.client().await?;
        let nodes = c
            .query(
                "SELECT n.node, n.pid, n.version, n.lease_ms,
                        (extract(epoch FROM n.heartbeat_at) * 1000)::bigint,
                        (extract(epoch FROM n.started_at) * 1000)::bigint,
                        (extract(epoch FROM (now() - n.heartbeat_at)) * 1000)::bigint,
                        n.stopped,
                        (SELECT count(*) FROM fleet_files f WHERE f.state = 'claimed' AND f.node = n.node
                           AND f.lease_until > now()),
                        (SELECT count(*) FROM fleet_files f WHERE f.state = 'done' AND f.done_node = n.node
                           AND f.done_at > now() - interval '10 minutes'),
                        (SELECT COALESCE(sum(size), 0)::bigint FROM fleet_files f WHERE f.state = 'done'
                           AND f.done_node = n.node AND f.done_at > now() - interval '10 minutes'),
                        (SELECT count(*) FROM fleet_files f WHERE f.state = 'done' AND f.done_node = n.node),
                        (SELECT COALESCE(sum(size), 0)::bigint FROM fleet_files f WHERE f.state = 'done'
                           AND f.done_node = n.node),
                        (SELECT COALESCE(array_agg(f.share || '/' || f.rel ORDER BY f.rel), '{}')
                           FROM fleet_files f WHERE f.state = 'claimed' AND f.node = n.node
                           AND f.lease_until > now())
                 FROM fleet_nodes n ORDER BY n.node",
                &[],
            )
            .await?;
        let nodes: Vec<Value> = nodes
            .iter()
            .map(|r| {
                let lease_ms: i64 = r.get(3);
                let ago: i64 = r.get(6);
                let stopped: bool = r.get(7);
                let state = if stopped {
                    "stopped"
                } else if ago > lease_ms {
                    "lost"
                } else {
                    "running"
                };
                json!({
                    "node": r.get::<_, String>(0),
                    "pid": r.get::<_, Option<i32>>(1),
                    "version": r.get::<_, Option<String>>(2),
                    "state": state,
                    "heartbeat_at_ms": r.get::<_, i64>(4),
                    "heartbeat_age_ms": ago,
                    "started_at_ms": r.get::<_, i64>(5),
                    "leases": r.get::<_, i64>(8),
                    "leased_files": r.get::<_, Vec<String>>(13),
                    "recent": {"minutes": 10, "files": r.get::<_, i64>(9), "bytes": r.get::<_, i64>(10)},
                    "total": {"files": r.get::<_, i64>(11), "bytes": r.get::<_, i64>(12)},
                })
            })
            .collect();
        let states = c
            .query(
                "SELECT CASE WHEN state = 'claimed' AND (lease_until IS NULL OR lease_until <= now())
                             THEN 'lapsed' ELSE state END AS s, count(*), COALESCE(sum(size), 0)::bigint
                 FROM fleet_files GROUP BY s ORDER BY s",
                &[],
            )
            .await?;
        let mut files = serde_json::Map::new();
        for r in &states {
            files.insert(
                r.get::<_, String>(0),
                json!({"files": r.get::<_, i64>(1), "bytes": r.get::<_, i64>(2)}),
            );
        }
        Ok(json!({"nodes": nodes, "files": files}))
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
