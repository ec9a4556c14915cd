-- name: insert_workflow
-- Create a workflow row; a duplicate id does nothing (the caller then reads the existing row).
INSERT INTO dbos.workflow_status (
    workflow_uuid, status, name, queue_name, queue_partition_key, priority, deduplication_id,
    application_version, inputs, parent_workflow_id, forked_from, max_recovery_attempts,
    workflow_timeout_ms, published_at_epoch_ms, created_at, updated_at)
VALUES (
    %(workflow_uuid)s, 'ENQUEUED', %(name)s, %(queue_name)s, %(partition_key)s, %(priority)s,
    %(deduplication_id)s, %(app_version)s, %(inputs)s, %(parent)s, %(forked_from)s,
    %(max_recovery_attempts)s, %(timeout_ms)s, %(now)s, %(now)s, %(now)s)
ON CONFLICT (workflow_uuid) DO NOTHING
RETURNING workflow_uuid, status, name

-- name: get_workflow
-- One workflow's row (read-only).
SELECT workflow_uuid, status, name, queue_name, queue_partition_key, priority, application_version,
       inputs, output, error, executor_id, lease_epoch, lease_until_epoch_ms, wait_reason, wait_kind,
       wait_key, wake_at_epoch_ms, parent_workflow_id, forked_from, recovery_attempts, max_recovery_attempts,
       noop_deliveries, started_at_epoch_ms, created_at, updated_at
FROM dbos.workflow_status WHERE workflow_uuid = %(workflow_uuid)s

-- name: claim_workflow
-- Take the fenced lease (bump lease_epoch) and load the recorded outputs in one round trip, with
-- whether any failed step attempt is recorded (a retrying step reads them only then).
-- A takeover of an expired lease counts a recovery attempt; past the maximum the row becomes
-- MAX_RECOVERY_ATTEMPTS_EXCEEDED instead of being claimed.
-- Reading outputs in the same statement is safe: every write to operation_outputs also updates this
-- row (renewing the lease or setting wait_reason), so a concurrent writer makes this claim fail.
-- A row of a limited queue (one with dbos.queue_limits) is claimed only once admitted, and only if
-- this worker node is under its per-worker caps (kodo_worker_gate, migration 0010; at its cap the
-- row gives its slot back to be admitted again when one frees).
WITH gate AS MATERIALIZED (
    SELECT dbos.kodo_worker_gate(%(workflow_uuid)s, %(node)s, %(now)s) AS ok
), claimed AS (
    UPDATE dbos.workflow_status SET
        status = CASE WHEN executor_id IS NOT NULL AND recovery_attempts + 1 > max_recovery_attempts
                      THEN 'MAX_RECOVERY_ATTEMPTS_EXCEEDED' ELSE 'PENDING' END,
        executor_id = CASE WHEN executor_id IS NOT NULL AND recovery_attempts + 1 > max_recovery_attempts
                           THEN NULL ELSE %(executor_id)s END,
        lease_until_epoch_ms = CASE WHEN executor_id IS NOT NULL
                                         AND recovery_attempts + 1 > max_recovery_attempts
                                    THEN NULL ELSE %(lease_until)s END,
        recovery_attempts = recovery_attempts + CASE WHEN executor_id IS NOT NULL THEN 1 ELSE 0 END,
        deduplication_id = CASE WHEN executor_id IS NOT NULL AND recovery_attempts + 1 > max_recovery_attempts
                                THEN NULL ELSE deduplication_id END,
        admitted_at_epoch_ms = CASE WHEN executor_id IS NOT NULL AND recovery_attempts + 1 > max_recovery_attempts
                                    THEN NULL ELSE admitted_at_epoch_ms END,
        executor_node = %(node)s,
        lease_epoch = lease_epoch + 1,
        publish_count = 0,
        started_at_epoch_ms = COALESCE(started_at_epoch_ms, %(now)s),
        -- A timeout counts from the first claim; the reconciler cancels the workflow past it.
        workflow_deadline_epoch_ms = COALESCE(workflow_deadline_epoch_ms, %(now)s + workflow_timeout_ms),
        updated_at = %(now)s
    WHERE workflow_uuid = %(workflow_uuid)s
      AND status IN ('ENQUEUED', 'PENDING')
      AND application_version = %(app_version)s
      AND wait_kind IS NULL
      AND (executor_id IS NULL OR lease_until_epoch_ms < %(now)s)
      AND (admitted_at_epoch_ms IS NOT NULL
           OR NOT EXISTS (SELECT 1 FROM dbos.queue_limits l WHERE l.queue_name = workflow_status.queue_name))
      AND (SELECT ok FROM gate)
    RETURNING workflow_uuid, status, lease_epoch, name, queue_name, inputs, parent_workflow_id, recovery_attempts
)
SELECT c.*,
       (SELECT coalesce(json_agg(json_build_object(
                   'function_id', o.function_id, 'function_name', o.function_name,
                   'output', o.output, 'error', o.error, 'child_workflow_id', o.child_workflow_id)),
                '[]'::json)
        FROM dbos.operation_outputs o WHERE o.workflow_uuid = c.workflow_uuid) AS recorded,
       EXISTS (SELECT 1 FROM dbos.step_attempts a WHERE a.workflow_uuid = c.workflow_uuid) AS retried
