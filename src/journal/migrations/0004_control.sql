-- v4: what the control plane and the studio policies keep across restarts. `agent_state` holds
-- single values (a pause set with `pause`, and until when); `outbox` holds
-- notifications not yet delivered, each retried with backoff until its
-- receiver takes it.
CREATE TABLE agent_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    target      INTEGER NOT NULL,
    event       TEXT NOT NULL,
    body        TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    last_error  TEXT
);
CREATE INDEX outbox_due ON outbox (next_at, id);
-- When each root was first watched with `existing = "skip"`: files whose
-- ctime is older were there before, and are recorded as skipped.
CREATE TABLE roots (
    root              TEXT PRIMARY KEY,
    first_watched_at  INTEGER NOT NULL
);
-- Upload sets: a file's set (its folder at `set_depth` below the root) and
-- its place in the set's order (0 files, 1 `upload_last`, 2 the trigger);
-- each set's round, state (waiting, uploading, manifest, complete), the
-- phase being sent, why it waits, and whether `stuck` was reported.
ALTER TABLE files ADD COLUMN set_rel TEXT;
ALTER TABLE files ADD COLUMN phase INTEGER NOT NULL DEFAULT 0;
CREATE INDEX files_set ON files (root, set_rel) WHERE set_rel IS NOT NULL;
CREATE TABLE sets (
    root            TEXT NOT NULL,
    set_rel         TEXT NOT NULL,
    round           INTEGER NOT NULL DEFAULT 1,
    state           TEXT NOT NULL,
    phase           INTEGER NOT NULL DEFAULT 0,
    first_seen_at   INTEGER NOT NULL,
    last_change_at  INTEGER NOT NULL,
    completed_at    INTEGER,
    reason          TEXT,
    stuck           INTEGER NOT NULL DEFAULT 0,
    manifest_file_no TEXT,
    PRIMARY KEY (root, set_rel)
);
-- A held file's content hash, taken while its set waits, with the identity
-- (inode, ctime) it was taken of: the upload uses it if the file is still
-- that very version, instead of reading it once more.
ALTER TABLE files ADD COLUMN pre_sha256 TEXT;
ALTER TABLE files ADD COLUMN pre_dev INTEGER;
ALTER TABLE files ADD COLUMN pre_ino INTEGER;
ALTER TABLE files ADD COLUMN pre_ctime_ns INTEGER;
