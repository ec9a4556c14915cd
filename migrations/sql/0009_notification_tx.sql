-- The run stream (GET /api/runs/<wid>/stream) reads dbos.notifications in commit-safe order: each row
-- carries the id of the transaction that wrote it, and a reader takes only rows whose transaction
-- is older than every transaction still running (pg_snapshot_xmin), ordered by (tx, seq). A row
-- can then never appear behind a position a reader has passed, so a resumed stream (Last-Event-ID)
-- misses nothing and repeats nothing. Existing rows get this migration's transaction id. Idempotent.
ALTER TABLE dbos.notifications ADD COLUMN IF NOT EXISTS tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS notifications_destination_tx ON dbos.notifications (destination_uuid, tx, seq);