FROM claimed c

-- name: count_noop_delivery
-- A delivery that could not claim: count it on the row and say why (status, lease holder, wait).
-- A worker of another version consumed the doorbell: mark it unpublished, so a reconciler of the
-- row's own version rings again on its next pass (none running: nothing rings, no hot loop).
UPDATE dbos.workflow_status SET noop_deliveries = noop_deliveries + 1,
    published_at_epoch_ms = CASE WHEN application_version <> %(app_version)s THEN 0
                                 ELSE published_at_epoch_ms END
WHERE workflow_uuid = %(workflow_uuid)s
RETURNING status, executor_id, lease_epoch, lease_until_epoch_ms, wait_reason, application_version

-- name: check_boundary
-- The step-boundary check: current status and lease epoch (cancel and zombie detection).
SELECT status, lease_epoch, executor_id FROM dbos.workflow_status WHERE workflow_uuid = %(workflow_uuid)s

-- name: lock_own
-- Lock our own row, fenced, before checking a wait condition (pairs with the wakers' lock_workflow).
SELECT status FROM dbos.workflow_status
WHERE workflow_uuid = %(workflow_uuid)s AND lease_epoch = %(epoch)s AND executor_id = %(executor_id)s
FOR NO KEY UPDATE

-- name: lock_workflow
-- A waker locks the waiter's row before writing the condition it waits for (no lost wake-ups).
SELECT status, queue_name, application_version, parent_workflow_id FROM dbos.workflow_status
WHERE workflow_uuid = %(workflow_uuid)s
FOR NO KEY UPDATE

-- name: park_workflow
-- Release the lease and wait; a timer (wake_at), message or child completion republishes the run.
UPDATE dbos.workflow_status SET wait_kind = %(wait_kind)s, wait_key = %(wait_key)s, wake_at_epoch_ms = %(wake_at)s,
    executor_id = NULL, lease_until_epoch_ms = NULL, admitted_at_epoch_ms = NULL, updated_at = %(now)s
WHERE workflow_uuid = %(workflow_uuid)s AND lease_epoch = %(epoch)s AND executor_id = %(executor_id)s
  AND status = 'PENDING'
RETURNING workflow_uuid

-- name: notify_timer
-- Tell the timer loops a new wake-up time exists (delivered at commit).
SELECT pg_notify('kodo_timer', %(wake_at)s::text)

-- name: complete_workflow
-- Terminal write, fenced. Cancel wins: a CANCELLED row is not overwritten. A deduplication id only
-- holds while the workflow is in flight, so a finished one frees it.
UPDATE dbos.workflow_status SET status = %(status)s, output = %(output)s, error = %(error)s,
    deduplication_id = NULL, executor_id = NULL, lease_until_epoch_ms = NULL, wait_kind = NULL, wait_key = NULL,
    wake_at_epoch_ms = NULL, admitted_at_epoch_ms = NULL,
    updated_at = %(now)s
WHERE workflow_uuid = %(workflow_uuid)s AND lease_epoch = %(epoch)s AND executor_id = %(executor_id)s
  AND status = 'PENDING'
RETURNING parent_workflow_id,
    -- Rows of its queue wait for admission (then its freed slot, in a limited queue, is theirs);
    -- an index probe (workflow_status_waiting, 0010), so no admission statement follows otherwise.
    EXISTS (SELECT 1 FROM dbos.workflow_status w
            WHERE w.queue_name = workflow_status.queue_name
              AND w.application_version = workflow_status.application_version
              AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
              AND w.status IN ('ENQUEUED', 'PENDING')) AS waiting

-- name: lock_child_waiters
-- Before a child's terminal write: lock the rows its end may wake, in id order (rows are locked
-- after the sort): its parent's, and every row parked on this child (a fork shares its original's
-- children). Uses workflow_status_child_waits (0007).
SELECT workflow_uuid FROM dbos.workflow_status
WHERE workflow_uuid = %(parent)s OR (wait_kind = 'child' AND wait_key = %(child)s)
ORDER BY workflow_uuid COLLATE "C"
FOR NO KEY UPDATE

