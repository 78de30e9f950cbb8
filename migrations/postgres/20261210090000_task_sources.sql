-- The manifest of a task submitted by reference (issue #23 §2): a JSON array of the shards
-- read at submission, [{"url", "etag", "sha256", "samples", "bytes"}], in order. NULL for a
-- streamed upload. The samples themselves are copied into the task's bundle, so training
-- and every resume read that copy, never the URLs again.
ALTER TABLE tasks ADD COLUMN sources_json TEXT;
