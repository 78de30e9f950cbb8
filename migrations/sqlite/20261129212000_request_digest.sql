-- The digest of a submission's content (header and samples), compared when an idempotency
-- key is reused: the same key with different content is refused. NULL for older rows.
ALTER TABLE tasks ADD COLUMN request_digest TEXT;
