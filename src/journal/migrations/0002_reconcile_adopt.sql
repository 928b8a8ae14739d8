-- v2: reconciliation and adoption. `kind` tells a multipart session from a
-- direct upload in flight; `began_at` is the service's time when it began;
-- `adopt` marks files with no earlier record.
ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'multipart';
ALTER TABLE sessions ADD COLUMN began_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN adopt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN remote_name TEXT;
ALTER TABLE history ADD COLUMN adopted TEXT;
