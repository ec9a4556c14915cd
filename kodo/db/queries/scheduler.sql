-- The scheduler pass's ledger of ticks (kodo/workflow/scheduler.py, table dbos.schedule_ticks).

-- name: last_schedule_tick
-- The newest tick of a schedule: the catch-up after a downtime starts after it.
SELECT max(tick_epoch_ms) AS tick_epoch_ms FROM dbos.schedule_ticks WHERE schedule_name = %(schedule_name)s

-- name: insert_schedule_tick
-- Claim one tick of a schedule; nothing (no row returned) when it exists already, so a tick is
-- started once however many schedulers reach it.
INSERT INTO dbos.schedule_ticks (schedule_name, tick_epoch_ms, workflow_uuid, created_at_epoch_ms)
VALUES (%(schedule_name)s, %(tick_epoch_ms)s, %(workflow_uuid)s, %(now)s)
ON CONFLICT (schedule_name, tick_epoch_ms) DO NOTHING
RETURNING tick_epoch_ms
