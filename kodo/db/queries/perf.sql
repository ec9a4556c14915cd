-- The sandbox performance report (`ops/sbx-perf-report.sh`, `python -m ops.sbxperf`; the runbooks'
-- `scripts/sbx-perf-report.sh run_`, contract-internals §13). Read-only. Both queries take the runs
-- whose id starts with one of %(prefixes)s (`{''}`: every run); percentiles are percentile_cont,
-- rounded to 2 decimals, NULL over an empty set.

-- name: sbx_perf_attempts
-- The original's report: every sandbox attempt in app.sbx_runs (every attempt, every err_code) with
-- the provider's metrics (wallMs, cpuMs, memPeakMB), plus how many tasks, runs and failed attempts.
WITH attempts AS (
    SELECT s.run_id, s.task_key, s.err_code,
           (s.metrics ->> 'wallMs')::numeric AS wall_ms,
           (s.metrics ->> 'cpuMs')::numeric AS cpu_ms,
           (s.metrics ->> 'memPeakMB')::numeric AS mem_mb
    FROM app.sbx_runs s
    WHERE s.run_id ^@ ANY(%(prefixes)s::text[])
)
SELECT count(*) AS total_tasks,
       count(DISTINCT (run_id, task_key)) AS tasks,
       count(DISTINCT run_id) AS runs,
       count(*) FILTER (WHERE err_code <> 'NONE') AS failed_attempts,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY wall_ms)::numeric, 2) AS p50_wall_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY wall_ms)::numeric, 2) AS p95_wall_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY wall_ms)::numeric, 2) AS p99_wall_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY cpu_ms)::numeric, 2) AS p95_cpu_ms,
       round(max(mem_mb), 2) AS max_mem_mb
FROM attempts

-- name: sbx_perf_tasks
-- The engine's view of the same tasks: the sbxQ children (IntentWorkflow.taskWorkflow) of every
-- execution of those runs (the run's workflow, its repairs `repair-<run>[-n]`, and forks of either).
-- Per task, in ms: queue wait = first claim (started_at_epoch_ms) - enqueue (created_at); run = end
-- (updated_at of a terminal row) - first claim, so a task taken over after a crash counts its lost
-- time; total = end - enqueue. One row per metric; `n` counts the tasks that have the value.
WITH runs AS (
    SELECT id, workflow_id FROM app.runs WHERE id ^@ ANY(%(prefixes)s::text[])
),
execs AS (
    SELECT r.id AS run_id, r.workflow_id AS exec_id FROM runs r
    UNION
    SELECT r.id, w.workflow_uuid
    FROM dbos.workflow_status w
    JOIN runs r ON w.workflow_uuid = 'repair-' || r.id OR w.workflow_uuid ^@ ('repair-' || r.id || '-')
    WHERE w.name = 'IntentWorkflow.repair'
),
all_execs AS (
    SELECT run_id, exec_id FROM execs
    UNION
    SELECT e.run_id, w.workflow_uuid
    FROM execs e JOIN dbos.workflow_status w ON w.forked_from = e.exec_id
),
tasks AS (
    SELECT t.status, t.recovery_attempts,
           (t.started_at_epoch_ms - t.created_at)::double precision AS wait_ms,
           CASE WHEN t.status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
                THEN (t.updated_at - t.started_at_epoch_ms)::double precision END AS run_ms,
           CASE WHEN t.status IN ('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
                THEN (t.updated_at - t.created_at)::double precision END AS total_ms
    FROM all_execs e
    JOIN dbos.workflow_status t ON t.parent_workflow_id = e.exec_id AND t.queue_name = 'sbxQ'
),
metrics AS (
    SELECT m.ord, m.metric,
           CASE m.ord WHEN 1 THEN t.wait_ms WHEN 2 THEN t.run_ms ELSE t.total_ms END AS ms
    FROM (VALUES (1, 'queue wait (enqueued -> first claim)'),
                 (2, 'task run (first claim -> end)'),
                 (3, 'task total (enqueued -> end)')) AS m (ord, metric)
    LEFT JOIN tasks t ON true
)
SELECT metric,
       count(ms) AS n,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p50_ms,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p95_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS p99_ms,
       round(max(ms)::numeric, 2) AS max_ms,
       (SELECT count(*) FROM tasks) AS tasks,
       (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
        FROM (SELECT status, count(*) AS n FROM tasks GROUP BY status) s) AS statuses,
       (SELECT count(*) FROM tasks WHERE recovery_attempts > 0) AS recovered
FROM metrics
GROUP BY ord, metric
ORDER BY ord
