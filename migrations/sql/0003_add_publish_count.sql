-- Republish backoff: how many times the reconciler re-published a row since its last claim.
-- A row that only waits in a long broker backlog then gets a few duplicates, not one per window.
ALTER TABLE dbos.workflow_status ADD COLUMN IF NOT EXISTS publish_count integer NOT NULL DEFAULT 0;
