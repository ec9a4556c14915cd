-- The HTTP API's reads and writes of the intent product (contract-api §4-§8). Every write here runs
-- after the request passed its parsing, schema and policy checks (a rejected request writes nothing).

-- name: api_list_recipes
-- Every recipe (the queue policy's part of /openapi.json).
SELECT name, version, queue_name, max_concurrency, max_steps, max_sandbox_minutes
FROM app.recipes
ORDER BY name, version

-- name: api_find_recipe
-- A recipe by name: the exact version if one is given, else the latest (queue policy, read-only).
-- numeric, so an out-of-range version finds nothing instead of failing the cast.
SELECT name, version, queue_name, max_concurrency, max_steps, max_sandbox_minutes
FROM app.recipes
WHERE name = %(name)s AND (%(version)s::numeric IS NULL OR version = %(version)s::numeric)
ORDER BY version DESC
LIMIT 1

-- name: api_insert_intent
-- A new intent under a drawn id. A taken id inserts nothing (the caller draws the next one): an
-- existing intent is never overwritten.
INSERT INTO app.intents (id, goal, payload) VALUES (%(id)s, %(goal)s, %(payload)s)
ON CONFLICT (id) DO NOTHING
RETURNING id

-- name: api_find_intent
-- One intent by id.
SELECT id, goal, payload, created_at FROM app.intents WHERE id = %(id)s

-- name: api_insert_run
-- The run of an intent (workflow id = intent id), status queued. Inserts nothing when the intent
-- already has its run (UNIQUE workflow_id: one run per intent, ever) or the drawn id is taken.
INSERT INTO app.runs (id, intent_id, workflow_id, status, trace_id, tenant_id, queue_partition_key)
VALUES (%(id)s, %(intent_id)s, %(workflow_id)s, 'queued', %(trace_id)s, %(tenant_id)s,
        %(queue_partition_key)s)
ON CONFLICT DO NOTHING
RETURNING id, intent_id, workflow_id, status, trace_id, tenant_id, queue_partition_key, last_step,
          error, retry_count, next_action, created_at, updated_at

-- name: api_run_by_workflow_id
-- The run of a workflow id (an idempotent start returns it).
SELECT id, intent_id, workflow_id, status, trace_id, tenant_id, queue_partition_key, last_step,
       error, retry_count, next_action, created_at, updated_at
FROM app.runs WHERE workflow_id = %(workflow_id)s

-- name: api_restart_failed_run
-- A start of an intent whose run failed to enqueue (its workflow was never created): the run is
-- started again under its own id, with this request's fields (the caller then enqueues it, in the
-- same transaction). A failed run whose workflow exists is not touched.
UPDATE app.runs r SET status = 'queued', trace_id = %(trace_id)s, tenant_id = %(tenant_id)s,
    queue_partition_key = %(queue_partition_key)s, error = NULL, updated_at = now()
WHERE r.id = %(id)s AND r.status = 'failed'
  AND NOT EXISTS (SELECT 1 FROM dbos.workflow_status w WHERE w.workflow_uuid = r.workflow_id)
RETURNING id, intent_id, workflow_id, status, trace_id, tenant_id, queue_partition_key, last_step,
          error, retry_count, next_action, created_at, updated_at

-- name: api_mark_run_failed
-- The enqueue of a new run failed: the row stays, as `failed` (contract-api §1.5 exception 1).
UPDATE app.runs SET status = 'failed', updated_at = now()
WHERE id = %(id)s
RETURNING id, intent_id, workflow_id, status, trace_id, tenant_id, queue_partition_key, last_step,
          error, retry_count, next_action, created_at, updated_at

-- name: api_find_run
-- Dual lookup: a run id or a workflow id (contract-api §6.3). An exact run id wins.
SELECT id, intent_id, workflow_id, status, trace_id, tenant_id, queue_partition_key, last_step,
       error, retry_count, next_action, created_at, updated_at
FROM app.runs WHERE id = %(id)s OR workflow_id = %(id)s
ORDER BY (id = %(id)s) DESC, created_at DESC
LIMIT 1

-- name: api_upsert_plan_approval
-- Approve a run's plan; a repeat approval overwrites it and refreshes approved_at.
INSERT INTO app.plan_approvals (run_id, approved_at, approved_by, notes)
VALUES (%(run_id)s, now(), %(approved_by)s, %(notes)s)
ON CONFLICT (run_id) DO UPDATE
    SET approved_at = now(), approved_by = EXCLUDED.approved_by, notes = EXCLUDED.notes
RETURNING approved_at

-- name: api_run_steps
-- The latest attempt of each step of a run, by start time (null first) then step id (byte order).
SELECT step_id, phase, output, trace_id, span_id, started_at, finished_at, attempt
FROM (SELECT DISTINCT ON (step_id) step_id, phase, output, trace_id, span_id, started_at,
             finished_at, attempt
      FROM app.run_steps WHERE run_id = %(run_id)s
      ORDER BY step_id, attempt DESC) latest
ORDER BY started_at ASC NULLS FIRST, step_id COLLATE "C"

-- name: api_run_artifacts
-- Every artifact of a run, all attempts, in the RunView order.
SELECT step_id, task_key, idx, attempt, kind, uri, inline, sha256
FROM app.artifacts WHERE run_id = %(run_id)s
ORDER BY step_id COLLATE "C", task_key COLLATE "C", idx, attempt

-- name: api_artifact_by_uri
-- One artifact by URI; when it exists under several attempts the highest wins.
SELECT run_id, step_id, task_key, idx, attempt, kind, uri, inline, sha256, created_at
FROM app.artifacts WHERE uri = %(uri)s
ORDER BY attempt DESC, created_at DESC
LIMIT 1

-- name: api_engine_status
-- The engine's status of a workflow (the RunHeader overlay), if the workflow exists.
SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %(workflow_id)s

-- name: api_run_view
-- GET /runs/:id in one statement (one snapshot, one round trip): the run (api_find_run's dual
-- lookup), the latest attempt of each step (api_run_steps' order) and every artifact
-- (api_run_artifacts' order). Times as the API writes them: UTC, milliseconds truncated, `Z`.
WITH r AS (
    SELECT id, intent_id, workflow_id, status, trace_id, tenant_id, queue_partition_key, last_step,
           error, retry_count, next_action, created_at, updated_at
    FROM app.runs WHERE id = %(id)s OR workflow_id = %(id)s
    ORDER BY (id = %(id)s) DESC, created_at DESC
    LIMIT 1
)
SELECT r.*,
    (SELECT coalesce(json_agg(json_build_object(
                'step_id', s.step_id, 'phase', s.phase, 'output', s.output, 'trace_id', s.trace_id,
                'span_id', s.span_id,
                'started_at', to_char(s.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'finished_at', to_char(s.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
            ORDER BY s.started_at ASC NULLS FIRST, s.step_id COLLATE "C"), '[]'::json)
     FROM (SELECT DISTINCT ON (x.step_id) x.step_id, x.phase, x.output, x.trace_id, x.span_id,
                  x.started_at, x.finished_at
           FROM app.run_steps x WHERE x.run_id = r.id
           ORDER BY x.step_id, x.attempt DESC) s) AS steps,
    (SELECT coalesce(json_agg(json_build_object(
                'kind', a.kind, 'uri', a.uri, 'inline', a.inline, 'sha256', a.sha256)
            ORDER BY a.step_id COLLATE "C", a.task_key COLLATE "C", a.idx, a.attempt), '[]'::json)
     FROM app.artifacts a WHERE a.run_id = r.id) AS artifacts
FROM r
