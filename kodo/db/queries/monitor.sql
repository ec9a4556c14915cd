-- Whether a monitor (Flower, started by `workers.flower`) watches the workers: it holds a shared
-- session-level advisory lock for its whole life; Postgres releases it when that connection ends,
-- a kill -9 included. Workers send task events only while some monitor holds it.

-- name: monitor_hold
-- Take the monitor lock (shared: any number of monitors may hold it at once).
SELECT pg_try_advisory_lock_shared(%(space)s::int4, %(key)s::int4) AS held

-- name: monitor_watching
-- Whether any session of this database holds the monitor lock.
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted
      AND classid = %(space)s::int4::oid AND objid = %(key)s::int4::oid AND objsubid = 2
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS watching
