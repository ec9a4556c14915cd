-- The admin server's /metrics (kodo.telemetry.PgCollector), read at scrape time.

-- name: metrics_workflows
-- Workflows per queue, status and version, with the delivery counters summed over them: recovery
-- attempts, deliveries absorbed as no-ops (noop_deliveries) and republishes not claimed since.
SELECT queue_name, status, application_version, count(*) AS n,
       sum(recovery_attempts) AS recovery_attempts, sum(noop_deliveries) AS noop_deliveries,
       sum(publish_count) AS publish_count
FROM dbos.workflow_status
GROUP BY queue_name, status, application_version

-- name: metrics_runs
-- Intent runs per status.
SELECT status, count(*) AS n FROM app.runs GROUP BY status

-- name: metrics_queue_depth
-- Workflows waiting for a worker, per queue and partition: not started (ENQUEUED), or runnable and
-- unclaimed (PENDING, not parked, no live lease: a wake-up or a recovery waiting for its delivery).
SELECT queue_name, coalesce(queue_partition_key, '') AS partition_key, count(*) AS n
FROM dbos.workflow_status
WHERE status = 'ENQUEUED'
   OR (status = 'PENDING' AND wait_kind IS NULL
       AND (executor_id IS NULL OR lease_until_epoch_ms < %(now)s))
GROUP BY queue_name, coalesce(queue_partition_key, '')
