-- v9: deletes mirrored to the workspace (`mirror_deletes`). An uploaded
-- file found missing waits here through its grace period (`gone_at`, unix
-- ms); `sending_at` is set before its remote copy's DELETE is sent, so a
-- crash sends it again (a 404 then says it is already gone). The row goes
-- with its file's record.
CREATE TABLE deletes (
    file_id     INTEGER PRIMARY KEY REFERENCES files (id) ON DELETE CASCADE,
    gone_at     INTEGER NOT NULL,
    sending_at  INTEGER
);
-- What a history row records beyond an upload: 'deleted' (the remote copy
-- of a file deleted locally, counted by `max_delete`), 'deleted_released'
-- (the same, let go by `release --deletes`, not counted).
ALTER TABLE history ADD COLUMN event TEXT;
-- Local folders renamed as one remote folder rename (`mirror_renames`):
-- journaled 'sending' before the request, 'done' once answered, 'failed'
-- when the service refused it (its files are then uploaded anew). A crash
-- in between is settled by listing: the folder found under its new name.
CREATE TABLE folder_renames (
    id          INTEGER PRIMARY KEY,
    root        TEXT NOT NULL,
    old_rel     TEXT NOT NULL,
    new_rel     TEXT NOT NULL,
    old_remote  TEXT NOT NULL,
    new_remote  TEXT NOT NULL,
    folder_no   TEXT NOT NULL,
    state       TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX folder_renames_pair ON folder_renames (root, old_remote, new_remote);
