-- v7: what `after_upload` did with the local file of an upload in the
-- history ("deleted", "moved to PATH", "left in place: it changed"), so
-- `history` can say where the local file went.
ALTER TABLE history ADD COLUMN after TEXT;
