//! The fleet's PostgreSQL side: the connection pool, the schema steps
//! (applied once, under an advisory lock, by whichever node gets it first),
//! and every statement the fleet runs. No other file holds fleet SQL.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

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
    /// A deadlock or serialization failure between nodes: tried again soon.
    Retry(String),
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgError::Unreachable(m) | PgError::Failed(m) | PgError::Retry(m) => f.write_str(m),
        }
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        let message = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            // With its causes: "error performing TLS handshake: invalid peer
            // certificate: UnknownIssuer" says what to fix; the first alone does not.
            None => {
                let mut m = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    let text = c.to_string();
                    if !m.contains(&text) {
                        m = format!("{m}: {text}");
                    }
                    cause = c.source();
                }
                m
            }
        };
        match e.as_db_error() {
            // Class 08: connection exceptions; 57P0x: the server is shutting
            // down or starting; 53: out of resources.
            Some(db) => {
                let code = db.code().code();
                if code.starts_with("40") || code == "55P03" {
                    PgError::Retry(message)
                } else if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") {
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

/// TLS for servers that ask for it: certificates checked against the
/// public roots, plus the CAs in `ca_file` (a studio's own CA).
fn tls(ca_file: Option<&std::path::Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let fix = "point `fleet.ca_file` at the PEM file of the CA that signed the server's certificate";
        let pem = crate::private::read_text(path)
            .map(String::into_bytes)
            .map_err(|e| format!("cannot read `fleet.ca_file` {}: {e}; {fix}", path.display()))?;
        let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!(
                    "`fleet.ca_file` {} is not PEM certificates ({e}); {fix}",
                    path.display()
                )
            })?;
        if certs.is_empty() {
            return Err(format!(
                "`fleet.ca_file` {} holds no certificate; {fix}",
                path.display()
            ));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("`fleet.ca_file` {}: {e}; {fix}", path.display()))?;
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl Pg {
    /// A pool for the `[fleet]` database (nothing is connected yet).
    pub fn for_settings(fleet: &crate::config::FleetSettings) -> Result<Pg, String> {
        let url = fleet.database.resolve()?;
        Pg::new(&url, &fleet.node, fleet.lease, fleet.ca_file.as_deref())
    }

    /// A pool for `url` (nothing is connected yet).
    pub fn new(
        url: &str,
        node: &str,
        lease: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Pg, String> {
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("`fleet.database` is not a PostgreSQL address: {e}"))?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(5));
        }
        cfg.application_name(format!("autorender-sync {node}"));
        let mgr = Manager::from_config(
            cfg,
            tls(ca_file)?,
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

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        Ok(self.pool.get().await?)
    }

    pub(super) fn lease_ms(&self) -> i64 {
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

    /// The key columns of `cands` as arrays, for `unnest`.
    pub(super) fn columns(cands: &[Candidate]) -> KeyColumns<'_> {
        (
            cands.iter().map(|c| c.share.as_str()).collect(),
            cands.iter().map(|c| c.rel.as_str()).collect(),
            cands.iter().map(|c| c.fp.size as i64).collect(),
            cands.iter().map(|c| c.fp.mtime_ns as i64).collect(),
        )
    }
}

/// (shares, rels, sizes, mtimes) of some candidates.
pub(super) type KeyColumns<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<i64>, Vec<i64>);
