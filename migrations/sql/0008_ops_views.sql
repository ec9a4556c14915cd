-- The operators' views (contract-internals §2.12), in schema app of the one database (so both
-- ops/db/psql-app.sh and psql-sys.sh reach them). Idempotent: CREATE OR REPLACE.

-- The "inbox": workflows that failed in the last 24 hours.
CREATE OR REPLACE VIEW app.v_ops_failures_24h AS
SELECT workflow_uuid, status, name AS workflow_name, class_name, application_version, created_at,
       updated_at, error, recovery_attempts
FROM dbos.workflow_status
WHERE status IN ('ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
  AND created_at > (extract(epoch FROM now()) - 86400) * 1000;

-- Operations that took longer than 5 s.
CREATE OR REPLACE VIEW app.v_ops_slow_steps AS
SELECT workflow_uuid, function_id, function_name, started_at_epoch_ms, completed_at_epoch_ms,
       completed_at_epoch_ms - started_at_epoch_ms AS duration_ms, error
FROM dbos.operation_outputs
WHERE started_at_epoch_ms IS NOT NULL AND completed_at_epoch_ms IS NOT NULL
  AND completed_at_epoch_ms - started_at_epoch_ms > 5000;

-- Work waiting or running, per queue and status.
CREATE OR REPLACE VIEW app.v_ops_queue_depth AS
SELECT queue_name, status, count(*) AS workflow_count, min(created_at) AS oldest_created_at,
       max(created_at) AS newest_created_at
FROM dbos.workflow_status
WHERE status IN ('ENQUEUED', 'PENDING')
GROUP BY queue_name, status;
