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
