-- The run stream (GET /api/runs/:wid/stream, kodo/intent/stream.py): a run's notifications in
-- commit-safe order (migration 0009).

-- name: stream_task_keys
-- Where a run's sandbox output is written: the task key of each sandbox child of the given parents
-- (the run's workflow and its repairs; a child's id is its task key plus a repair's or a fork's
-- suffix, and its output goes to the task key).
SELECT DISTINCT left(workflow_uuid, 64) AS task_key
FROM dbos.workflow_status WHERE parent_workflow_id = ANY(%(parents)s)

-- name: stream_events
-- The next events after the cursor (tx, seq), written by transactions that ended before every one
-- still running began (pg_snapshot_xmin): no event can later appear behind the cursor.
SELECT tx::text AS tx, seq, destination_uuid, topic, message, created_at_epoch_ms
FROM dbos.notifications
WHERE destination_uuid = ANY(%(destinations)s)
  AND topic = ANY(%(topics)s)
  AND (tx, seq) > (%(tx)s::text::xid8, %(seq)s::bigint)
  AND tx < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY tx, seq
LIMIT %(limit)s

-- name: stream_run_status
-- The run's status (is it terminal?).
SELECT status FROM app.runs WHERE id = %(id)s

-- name: stream_last_status
-- The run's latest status event, wherever it is (served or not yet).
SELECT tx::text AS tx, seq, message FROM dbos.notifications
WHERE destination_uuid = %(workflow_id)s AND topic = 'status'
ORDER BY tx DESC, seq DESC
LIMIT 1
