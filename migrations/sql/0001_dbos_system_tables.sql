-- The durability layer's system tables (schema dbos). Column names follow what the runbooks' SQL reads.
-- Idempotent: db:reset / db:sys:reset drop one schema and re-apply every migration.
CREATE SCHEMA IF NOT EXISTS dbos;

CREATE TABLE IF NOT EXISTS dbos.workflow_status (
    workflow_uuid          text PRIMARY KEY,
    status                 text NOT NULL CHECK (status IN ('ENQUEUED', 'PENDING', 'SUCCESS', 'ERROR',
                                                          'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')),
    name                   text NOT NULL,
    class_name             text,
    config_name            text,
    queue_name             text NOT NULL,
    queue_partition_key    text,
    priority               integer NOT NULL DEFAULT 0,
    deduplication_id       text,
    application_version    text NOT NULL,
    application_id         text,
    inputs                 text NOT NULL,
    output                 text,
    error                  text,
    -- fenced lease: executor_id owns the run while lease_until_epoch_ms is in the future;
    -- every checkpoint write carries "AND lease_epoch = <mine>".
    executor_id            text,
    lease_epoch            bigint NOT NULL DEFAULT 0,
    lease_until_epoch_ms   bigint,
    -- parked waits hold no worker: 'sleep', 'recv:<topic>', 'child:<id>', 'children'
    wait_reason            text,
    wake_at_epoch_ms       bigint,
    parent_workflow_id     text,
    forked_from            text,
    recovery_attempts      bigint NOT NULL DEFAULT 0,
    max_recovery_attempts  integer NOT NULL DEFAULT 50 CHECK (max_recovery_attempts >= 0),
    noop_deliveries        bigint NOT NULL DEFAULT 0,
    published_at_epoch_ms  bigint,
    started_at_epoch_ms    bigint,
    workflow_timeout_ms    bigint,
    workflow_deadline_epoch_ms bigint,
    created_at             bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    updated_at             bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    updated_at_epoch_ms    bigint GENERATED ALWAYS AS (updated_at) STORED
) WITH (fillfactor = 80);

CREATE UNIQUE INDEX IF NOT EXISTS workflow_status_dedup
    ON dbos.workflow_status (queue_name, deduplication_id) WHERE deduplication_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS workflow_status_active
    ON dbos.workflow_status (application_version, status) WHERE status IN ('ENQUEUED', 'PENDING');
CREATE INDEX IF NOT EXISTS workflow_status_timers
    ON dbos.workflow_status (wake_at_epoch_ms) WHERE wait_reason IS NOT NULL AND wake_at_epoch_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS workflow_status_parent
    ON dbos.workflow_status (parent_workflow_id) WHERE parent_workflow_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS workflow_status_created ON dbos.workflow_status (created_at);

CREATE TABLE IF NOT EXISTS dbos.operation_outputs (
    workflow_uuid          text NOT NULL REFERENCES dbos.workflow_status (workflow_uuid) ON DELETE CASCADE,
    function_id            integer NOT NULL CHECK (function_id >= 1),
    function_name          text NOT NULL,
    output                 text,
    error                  text,
    child_workflow_id      text,
    started_at_epoch_ms    bigint,
    completed_at_epoch_ms  bigint,
    PRIMARY KEY (workflow_uuid, function_id)
);

CREATE TABLE IF NOT EXISTS dbos.notifications (
    message_uuid            text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    destination_uuid        text NOT NULL REFERENCES dbos.workflow_status (workflow_uuid) ON DELETE CASCADE,
    topic                   text NOT NULL,
    message                 text NOT NULL,
    seq                     bigint GENERATED ALWAYS AS IDENTITY,
    created_at_epoch_ms     bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    consumed_at_epoch_ms    bigint,
    consumed_by_function_id integer
);
CREATE INDEX IF NOT EXISTS notifications_unconsumed
    ON dbos.notifications (destination_uuid, topic, seq) WHERE consumed_at_epoch_ms IS NULL;
CREATE INDEX IF NOT EXISTS notifications_destination ON dbos.notifications (destination_uuid, created_at_epoch_ms);
