-- Typed waits and durable step retries.
--
-- What a parked workflow waits for is two typed columns instead of a parsed string:
-- wait_kind ('sleep' | 'recv' | 'child' | 'children' | 'retry') and wait_key (the topic, the child's
-- id or the retrying step's function id). wait_reason stays for the runbooks' SQL, generated from
-- them ('recv:<topic>', 'child:<id>', 'sleep', ...), so it can no longer disagree with them.
--
-- A failed attempt of a retrying step is a row of dbos.step_attempts, written (fenced) in the same
-- transaction that parks the workflow for its backoff: no worker sleeps through a backoff.
-- Idempotent, like every migration.
ALTER TABLE dbos.workflow_status ADD COLUMN IF NOT EXISTS wait_kind text
    CHECK (wait_kind IN ('sleep', 'recv', 'child', 'children', 'retry'));
ALTER TABLE dbos.workflow_status ADD COLUMN IF NOT EXISTS wait_key text;

DO $$
BEGIN
    IF (SELECT is_generated FROM information_schema.columns
        WHERE table_schema = 'dbos' AND table_name = 'workflow_status' AND column_name = 'wait_reason')
       = 'NEVER' THEN
        UPDATE dbos.workflow_status
        SET wait_kind = split_part(wait_reason, ':', 1),
            wait_key = nullif(substr(wait_reason, length(split_part(wait_reason, ':', 1)) + 2), '')
        WHERE wait_reason IS NOT NULL;
        DROP INDEX IF EXISTS dbos.workflow_status_timers;
        ALTER TABLE dbos.workflow_status DROP COLUMN wait_reason;
        ALTER TABLE dbos.workflow_status ADD COLUMN wait_reason text GENERATED ALWAYS AS (
            CASE WHEN wait_key IS NULL THEN wait_kind ELSE wait_kind || ':' || wait_key END) STORED;
    END IF;
END $$;

CREATE INDEX IF NOT EXISTS workflow_status_timers
    ON dbos.workflow_status (wake_at_epoch_ms) WHERE wait_kind IS NOT NULL AND wake_at_epoch_ms IS NOT NULL;

CREATE TABLE IF NOT EXISTS dbos.step_attempts (
    workflow_uuid          text NOT NULL REFERENCES dbos.workflow_status (workflow_uuid) ON DELETE CASCADE,
    function_id            integer NOT NULL CHECK (function_id >= 1),
    attempt                integer NOT NULL CHECK (attempt >= 1),
    error                  text NOT NULL,
    started_at_epoch_ms    bigint NOT NULL,
    completed_at_epoch_ms  bigint NOT NULL,
    PRIMARY KEY (workflow_uuid, function_id, attempt)
);
