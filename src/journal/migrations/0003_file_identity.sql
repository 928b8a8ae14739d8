-- v3: the identity of the file version a session sends (inode and ctime,
-- which a copied mtime cannot fake); NULL in older rows. And each file's
-- remote key (folder/NFC name), so two local names that are one remote name
-- are caught.
ALTER TABLE sessions ADD COLUMN dev INTEGER;
ALTER TABLE sessions ADD COLUMN ino INTEGER;
ALTER TABLE sessions ADD COLUMN ctime_ns INTEGER;
ALTER TABLE files ADD COLUMN remote_key TEXT;
CREATE INDEX files_remote_key ON files (remote_key);
