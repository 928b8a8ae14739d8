-- v1: the fleet's shared queue. One row per file version, keyed by
-- (share, rel, size, mtime_ns): every node that sees the version stable
-- lands on the same row. A node claims a row with a lease and a fencing
-- token (a new token per claim); the session and its parts, and the result,
-- are recorded here so any node can resume or skip the file.
CREATE TABLE fleet_files (
    id BIGSERIAL PRIMARY KEY,
    share TEXT NOT NULL,
    rel TEXT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    -- pending | claimed | done | failed
    state TEXT NOT NULL DEFAULT 'pending',
    node TEXT,
    instance TEXT,
    token BIGINT,
    lease_until TIMESTAMPTZ,
    claims INTEGER NOT NULL DEFAULT 0,
    -- the upload in flight: NULL | parts | completing
    phase TEXT,
    session JSONB,
    parts_done TEXT,
    sha256 TEXT,
    session_node TEXT,
    error TEXT,
    remote_folder TEXT,
    remote_name TEXT,
    file_no TEXT,
    url TEXT,
    done_sha256 TEXT,
    done_node TEXT,
    done_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (share, rel, size, mtime_ns)
);
CREATE INDEX fleet_files_claimed ON fleet_files (node) WHERE state = 'claimed';
CREATE INDEX fleet_files_done_at ON fleet_files (done_at) WHERE state = 'done';
CREATE SEQUENCE fleet_tokens;
CREATE TABLE fleet_nodes (
    node TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    pid INTEGER,
    version TEXT,
    lease_ms BIGINT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    stopped BOOLEAN NOT NULL DEFAULT false
);
