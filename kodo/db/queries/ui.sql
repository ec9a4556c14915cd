-- The operator UI's reads (kodo.intent.ui, served under /api/ui): read-only, never a write.

-- name: ui_recent_runs
-- The newest runs with their intent's goal (the run list), optionally of one status.
SELECT r.id, r.workflow_id, r.status, r.last_step, r.next_action, r.error, r.retry_count,
       r.queue_partition_key, r.created_at, r.updated_at, i.goal
FROM app.runs r
LEFT JOIN app.intents i ON i.id = r.intent_id
WHERE %(status)s::text IS NULL OR r.status = %(status)s::text
ORDER BY r.created_at DESC, r.id
LIMIT %(limit)s

-- name: ui_run_step_attempts
-- Every recorded attempt of every product step of a run (the timeline's step bars).
SELECT step_id, phase, attempt, started_at, finished_at, output ->> 'errCode' AS err_code
FROM app.run_steps
WHERE run_id = %(run_id)s
ORDER BY started_at ASC NULLS FIRST, step_id COLLATE "C", attempt

-- name: ui_run_tasks
-- The fan-out sandbox children of a run's executions (the run's workflow, its repairs, forks of
-- it): enqueued, first claimed and (when terminal) finished, in epoch ms, with the sandbox attempts
-- recorded for the task key (the child id is the 64-hex task key, plus a suffix on a re-execution).
WITH execs AS (
    SELECT %(workflow_id)s::text AS id
    UNION
    SELECT workflow_uuid FROM dbos.workflow_status
    WHERE forked_from = %(workflow_id)s::text
       OR workflow_uuid = 'repair-' || %(run_id)s::text
       OR workflow_uuid LIKE 'repair-' || %(run_id)s::text || '-%%'
)
SELECT w.workflow_uuid AS workflow_id, w.parent_workflow_id, w.status, w.queue_name,
       w.queue_partition_key, w.created_at AS enqueued_at, w.started_at_epoch_ms AS started_at,
       CASE WHEN w.status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
            THEN w.updated_at END AS finished_at,
       s.attempts, s.err_code
FROM dbos.workflow_status w
LEFT JOIN LATERAL (
    SELECT max(r.attempt) AS attempts, (array_agg(r.err_code ORDER BY r.attempt DESC))[1] AS err_code
    FROM app.sbx_runs r
    WHERE r.run_id = %(run_id)s AND r.task_key = left(w.workflow_uuid, 64)
) s ON true
WHERE w.parent_workflow_id IN (SELECT id FROM execs) AND w.queue_name = %(queue)s
ORDER BY w.created_at, w.workflow_uuid COLLATE "C"

-- name: ui_queue_depth
-- Workflows waiting (ENQUEUED) and running or parked (PENDING) per queue and partition key.
SELECT queue_name, queue_partition_key,
       count(*) FILTER (WHERE status = 'ENQUEUED') AS enqueued,
       count(*) FILTER (WHERE status = 'PENDING') AS pending,
       min(created_at) FILTER (WHERE status = 'ENQUEUED') AS oldest_enqueued_at
FROM dbos.workflow_status
WHERE status IN ('ENQUEUED', 'PENDING')
GROUP BY queue_name, queue_partition_key
ORDER BY queue_name COLLATE "C", queue_partition_key COLLATE "C" NULLS FIRST
