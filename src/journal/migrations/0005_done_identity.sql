-- v5: the identity of the uploaded version (device, inode, ctime) beside
-- its size and mtime. A copied mtime (`cp -p`, `rsync -t`, `touch -r`, or a
-- temp file renamed over) fakes size and mtime but not these; NULL in older
-- rows, which are hashed once before being taken as unchanged.
ALTER TABLE files ADD COLUMN done_dev INTEGER;
ALTER TABLE files ADD COLUMN done_ino INTEGER;
ALTER TABLE files ADD COLUMN done_ctime_ns INTEGER;
