-- v1: files and their queue state, multipart sessions, upload history, and
-- the running agent's heartbeat.
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    root TEXT NOT NULL,
    rel TEXT NOT NULL,
    state TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    done_size INTEGER,
    done_mtime_ns INTEGER,
    done_sha256 TEXT,
    file_no TEXT,
    url TEXT,
    remote_path TEXT,
    updated_at INTEGER NOT NULL,
    UNIQUE (root, rel)
);
CREATE INDEX IF NOT EXISTS files_queue ON files (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS sessions (
    file_id INTEGER PRIMARY KEY REFERENCES files (id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    uuid TEXT,
    part_size INTEGER NOT NULL,
    parts TEXT NOT NULL,
    expire_at INTEGER,
    parts_done TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    completing INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    root TEXT NOT NULL,
    rel TEXT NOT NULL,
    ok INTEGER NOT NULL,
    remote_folder TEXT,
    remote_name TEXT,
    file_no TEXT,
    url TEXT,
    size INTEGER,
    sha256 TEXT,
    error TEXT,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agent (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER,
    started_at INTEGER,
    heartbeat_at INTEGER,
    last_event_at INTEGER,
    snapshot TEXT
);