-- name: wake_child_waiters
-- After a child finished: wake every workflow parked on this child (its parent, or a fork sharing
-- it), and the parent if it waits for all children and none is left running. The caller locked
-- them (lock_child_waiters) from before the child's write.
UPDATE dbos.workflow_status w SET wait_kind = NULL, wait_key = NULL, wake_at_epoch_ms = NULL,
    published_at_epoch_ms = %(now)s, updated_at = %(now)s
WHERE w.status = 'PENDING'
  AND ((w.wait_kind = 'child' AND w.wait_key = %(child)s)
       OR (w.workflow_uuid = %(parent)s AND w.wait_kind = 'children' AND NOT EXISTS (
             SELECT 1 FROM dbos.workflow_status c
             WHERE c.parent_workflow_id = w.workflow_uuid AND c.status IN ('ENQUEUED', 'PENDING'))))
RETURNING w.workflow_uuid, w.queue_name, w.name, w.queue_partition_key

-- name: lock_child
-- A waiter that is not the child's parent (a fork) reads the child under a share lock: the child's
-- terminal write then commits either before this read or after the waiter parked.
SELECT workflow_uuid, status, output, error, parent_workflow_id FROM dbos.workflow_status
WHERE workflow_uuid = %(workflow_uuid)s
FOR SHARE

-- name: release_lease
-- Give up the lease without finishing (cancel observed at a boundary).
UPDATE dbos.workflow_status SET executor_id = NULL, lease_until_epoch_ms = NULL, updated_at = %(now)s
WHERE workflow_uuid = %(workflow_uuid)s AND lease_epoch = %(epoch)s AND executor_id = %(executor_id)s
RETURNING workflow_uuid

-- name: renew_leases
-- Heartbeat: extend every lease this executor holds (not one it gave up: lease_until 0).
UPDATE dbos.workflow_status SET lease_until_epoch_ms = %(lease_until)s
WHERE executor_id = %(executor_id)s AND lease_until_epoch_ms <> 0
RETURNING workflow_uuid, lease_epoch

-- name: child_states
-- The children of a workflow, for fan-in checks: those it started, and those its recorded
-- start_child / start_children operations name (a fork's copies name its original's children).
SELECT workflow_uuid, status, output, error, parent_workflow_id FROM dbos.workflow_status
WHERE parent_workflow_id = %(parent)s
   OR workflow_uuid IN (SELECT o.child_workflow_id FROM dbos.operation_outputs o
                        WHERE o.workflow_uuid = %(parent)s AND o.function_name = 'kodo.start_child')
   OR workflow_uuid IN (SELECT jsonb_array_elements_text(o.output::jsonb) FROM dbos.operation_outputs o
                        WHERE o.workflow_uuid = %(parent)s AND o.function_name = 'kodo.start_children')

-- name: cancel_workflow
-- Cancel is a status transition; the runner stops at its next step boundary. The lease stays with
-- the runner (if any) so a quick resume cannot start a second runner beside it.
UPDATE dbos.workflow_status SET status = 'CANCELLED', wait_kind = NULL, wait_key = NULL, wake_at_epoch_ms = NULL,
    deduplication_id = NULL, admitted_at_epoch_ms = NULL, updated_at = %(now)s
WHERE workflow_uuid = %(workflow_uuid)s AND status IN ('ENQUEUED', 'PENDING')
RETURNING workflow_uuid, queue_name

-- name: resume_workflow
-- Continue the same id from its checkpoints. A row whose old runner still holds the lease goes back to
-- PENDING (that runner simply carries on); otherwise it is ENQUEUED and republished.
UPDATE dbos.workflow_status SET
    status = CASE WHEN executor_id IS NULL THEN 'ENQUEUED' ELSE 'PENDING' END,
    recovery_attempts = 0, wait_kind = NULL, wait_key = NULL, wake_at_epoch_ms = NULL,
    -- a row whose runner still holds the lease keeps running: it takes its slot back at once
    admitted_at_epoch_ms = CASE WHEN executor_id IS NULL THEN NULL ELSE %(now)s END,
    published_at_epoch_ms = %(now)s, updated_at = %(now)s
