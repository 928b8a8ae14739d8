-- Indexes only, created by every version (an older binary of the same
-- schema version reads and writes around them). Their expressions must be
-- spelled exactly as the queries spell them (schema.rs: FOLDER_OF_REL,
-- QUEUED); a unit test checks this.
-- Each file's folder, for scans folder by folder.
CREATE INDEX IF NOT EXISTS files_folder ON files (root, rtrim(rel, replace(rel, '/', '')));
-- The queue in the order it is served (rowid = id breaks ties).
CREATE INDEX IF NOT EXISTS files_due ON files (next_attempt_at) WHERE state IN ('pending', 'uploading', 'reconciling');
-- A file's recent uploads (`min_interval`: does it keep changing?).
CREATE INDEX IF NOT EXISTS history_file ON history (root, rel, at);
-- Done versions by inode (a local rename: the same file under a new path).
CREATE INDEX IF NOT EXISTS files_done_ino ON files (done_ino) WHERE done_ino IS NOT NULL;
-- Done versions by remote file (a remote copy another record still uses is never deleted).
CREATE INDEX IF NOT EXISTS files_file_no ON files (file_no) WHERE file_no IS NOT NULL;
