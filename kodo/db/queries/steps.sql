-- name: record_step
-- Checkpoint one operation, fenced by the lease epoch, in one statement: renew the lease, insert the
-- output only if the fence held, and return the current status (cancel seen at the next boundary).
WITH renew AS (
    UPDATE dbos.workflow_status SET lease_until_epoch_ms = %(lease_until)s, updated_at = %(now)s
    WHERE workflow_uuid = %(workflow_uuid)s AND lease_epoch = %(epoch)s AND executor_id = %(executor_id)s
    RETURNING status
), ins AS (
    INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output, error,
        child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms)
    SELECT %(workflow_uuid)s, %(function_id)s, %(function_name)s, %(output)s, %(error)s,
           %(child_workflow_id)s, %(started_at)s, %(now)s
    FROM renew
    ON CONFLICT (workflow_uuid, function_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT status FROM renew) AS status, (SELECT count(*) FROM ins) AS inserted

-- name: get_step
-- One recorded operation (used after a conflicting insert).
SELECT function_id, function_name, output, error, child_workflow_id FROM dbos.operation_outputs
WHERE workflow_uuid = %(workflow_uuid)s AND function_id = %(function_id)s

-- name: record_attempt
-- A failed attempt of a retrying step, fenced like a checkpoint (the same transaction parks the
-- workflow for the backoff). A repeated attempt number keeps the first row.
WITH fenced AS (
    SELECT 1 FROM dbos.workflow_status
    WHERE workflow_uuid = %(workflow_uuid)s AND lease_epoch = %(epoch)s AND executor_id = %(executor_id)s
)
INSERT INTO dbos.step_attempts (workflow_uuid, function_id, attempt, error, started_at_epoch_ms,
    completed_at_epoch_ms)
SELECT %(workflow_uuid)s, %(function_id)s, %(attempt)s, %(error)s, %(started_at)s, %(now)s FROM fenced
ON CONFLICT (workflow_uuid, function_id, attempt) DO NOTHING
RETURNING 1 AS ok

-- name: step_attempts
-- The failed attempts of a retrying step (read when the step runs, not at every claim: the claim
-- stays one cheap statement for the workflows that never retry).
SELECT function_id, attempt, started_at_epoch_ms AS started_at, completed_at_epoch_ms AS completed_at
FROM dbos.step_attempts WHERE workflow_uuid = %(workflow_uuid)s AND function_id = %(function_id)s
ORDER BY attempt
