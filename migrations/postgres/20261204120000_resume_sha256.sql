-- The sha256 of a job's recorded resume checkpoint (issue #23): a daemon on another host
-- fetches it from object storage and verifies it before use. NULL for resume points
-- recorded before this existed (the data dir's own file is then used as before).
ALTER TABLE jobs ADD COLUMN resume_sha256 TEXT;
