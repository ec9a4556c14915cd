-- name: wake_due_timers
-- Timers that are due (durable sleep, receive timeouts): clear the wait and hand back the rows to
-- publish. Atomic, so each due timer is published by one reconciler even when many run.
UPDATE dbos.workflow_status SET wait_kind = NULL, wait_key = NULL, wake_at_epoch_ms = NULL,
    published_at_epoch_ms = %(now)s, updated_at = %(now)s
WHERE workflow_uuid IN (
    SELECT workflow_uuid FROM dbos.workflow_status
    WHERE wait_kind IS NOT NULL AND wake_at_epoch_ms <= %(now)s AND status = 'PENDING'
      AND application_version = %(app_version)s
    ORDER BY wake_at_epoch_ms LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING workflow_uuid, queue_name, name, queue_partition_key

-- name: next_wake_at
-- The earliest pending timer of this version, or rate window to reopen (the timer loop sleeps until then).
SELECT least(
    (SELECT min(wake_at_epoch_ms) FROM dbos.workflow_status
     WHERE wait_kind IS NOT NULL AND wake_at_epoch_ms IS NOT NULL AND status = 'PENDING'
       AND application_version = %(app_version)s),
    -- a rate window that reopens for waiting work (dbos.kodo_admit)
    (SELECT min(next_window_at_epoch_ms) FROM dbos.queue_limits)) AS wake_at

-- name: republish_stale
-- Runnable rows nobody has picked up (lost message, dead runner whose lease expired): publish again.
-- The wait doubles with each republish since the last claim (capped at 64 windows), so a row that
-- only sits in a long broker backlog gets a handful of duplicates, not one per window. A row
-- published before `broker_reset` (the broker was unreachable, restarted or flushed since: its
-- message may be gone) is due at once.
UPDATE dbos.workflow_status SET published_at_epoch_ms = %(now)s, publish_count = publish_count + 1
WHERE workflow_uuid IN (
    SELECT workflow_uuid FROM dbos.workflow_status
    WHERE status IN ('ENQUEUED', 'PENDING') AND application_version = %(app_version)s
      AND wait_kind IS NULL
      AND (executor_id IS NULL OR lease_until_epoch_ms < %(now)s)
      -- a row waiting for admission has no message to lose (admission rings it)
      AND (admitted_at_epoch_ms IS NOT NULL
           OR NOT EXISTS (SELECT 1 FROM dbos.queue_limits l WHERE l.queue_name = workflow_status.queue_name))
      AND (coalesce(published_at_epoch_ms, 0)
             < %(now)s - %(republish_after)s::bigint * (1::bigint << least(publish_count, 6))
           OR coalesce(published_at_epoch_ms, 0) < %(broker_reset)s::bigint)
    ORDER BY created_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
RETURNING workflow_uuid, queue_name, name, queue_partition_key

-- name: leases_on_host
-- Live leases held by executors on this host (their pid can be checked for liveness). A lease
-- already expired (0) is left to republish_stale, so its republish is throttled like any other.
SELECT workflow_uuid, executor_id, lease_epoch FROM dbos.workflow_status
WHERE executor_id LIKE %(host_prefix)s AND status IN ('PENDING', 'CANCELLED', 'ENQUEUED')
  AND lease_until_epoch_ms <> 0

-- name: expire_lease
-- The holder is dead: expire its lease now so the next delivery can take over.
UPDATE dbos.workflow_status SET lease_until_epoch_ms = 0, published_at_epoch_ms = %(now)s
WHERE workflow_uuid = %(workflow_uuid)s AND executor_id = %(executor_id)s AND lease_epoch = %(epoch)s
RETURNING workflow_uuid, queue_name, status

-- name: expired_workflows
-- Workflows of this version past their deadline (RunRequest.timeoutMS): the reconciler cancels them.
SELECT workflow_uuid FROM dbos.workflow_status
WHERE status IN ('ENQUEUED', 'PENDING') AND workflow_deadline_epoch_ms < %(now)s
  AND application_version = %(app_version)s
ORDER BY workflow_deadline_epoch_ms LIMIT %(limit)s

-- name: try_singleton
-- A fleet-wide lock held until the end of the current transaction (singleton reconciler passes).
SELECT pg_try_advisory_xact_lock(%(key)s) AS got

-- name: listen_timers
-- The timer loops' channel: parking a timed wait notifies it (notify_timer).
LISTEN kodo_timer

-- name: due_windows
-- Limited queues whose rate window reopens by now for waiting work (the timer loop admits them).
SELECT queue_name FROM dbos.queue_limits WHERE next_window_at_epoch_ms <= %(now)s
