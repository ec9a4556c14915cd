-- Product tables of schema app: final shape of the original's migrations 001-016 (spec contract-internals §2).
-- app.marks / app.workflow_runs live in 0002; the ops views (§2.12) belong to the system DB and are not here.
-- Idempotent: db:reset drops schema app and re-applies every migration.
CREATE SCHEMA IF NOT EXISTS app;

-- §2.1
CREATE TABLE IF NOT EXISTS app.intents (
    id         text PRIMARY KEY,
    goal       text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- §2.2  UNIQUE (workflow_id) is the exactly-once key for runs. status has no CHECK on purpose.
CREATE TABLE IF NOT EXISTS app.runs (
    id                  text PRIMARY KEY,
    intent_id           text NOT NULL REFERENCES app.intents (id),
    workflow_id         text NOT NULL UNIQUE,
    status              text NOT NULL,
    trace_id            text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    last_step           text,
    error               text,
    retry_count         integer NOT NULL DEFAULT 0,
    next_action         text,
    tenant_id           text,
    queue_partition_key text
);

-- §2.3  one row per (run, step, attempt); append-only.
CREATE TABLE IF NOT EXISTS app.run_steps (
    run_id      text NOT NULL REFERENCES app.runs (id),
    step_id     text NOT NULL,
    phase       text NOT NULL,
    output      jsonb,
    trace_id    text,
    started_at  timestamptz,
    finished_at timestamptz,
    attempt     integer NOT NULL DEFAULT 1,
    span_id     text,
    PRIMARY KEY (run_id, step_id, attempt)
);

-- §2.4  one artifact per slot.
CREATE TABLE IF NOT EXISTS app.artifacts (
    run_id     text NOT NULL REFERENCES app.runs (id),
    step_id    text NOT NULL,
    idx        integer NOT NULL,
    kind       text NOT NULL,
    uri        text,
    inline     jsonb,
    sha256     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    task_key   text NOT NULL DEFAULT '',
    attempt    integer NOT NULL DEFAULT 1,
    PRIMARY KEY (run_id, step_id, task_key, idx, attempt)
);

-- §2.7
CREATE TABLE IF NOT EXISTS app.recipes (
    id                  text PRIMARY KEY,
    name                text NOT NULL,
    version             integer NOT NULL CHECK (version > 0),
    queue_name          text NOT NULL CONSTRAINT recipes_queue_name_check
                             CHECK (queue_name IN ('compileQ', 'sbxQ', 'controlQ', 'intentQ')),
    max_concurrency     integer NOT NULL CHECK (max_concurrency > 0),
    max_steps           integer NOT NULL CHECK (max_steps > 0),
    max_sandbox_minutes integer NOT NULL CHECK (max_sandbox_minutes > 0),
    spec                jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);

-- §2.8  UNIQUE op_key: one model call per step attempt.
CREATE TABLE IF NOT EXISTS app.opencode_calls (
    id           text PRIMARY KEY,
    run_id       text NOT NULL REFERENCES app.runs (id),
    step_id      text NOT NULL,
    request      jsonb NOT NULL,
    response     jsonb NOT NULL,
    diff         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    session_id   text,
    agent        text,
    schema_hash  text,
    prompt       text,
    structured   jsonb,
    raw_response text,
    tool_calls   jsonb,
    duration_ms  integer,
    error        jsonb,
    op_key       text,
    CONSTRAINT opencode_calls_op_key_unique UNIQUE (op_key)
);
CREATE INDEX IF NOT EXISTS opencode_calls_run_step_idx ON app.opencode_calls (run_id, step_id, created_at DESC);
CREATE INDEX IF NOT EXISTS opencode_calls_session_idx ON app.opencode_calls (session_id, created_at);
CREATE INDEX IF NOT EXISTS opencode_calls_op_key_idx ON app.opencode_calls (op_key);

-- §2.9  side-effect receipt of the ExecuteST commit; seen_count must stay 1 (upserts bump it).
CREATE TABLE IF NOT EXISTS app.mock_receipts (
    receipt_key      text PRIMARY KEY,
    run_id           text NOT NULL REFERENCES app.runs (id),
    step_id          text NOT NULL,
    payload_hash     text NOT NULL,
    first_attempt    integer NOT NULL CHECK (first_attempt > 0),
    last_attempt     integer NOT NULL CHECK (last_attempt > 0),
    seen_count       integer NOT NULL DEFAULT 1 CHECK (seen_count > 0),
    request_payload  jsonb NOT NULL,
    response_payload jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS mock_receipts_run_idx ON app.mock_receipts (run_id, step_id);

-- §2.10  one approval per run (upserted).
CREATE TABLE IF NOT EXISTS app.plan_approvals (
    run_id      text PRIMARY KEY REFERENCES app.runs (id),
    approved_at timestamptz NOT NULL DEFAULT now(),
    approved_by text NOT NULL DEFAULT 'system',
    notes       text
);

-- §2.11  one row per sandbox attempt per fan-out task; append-only.
CREATE TABLE IF NOT EXISTS app.sbx_runs (
    run_id     text NOT NULL REFERENCES app.runs (id),
    step_id    text NOT NULL,
    task_key   text NOT NULL,
    provider   text NOT NULL,
    request    jsonb NOT NULL,
    response   jsonb NOT NULL,
    err_code   text NOT NULL,
    metrics    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    attempt    integer NOT NULL DEFAULT 1,
    PRIMARY KEY (run_id, step_id, task_key, attempt)
);
CREATE INDEX IF NOT EXISTS sbx_runs_task_key_idx ON app.sbx_runs (task_key);

-- Append-only attempt tables (§2.3 run_steps, §2.11 sbx_runs): a new attempt is a new row, never a rewrite.
-- Inserts with ON CONFLICT DO NOTHING stay allowed; UPDATE and DELETE are refused. TRUNCATE and
-- DROP SCHEMA (db:reset) are not row operations and still work.
CREATE OR REPLACE FUNCTION app.refuse_append_only_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

DROP TRIGGER IF EXISTS run_steps_append_only ON app.run_steps;
CREATE TRIGGER run_steps_append_only BEFORE UPDATE OR DELETE ON app.run_steps
    FOR EACH ROW EXECUTE FUNCTION app.refuse_append_only_change();

DROP TRIGGER IF EXISTS sbx_runs_append_only ON app.sbx_runs;
CREATE TRIGGER sbx_runs_append_only BEFORE UPDATE OR DELETE ON app.sbx_runs
    FOR EACH ROW EXECUTE FUNCTION app.refuse_append_only_change();

-- §2.7 seeds, in their final shape (after the original's 013 every queue_name is intentQ).
INSERT INTO app.recipes (id, name, version, queue_name, max_concurrency, max_steps, max_sandbox_minutes, spec)
VALUES
    ('rcp_compile_default_v1', 'compile-default', 1, 'intentQ', 10, 32, 15,
     '{"class": "compile", "notes": "default compile lane"}'::jsonb),
    ('rcp_sandbox_default_v1', 'sandbox-default', 1, 'intentQ', 20, 128, 60,
     '{"class": "sandbox", "notes": "parallel sandbox lane"}'::jsonb),
    ('rcp_control_default_v1', 'control-default', 1, 'intentQ', 5, 16, 10,
     '{"class": "control", "notes": "events/retries lane"}'::jsonb)
ON CONFLICT DO NOTHING;
