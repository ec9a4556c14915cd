-- The intent workflow's product writes (contract-internals §2-§3). Every statement here runs inside
-- a @transaction step, so it commits together with the step's checkpoint: exactly once.

-- name: intent_load
-- The run of a workflow (workflow id = intent id) and its intent.
SELECT r.id AS run_id, r.intent_id, r.tenant_id, r.queue_partition_key, r.trace_id, r.retry_count,
       i.goal, i.payload
FROM app.runs r JOIN app.intents i ON i.id = r.intent_id
WHERE r.workflow_id = %(workflow_id)s

-- name: run_workflow_id
-- The workflow (= intent) id of a run.
SELECT workflow_id FROM app.runs WHERE id = %(run_id)s

-- name: run_update
-- The "ops" update of one run, and its `status` event when `emit` (the message's parameters as
-- insert_notification's) in the same statement. A terminal status is never replaced by a
-- non-terminal one, except `repairing` written together with a retry_count increment (contract-api
-- §7.2); `canceled` (written in the cancelling transaction) is not replaced even by a step that was
-- already running.
WITH run AS (
    UPDATE app.runs SET
        status = CASE
            WHEN %(status)s::text IS NULL THEN status
            WHEN status = 'canceled' AND NOT %(retry_inc)s THEN status
            WHEN status IN ('succeeded', 'failed', 'canceled', 'retries_exceeded')
                 AND %(status)s::text NOT IN ('succeeded', 'failed', 'canceled', 'retries_exceeded')
                 AND NOT %(retry_inc)s THEN status
            ELSE %(status)s::text END,
        last_step = COALESCE(%(last_step)s::text, last_step),
        error = CASE WHEN %(set_error)s THEN %(error)s::text ELSE error END,
        next_action = CASE WHEN %(set_next_action)s THEN %(next_action)s::text ELSE next_action END,
        retry_count = retry_count + CASE WHEN %(retry_inc)s THEN 1 ELSE 0 END,
        updated_at = now()
    WHERE id = %(run_id)s
    RETURNING id
)
INSERT INTO dbos.notifications (message_uuid, destination_uuid, topic, message, created_at_epoch_ms)
SELECT %(message_uuid)s, %(destination)s, %(topic)s, %(message)s, %(now)s WHERE %(emit)s
ON CONFLICT (message_uuid) DO NOTHING

-- name: lock_run
-- Lock one run row. The plan gate takes it before reading the approval; approve-plan takes it before
-- writing the approval and reading the status. So an approval is either seen by the gate or finds
-- the run in waiting_input (and wakes it): it is never lost.
SELECT status FROM app.runs WHERE id = %(run_id)s FOR UPDATE

-- name: plan_approved
-- Whether the run's plan is approved. A statement of its own, run after lock_run: under READ
-- COMMITTED its snapshot is taken after the lock was granted, so it sees an approval committed by
-- the transaction that held the lock (a subquery in the locking statement would not).
SELECT EXISTS (SELECT 1 FROM app.plan_approvals WHERE run_id = %(run_id)s) AS approved

-- name: record_run_step
-- One row per (run, step, attempt), with the run's lastStep and the run stream's `step` event (the
-- message's parameters as insert_notification's) in the same statement; a repeat with the same key
-- inserts no row and no event (`inserted` 0: the caller compares the recorded row).
WITH step AS (
    INSERT INTO app.run_steps (run_id, step_id, phase, output, trace_id, span_id, started_at, finished_at, attempt)
    VALUES (%(run_id)s, %(step_id)s, %(phase)s, %(output)s, %(trace_id)s, %(span_id)s,
            %(started_at)s, %(finished_at)s, %(attempt)s)
    ON CONFLICT (run_id, step_id, attempt) DO NOTHING
    RETURNING run_id
), run AS (
    UPDATE app.runs SET last_step = %(step_id)s, updated_at = now() WHERE id = %(run_id)s
), event AS (
    INSERT INTO dbos.notifications (message_uuid, destination_uuid, topic, message, created_at_epoch_ms)
    SELECT %(message_uuid)s, %(destination)s, %(topic)s, %(message)s, %(now)s FROM step
)
SELECT count(*) AS inserted FROM step

-- name: get_run_step
-- One recorded step attempt (for the determinism check on a repeated insert).
SELECT phase, output FROM app.run_steps
WHERE run_id = %(run_id)s AND step_id = %(step_id)s AND attempt = %(attempt)s

-- name: next_run_step_attempt
-- The attempt a product step takes when it runs: the one after its recorded attempts (1 at first;
-- a repair or a fork re-executing the step continues after the recorded ones).
SELECT COALESCE(max(attempt), 0) + 1 AS n FROM app.run_steps
WHERE run_id = %(run_id)s AND step_id = %(step_id)s

-- name: latest_run_steps
-- The latest attempt of each product step of a run (the repair workflow's checkpoints).
SELECT DISTINCT ON (step_id) step_id, attempt, output
FROM app.run_steps WHERE run_id = %(run_id)s
ORDER BY step_id, attempt DESC

-- name: insert_artifacts
-- Artifacts of one step attempt (arrays by idx); one per (run, step, task_key, idx, attempt): a
-- repeat is a no-op, and the slots it did not insert are compared by the caller.
INSERT INTO app.artifacts (run_id, step_id, task_key, idx, attempt, kind, uri, inline, sha256)
SELECT %(run_id)s, %(step_id)s, %(task_key)s, a.idx, %(attempt)s, a.kind, a.uri, a.inline, a.sha256
FROM unnest(%(idx)s::int[], %(kind)s::text[], %(uri)s::text[], %(inline)s::jsonb[], %(sha256)s::text[])
     AS a(idx, kind, uri, inline, sha256)
ON CONFLICT (run_id, step_id, task_key, idx, attempt) DO NOTHING
RETURNING idx

-- name: get_artifact_slot
-- The artifact in one slot (for the divergence check on a repeated insert).
SELECT uri, sha256 FROM app.artifacts
WHERE run_id = %(run_id)s AND step_id = %(step_id)s AND task_key = %(task_key)s
  AND idx = %(idx)s AND attempt = %(attempt)s

-- name: insert_opencode_call
-- The model-call ledger (committed on its own, before the step's checkpoint). One row per op_key: an
-- answer is never replaced; the row of a failed call (no structured answer) is, by a later answer.
INSERT INTO app.opencode_calls (id, run_id, step_id, request, response, session_id, agent, schema_hash,
                                prompt, structured, raw_response, tool_calls, duration_ms, error, op_key)
VALUES (%(id)s, %(run_id)s, %(step_id)s, %(request)s, %(response)s, %(session_id)s, %(agent)s,
        %(schema_hash)s, %(prompt)s, %(structured)s, %(raw_response)s, %(tool_calls)s, %(duration_ms)s,
        %(error)s, %(op_key)s)
ON CONFLICT (op_key) DO UPDATE SET
    request = EXCLUDED.request, response = EXCLUDED.response, session_id = EXCLUDED.session_id,
    structured = EXCLUDED.structured, raw_response = EXCLUDED.raw_response,
    tool_calls = EXCLUDED.tool_calls, duration_ms = EXCLUDED.duration_ms, error = EXCLUDED.error,
    created_at = now()
WHERE app.opencode_calls.structured IS NULL

-- name: get_opencode_answer
-- The recorded answer of a model call (read before calling: a re-executed step replays it).
SELECT response FROM app.opencode_calls WHERE op_key = %(op_key)s AND structured IS NOT NULL

-- name: latest_opencode_session
-- The OpenCode session a run used last (DecideST continues CompileST's session in another process).
SELECT session_id FROM app.opencode_calls
WHERE run_id = %(run_id)s AND session_id IS NOT NULL AND session_id NOT LIKE 'replay-%%'
  AND session_id NOT LIKE 'sess\_%%'
ORDER BY created_at DESC LIMIT 1

-- name: upsert_receipt
-- The ExecuteST side-effect receipt. seen_count counts commits of the same decision; it must stay 1.
INSERT INTO app.mock_receipts (receipt_key, run_id, step_id, payload_hash, first_attempt, last_attempt,
                               request_payload, response_payload)
VALUES (%(receipt_key)s, %(run_id)s, 'ExecuteST', %(payload_hash)s, %(attempt)s, %(attempt)s,
        %(request_payload)s, %(response_payload)s)
ON CONFLICT (receipt_key) DO UPDATE SET
    seen_count = app.mock_receipts.seen_count + 1,
    last_attempt = GREATEST(app.mock_receipts.last_attempt, EXCLUDED.last_attempt),
    response_payload = EXCLUDED.response_payload,
    updated_at = now()
RETURNING seen_count

-- name: insert_sbx_run
-- One row per sandbox attempt of a fan-out task; a repeat is a no-op (compared by the caller).
INSERT INTO app.sbx_runs (run_id, step_id, task_key, attempt, provider, request, response, err_code, metrics)
VALUES (%(run_id)s, 'ExecuteST', %(task_key)s, %(attempt)s, %(provider)s, %(request)s, %(response)s,
        %(err_code)s, %(metrics)s)
ON CONFLICT (run_id, step_id, task_key, attempt) DO NOTHING
RETURNING run_id

-- name: get_sbx_run
-- One recorded sandbox attempt (for the conflict check on a repeated insert).
SELECT provider, request, response, err_code FROM app.sbx_runs
WHERE run_id = %(run_id)s AND step_id = 'ExecuteST' AND task_key = %(task_key)s AND attempt = %(attempt)s

-- name: max_sbx_attempt
-- The highest sandbox attempt recorded for a task (a repair continues after it).
SELECT COALESCE(max(attempt), 0) AS n FROM app.sbx_runs
WHERE run_id = %(run_id)s AND task_key = %(task_key)s

-- name: run_resume
-- A resumed workflow's run leaves `canceled` for the status it had before the cancel: its newest
-- status event that is not terminal, or `queued` if it never started.
UPDATE app.runs r SET
    status = coalesce((
        SELECT n.message::json->>'status' FROM dbos.notifications n
        WHERE n.destination_uuid = r.workflow_id AND n.topic = 'status'
          AND n.message::json->>'status' NOT IN ('canceled', 'failed', 'succeeded')
        ORDER BY n.seq DESC LIMIT 1), 'queued'),
    error = NULL, next_action = 'NONE', updated_at = now()
WHERE r.id = %(run_id)s AND r.status = 'canceled'
RETURNING status, last_step
