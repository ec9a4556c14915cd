-- Scheduled workflows: one row per (schedule, tick time), the ledger of every tick ever started.
--
-- The scheduler pass (kodo/workflow/scheduler.py) inserts a tick with ON CONFLICT DO NOTHING and
-- starts its workflow (id sched-<schedule>-<tick ms>) in the same transaction: two schedulers never
-- start one tick twice, and a crash between the two writes loses neither. The newest tick of a
-- schedule is where the catch-up after a downtime starts. Idempotent, like every migration.
CREATE TABLE IF NOT EXISTS dbos.schedule_ticks (
    schedule_name        text NOT NULL,
    tick_epoch_ms        bigint NOT NULL,
    workflow_uuid        text NOT NULL,
    created_at_epoch_ms  bigint NOT NULL,
    PRIMARY KEY (schedule_name, tick_epoch_ms)
);
