-- Fencing token of the queue: bumped at every claim. A worker's writes carry the epoch it
-- claimed with and are refused once the job runs under another epoch (or not at all).
ALTER TABLE jobs ADD COLUMN lease_epoch BIGINT NOT NULL DEFAULT 0;
