-- The rows parked on one child (wait_kind 'child', wait_key = the child's id): a child's end locks
-- and wakes them all, its parent and any fork sharing it (kodo/db/queries/workflows.sql
-- lock_child_waiters, wake_child_waiters). Partial: only parked rows are in it. Idempotent.
CREATE INDEX IF NOT EXISTS workflow_status_child_waits
    ON dbos.workflow_status (wait_key) WHERE wait_kind = 'child';
