-- v6: objects the service stored for a file version that were not that
-- version's bytes (another size or hash: a proxy re-encoding the body, a
-- complete that assembled something else). Counted per file and content
-- hash, so a version that keeps being altered fails after a bound instead
-- of leaving copy after copy in the workspace.
CREATE TABLE stray_copies (
    file_id INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    n INTEGER NOT NULL,
    last_file_no TEXT,
    PRIMARY KEY (file_id, sha256)
);