WHERE workflow_uuid = %(workflow_uuid)s
  AND status IN ('CANCELLED', 'ENQUEUED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
RETURNING workflow_uuid, queue_name, name, queue_partition_key

-- name: max_function_id
-- Highest recorded function id of a workflow (fork bound).
SELECT coalesce(max(function_id), 0) AS max_id FROM dbos.operation_outputs
WHERE workflow_uuid = %(workflow_uuid)s

-- name: fork_copy_outputs
-- Copy the recorded outputs before step N into a forked workflow.
INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output, error,
    child_workflow_id, started_at_epoch_ms, completed_at_epoch_ms)
SELECT %(new_workflow_uuid)s, function_id, function_name, output, error, child_workflow_id,
       started_at_epoch_ms, completed_at_epoch_ms
FROM dbos.operation_outputs WHERE workflow_uuid = %(workflow_uuid)s AND function_id < %(start_step)s

-- name: list_steps
-- Recorded operations of a workflow, in order.
SELECT function_id, function_name, output, error, child_workflow_id, started_at_epoch_ms,
       completed_at_epoch_ms
FROM dbos.operation_outputs WHERE workflow_uuid = %(workflow_uuid)s ORDER BY function_id

-- name: queue_summary
-- Workflow counts per queue, version and status (admin /queues).
SELECT queue_name, application_version, status, count(*) AS workflows
FROM dbos.workflow_status GROUP BY 1, 2, 3 ORDER BY 1, 2, 3

-- name: mark_unpublished
-- A publish failed (broker down): the next reconciler pass rings this row again.
UPDATE dbos.workflow_status SET published_at_epoch_ms = 0, publish_count = 0
WHERE workflow_uuid = %(workflow_uuid)s AND status IN ('ENQUEUED', 'PENDING')

-- name: abandon_lease
-- A delivery failed on infrastructure (the database went away mid-run): end our lease now (fenced),
-- so the run's next delivery takes over at once (counting a recovery attempt, like a crash), and
-- hand back the row to ring.
UPDATE dbos.workflow_status SET lease_until_epoch_ms = 0, published_at_epoch_ms = %(now)s
WHERE workflow_uuid = %(workflow_uuid)s AND lease_epoch = %(epoch)s AND executor_id = %(executor_id)s
  AND status = 'PENDING'
RETURNING workflow_uuid, queue_name, name, queue_partition_key

-- name: admit
-- Admit what queue `queue`'s limits allow and return the rows to ring (dbos.kodo_admit, 0010).
SELECT * FROM dbos.kodo_admit(%(queue)s, %(app_version)s, %(now)s, %(hint)s::text[])

-- name: limited_queues
-- The queues with limits (their runnable rows wait for admission).
SELECT queue_name FROM dbos.queue_limits

-- name: insert_workflow_admitted
-- insert_workflow for a limited queue: the row is inserted admitted when dbos.kodo_admit_new (0010)
-- finds room and nothing else waiting (one statement, one version of the row); else it is inserted
-- waiting, for dbos.kodo_admit to decide.
INSERT INTO dbos.workflow_status (
    workflow_uuid, status, name, queue_name, queue_partition_key, priority, deduplication_id,
    application_version, inputs, parent_workflow_id, forked_from, max_recovery_attempts,
    workflow_timeout_ms, published_at_epoch_ms, created_at, updated_at, admitted_at_epoch_ms, rate_at_epoch_ms)
SELECT
    %(workflow_uuid)s, 'ENQUEUED', %(name)s, %(queue_name)s, %(partition_key)s, %(priority)s,
    %(deduplication_id)s, %(app_version)s, %(inputs)s, %(parent)s, %(forked_from)s,
    %(max_recovery_attempts)s, %(timeout_ms)s, %(now)s, %(now)s, %(now)s, a.at, a.at
FROM (SELECT CASE WHEN dbos.kodo_admit_new(%(queue_name)s, %(app_version)s, coalesce(%(partition_key)s, ''),
                                           %(now)s)
                  THEN %(now)s::bigint END AS at) a
ON CONFLICT (workflow_uuid) DO NOTHING
RETURNING workflow_uuid, status, name, admitted_at_epoch_ms IS NOT NULL AS admitted
