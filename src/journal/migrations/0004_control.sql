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
