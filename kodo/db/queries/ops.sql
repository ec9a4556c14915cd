-- The ops control plane (contract-api §9): reads of engine workflows for the operators, and the
-- audit rows of their actions (§9.7). Every row of dbos.workflow_status is a workflow: none is
-- filtered out, whatever its name.

-- name: ops_list_workflows
-- Newest first, then workflow id (byte order). NULL filters match everything; `name` matches the
-- registered name or its last dotted part (`run` matches `IntentWorkflow.run`).
SELECT workflow_uuid, status, name, class_name, queue_name, application_version, created_at, updated_at
FROM dbos.workflow_status
WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
  AND (%(name)s::text IS NULL OR name = %(name)s::text
       OR right(name, length(%(name)s::text) + 1) = '.' || %(name)s::text)
ORDER BY created_at DESC, workflow_uuid COLLATE "C" ASC
LIMIT %(limit)s

-- name: ops_get_workflow
-- One workflow's summary columns, and the workflow it was forked from.
SELECT workflow_uuid, status, name, class_name, queue_name, application_version, created_at, updated_at,
       forked_from
FROM dbos.workflow_status WHERE workflow_uuid = %(workflow_id)s

-- name: ops_list_steps
-- Every recorded operation of a workflow, in execution order (kodo's function ids count from 1).
SELECT function_id, function_name, error, started_at_epoch_ms, completed_at_epoch_ms
FROM dbos.operation_outputs WHERE workflow_uuid = %(workflow_id)s
ORDER BY function_id

-- name: ops_max_step
-- The fork bound: the highest recorded functionId counted from 0, or 0 when nothing is recorded.
SELECT coalesce(max(function_id) - 1, 0) AS max_step
FROM dbos.operation_outputs WHERE workflow_uuid = %(workflow_id)s

-- name: ops_audit
-- The OPS audit artifacts of a workflow: the actions on it, and the fork that created it (stored
-- under the run of the workflow it was forked from). Newest first.
SELECT a.inline FROM app.artifacts a
WHERE a.run_id IN (SELECT r.id FROM app.runs r
                   WHERE r.workflow_id = ANY(%(workflow_ids)s::text[]) OR r.id = ANY(%(workflow_ids)s::text[]))
  AND a.step_id = 'OPS'
  AND (a.inline->>'targetWorkflowID' = %(workflow_id)s OR a.inline->>'forkedWorkflowID' = %(workflow_id)s)
ORDER BY a.inline->>'at' DESC, a.created_at DESC, a.task_key COLLATE "C" DESC

-- name: ops_audit_run
-- The run an audit row of a workflow joins: the newest whose workflow id or id is the workflow's.
SELECT id FROM app.runs WHERE workflow_id = %(workflow_id)s OR id = %(workflow_id)s
ORDER BY created_at DESC
LIMIT 1

-- name: ops_insert_audit_intent
-- No run has the workflow: the synthetic intent `it-ops-<wid>` its audit run belongs to.
INSERT INTO app.intents (id, goal, payload)
VALUES (%(intent_id)s, 'ops-workflow-control', %(payload)s)
ON CONFLICT (id) DO NOTHING

-- name: ops_insert_audit_run
-- ... and the synthetic run `<wid>` (status running, as the original wrote it).
INSERT INTO app.runs (id, intent_id, workflow_id, status)
VALUES (%(workflow_id)s, %(intent_id)s, %(workflow_id)s, 'running')
ON CONFLICT DO NOTHING
