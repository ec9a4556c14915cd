-- name: delete_env_limits
-- The environment sets no limit for this queue: it is unlimited unless an operator set it.
DELETE FROM dbos.queue_limits WHERE queue_name = %(queue)s AND source = 'env'

-- name: get_queue_limits
-- One queue's limits row (FOR UPDATE: an operator's change reads, merges and writes it).
SELECT * FROM dbos.queue_limits WHERE queue_name = %(queue)s FOR UPDATE

-- name: put_queue_limits
-- A queue's limits: an operator's (source 'operator', kept until `kodo queue reset`), or the
-- environment's defaults (source 'env', written by a reconciler at start-up), which never replace
-- an operator's.
INSERT INTO dbos.queue_limits AS l (queue_name, concurrency, worker_concurrency, rate_limit, rate_period_ms,
    partition_concurrency, partition_worker_concurrency, partition_rate_limit, partition_rate_period_ms,
    priority_enabled, source, updated_at)
VALUES (%(queue)s, %(concurrency)s, %(worker_concurrency)s, %(rate_limit)s, %(rate_period_ms)s,
    %(partition_concurrency)s, %(partition_worker_concurrency)s, %(partition_rate_limit)s,
    %(partition_rate_period_ms)s, %(priority_enabled)s, %(source)s, %(now)s)
ON CONFLICT (queue_name) DO UPDATE SET concurrency = excluded.concurrency,
    worker_concurrency = excluded.worker_concurrency, rate_limit = excluded.rate_limit,
    rate_period_ms = excluded.rate_period_ms, partition_concurrency = excluded.partition_concurrency,
    partition_worker_concurrency = excluded.partition_worker_concurrency,
    partition_rate_limit = excluded.partition_rate_limit,
    partition_rate_period_ms = excluded.partition_rate_period_ms,
    priority_enabled = excluded.priority_enabled, source = excluded.source, updated_at = excluded.updated_at
WHERE excluded.source = 'operator' OR l.source = 'env'

-- name: take_running_slots
-- A queue that just became limited: the workflows it runs now hold their slots (so the new caps
-- count them).
UPDATE dbos.workflow_status SET admitted_at_epoch_ms = %(now)s
WHERE queue_name = %(queue)s AND admitted_at_epoch_ms IS NULL AND executor_id IS NOT NULL
  AND status = 'PENDING'

-- name: get_partition_limits
SELECT * FROM dbos.queue_partition_limits
WHERE queue_name = %(queue)s AND partition_key = %(partition)s FOR UPDATE

-- name: put_partition_limits
-- An operator's override for one partition (its own caps, rate and round-robin weight).
INSERT INTO dbos.queue_partition_limits AS o (queue_name, partition_key, concurrency, worker_concurrency,
    rate_limit, rate_period_ms, weight, updated_at)
VALUES (%(queue)s, %(partition)s, %(concurrency)s, %(worker_concurrency)s, %(rate_limit)s,
    %(rate_period_ms)s, %(weight)s, %(now)s)
ON CONFLICT (queue_name, partition_key) DO UPDATE SET concurrency = excluded.concurrency,
    worker_concurrency = excluded.worker_concurrency, rate_limit = excluded.rate_limit,
    rate_period_ms = excluded.rate_period_ms, weight = excluded.weight, updated_at = excluded.updated_at

-- name: delete_queue_overrides
-- `kodo queue reset`: drop an operator's limits and partition overrides of a queue.
WITH p AS (DELETE FROM dbos.queue_partition_limits WHERE queue_name = %(queue)s)
DELETE FROM dbos.queue_limits WHERE queue_name = %(queue)s

-- name: delete_partition_limits
DELETE FROM dbos.queue_partition_limits WHERE queue_name = %(queue)s AND partition_key = %(partition)s

-- name: show_queue_limits
-- Every limited queue's limits, with what uses them now: slots held, waiting rows, admissions in
-- the queue's rate window.
SELECT l.*,
       (SELECT count(*) FROM dbos.workflow_status w
        WHERE w.queue_name = l.queue_name AND w.admitted_at_epoch_ms IS NOT NULL) AS running,
       (SELECT count(*) FROM dbos.workflow_status w
        WHERE w.queue_name = l.queue_name AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL
          AND w.wait_kind IS NULL AND w.status IN ('ENQUEUED', 'PENDING')) AS waiting,
       dbos.kodo_rate_used(l.queue_name, NULL, coalesce(l.rate_period_ms, l.partition_rate_period_ms, 60000),
                           %(now)s) AS admitted_in_window
FROM dbos.queue_limits l
ORDER BY l.queue_name

-- name: show_partition_limits
-- A queue's partition overrides, and every partition with work, with its use.
WITH parts AS (
    SELECT DISTINCT coalesce(queue_partition_key, '') AS partition_key FROM dbos.workflow_status
    WHERE queue_name = %(queue)s AND status IN ('ENQUEUED', 'PENDING')
    UNION
    SELECT partition_key FROM dbos.queue_partition_limits WHERE queue_name = %(queue)s
)
SELECT p.partition_key, o.concurrency, o.worker_concurrency, o.rate_limit, o.rate_period_ms,
       coalesce(o.weight, 1) AS weight,
       (SELECT count(*) FROM dbos.workflow_status w
        WHERE w.queue_name = %(queue)s AND coalesce(w.queue_partition_key, '') = p.partition_key
          AND w.admitted_at_epoch_ms IS NOT NULL) AS running,
       (SELECT count(*) FROM dbos.workflow_status w
        WHERE w.queue_name = %(queue)s AND coalesce(w.queue_partition_key, '') = p.partition_key
          AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
          AND w.status IN ('ENQUEUED', 'PENDING')) AS waiting
FROM parts p
LEFT JOIN dbos.queue_partition_limits o ON o.queue_name = %(queue)s AND o.partition_key = p.partition_key
ORDER BY p.partition_key
