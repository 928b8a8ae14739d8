//! What commands read or change without joining the fleet: `fleet status`
//! (nodes, leases, throughput, files per state), `verify --requeue`, and a
//! clean stop's hand-back of every claim.

use serde_json::{Value, json};

use super::pg::{Candidate, Pg, PgError};

impl Pg {
    /// `verify --requeue`: versions the workspace lost are due again for
    /// every node (their result is forgotten). Returns how many.
    pub async fn requeue(&self, cands: &[Candidate]) -> Result<u64, PgError> {
        let (shares, rels, sizes, mtimes) = Pg::columns(cands);
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
