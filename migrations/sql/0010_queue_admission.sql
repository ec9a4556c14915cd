-- Queue admission (flow control): concurrency caps, per-worker caps and rolling-window rate limits
-- for a whole queue and for each of its partitions, with priority and weighted round-robin across
-- partitions. Limits live here so operators change them at run time (kodo queue set, the admin
-- port); the environment writes the defaults (source 'env') until an operator sets a queue.
--
-- A row of a limited queue (one with a dbos.queue_limits row) is claimable only once admitted:
-- admitted_at_epoch_ms holds its slot (counted by the concurrency caps) from admission until it
-- parks, ends or is cancelled; rate_at_epoch_ms is its first admission (counted by the rate
-- windows, once per workflow). Work not admitted waits as a runnable row with no broker message.

ALTER TABLE dbos.workflow_status
    ADD COLUMN IF NOT EXISTS admitted_at_epoch_ms bigint,
    ADD COLUMN IF NOT EXISTS rate_at_epoch_ms bigint,
    ADD COLUMN IF NOT EXISTS executor_node text;

-- The slots held, per queue and partition (the concurrency counts).
CREATE INDEX IF NOT EXISTS workflow_status_admitted
    ON dbos.workflow_status (queue_name, (coalesce(queue_partition_key, '')))
    WHERE admitted_at_epoch_ms IS NOT NULL;
-- The rows waiting for admission, per queue, version and partition in admission order: a partition's
-- next rows, and the partitions with waiting rows (a loose index scan), cost O(log n), not O(backlog).
CREATE INDEX IF NOT EXISTS workflow_status_waiting
    ON dbos.workflow_status (queue_name, application_version, (coalesce(queue_partition_key, '')),
                             priority, created_at, workflow_uuid)
    WHERE admitted_at_epoch_ms IS NULL AND executor_id IS NULL AND wait_kind IS NULL
      AND status IN ('ENQUEUED', 'PENDING');
-- The leases one worker node holds (the per-worker caps).
CREATE INDEX IF NOT EXISTS workflow_status_node
    ON dbos.workflow_status (executor_node, queue_name)
    WHERE executor_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS dbos.queue_limits (
    queue_name                   text PRIMARY KEY,
    concurrency                  integer CHECK (concurrency >= 0),
    worker_concurrency           integer CHECK (worker_concurrency >= 1),
    rate_limit                   integer CHECK (rate_limit >= 1),
    rate_period_ms               bigint CHECK (rate_period_ms >= 1),
    partition_concurrency        integer CHECK (partition_concurrency >= 0),
    partition_worker_concurrency integer CHECK (partition_worker_concurrency >= 1),
    partition_rate_limit         integer CHECK (partition_rate_limit >= 1),
    partition_rate_period_ms     bigint CHECK (partition_rate_period_ms >= 1),
    priority_enabled             boolean NOT NULL DEFAULT true,
    source                       text NOT NULL DEFAULT 'env' CHECK (source IN ('env', 'operator')),
    next_window_at_epoch_ms      bigint,
    updated_at                   bigint NOT NULL,
    CHECK ((rate_limit IS NULL) = (rate_period_ms IS NULL)),
    CHECK ((partition_rate_limit IS NULL) = (partition_rate_period_ms IS NULL))
);

CREATE TABLE IF NOT EXISTS dbos.queue_partition_limits (
    queue_name         text NOT NULL,
    partition_key      text NOT NULL,
    concurrency        integer CHECK (concurrency >= 0),
    worker_concurrency integer CHECK (worker_concurrency >= 1),
    rate_limit         integer CHECK (rate_limit >= 1),
    rate_period_ms     bigint CHECK (rate_period_ms >= 1),
    weight             integer NOT NULL DEFAULT 1 CHECK (weight >= 1),
    updated_at         bigint NOT NULL,
    PRIMARY KEY (queue_name, partition_key),
    CHECK ((rate_limit IS NULL) = (rate_period_ms IS NULL))
);

-- What admission counts, kept O(partitions + buckets) instead of O(slots held + window):
-- * dbos.queue_slots: the slots each partition holds. Every change of a row's slot is logged in
--   dbos.queue_slot_deltas by a trigger (an insert: no hot row for the transactions that free
--   slots), and admission folds the log into queue_slots under its lock.
-- * dbos.queue_rate: first admissions per partition in 100 ms buckets (written by admission only);
--   a window counts every bucket it touches, so a rate limit is never overspent (at worst a row
--   waits up to 100 ms longer than an exact window would make it).
CREATE TABLE IF NOT EXISTS dbos.queue_slots (
    queue_name    text NOT NULL,
    partition_key text NOT NULL,
    held          bigint NOT NULL,
    PRIMARY KEY (queue_name, partition_key)
);
CREATE TABLE IF NOT EXISTS dbos.queue_slot_deltas (
    queue_name    text NOT NULL,
    partition_key text NOT NULL,
    delta         integer NOT NULL
);
CREATE TABLE IF NOT EXISTS dbos.queue_rate (
    queue_name    text NOT NULL,
    partition_key text NOT NULL,
    bucket_ms     bigint NOT NULL,
    n             bigint NOT NULL,
    PRIMARY KEY (queue_name, partition_key, bucket_ms)
);

CREATE OR REPLACE FUNCTION dbos.kodo_slot_delta() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.admitted_at_epoch_ms IS NOT NULL THEN
        INSERT INTO dbos.queue_slot_deltas VALUES (OLD.queue_name, coalesce(OLD.queue_partition_key, ''), -1);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.admitted_at_epoch_ms IS NOT NULL THEN
        INSERT INTO dbos.queue_slot_deltas VALUES (NEW.queue_name, coalesce(NEW.queue_partition_key, ''), 1);
    END IF;
    -- A row inserted admitted (dbos.kodo_admit_new said so, under the queue's lock) counts in the
    -- rate windows here, so a start that inserted nothing (an existing id) counts nothing.
    IF TG_OP = 'INSERT' AND NEW.rate_at_epoch_ms IS NOT NULL THEN
        INSERT INTO dbos.queue_rate AS r (queue_name, partition_key, bucket_ms, n)
        VALUES (NEW.queue_name, coalesce(NEW.queue_partition_key, ''), NEW.rate_at_epoch_ms / 100 * 100, 1)
        ON CONFLICT (queue_name, partition_key, bucket_ms) DO UPDATE SET n = r.n + 1;
    END IF;
    RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS workflow_status_slot_taken ON dbos.workflow_status;
CREATE TRIGGER workflow_status_slot_taken AFTER INSERT ON dbos.workflow_status
    FOR EACH ROW WHEN (NEW.admitted_at_epoch_ms IS NOT NULL) EXECUTE FUNCTION dbos.kodo_slot_delta();
DROP TRIGGER IF EXISTS workflow_status_slot_changed ON dbos.workflow_status;
CREATE TRIGGER workflow_status_slot_changed AFTER UPDATE ON dbos.workflow_status
    FOR EACH ROW WHEN ((OLD.admitted_at_epoch_ms IS NULL) <> (NEW.admitted_at_epoch_ms IS NULL)
                       OR (OLD.admitted_at_epoch_ms IS NOT NULL
                           AND (OLD.queue_name, coalesce(OLD.queue_partition_key, ''))
                               IS DISTINCT FROM (NEW.queue_name, coalesce(NEW.queue_partition_key, ''))))
    EXECUTE FUNCTION dbos.kodo_slot_delta();
DROP TRIGGER IF EXISTS workflow_status_slot_gone ON dbos.workflow_status;
CREATE TRIGGER workflow_status_slot_gone AFTER DELETE ON dbos.workflow_status
    FOR EACH ROW WHEN (OLD.admitted_at_epoch_ms IS NOT NULL) EXECUTE FUNCTION dbos.kodo_slot_delta();

-- Under a queue's admission lock: fold the slot log (committed changes since the last admission)
-- into dbos.queue_slots, and drop the rate buckets no window of the queue reaches any more (older
-- than p_period, the queue's longest window, or a partition override's).
-- (No SET clause of its own: a call would save and restore the setting; its callers' applies.)
CREATE OR REPLACE FUNCTION dbos.kodo_fold_counts(p_queue text, p_now bigint, p_period bigint)
RETURNS void LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    WITH d AS (
        DELETE FROM dbos.queue_slot_deltas x WHERE x.queue_name = p_queue
        RETURNING x.partition_key AS part, x.delta
    )
    INSERT INTO dbos.queue_slots AS s (queue_name, partition_key, held)
    SELECT p_queue, d.part, sum(d.delta) FROM d GROUP BY d.part
    ON CONFLICT (queue_name, partition_key) DO UPDATE SET held = s.held + excluded.held;
    DELETE FROM dbos.queue_rate r
    WHERE r.queue_name = p_queue AND r.bucket_ms + 100 <= p_now - greatest(p_period,
        (SELECT coalesce(max(o.rate_period_ms), 0) FROM dbos.queue_partition_limits o
         WHERE o.queue_name = p_queue));
END
$fn$;

-- Admissions of queue p_queue (one partition, or all: p_part NULL) in the window of p_period
-- ending at p_now (every 100 ms bucket it touches).
-- (plpgsql, not sql: its plans are kept for the session instead of being made on every call)
CREATE OR REPLACE FUNCTION dbos.kodo_rate_used(p_queue text, p_part text, p_period bigint, p_now bigint)
RETURNS bigint LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
    IF p_part IS NULL THEN
        RETURN (SELECT coalesce(sum(r.n), 0)::bigint FROM dbos.queue_rate r
                WHERE r.queue_name = p_queue AND r.bucket_ms > p_now - p_period - 100);
    END IF;
    RETURN (SELECT coalesce(sum(r.n), 0)::bigint FROM dbos.queue_rate r
            WHERE r.queue_name = p_queue AND r.partition_key = p_part
              AND r.bucket_ms > p_now - p_period - 100);
END
$fn$;

-- When a window of p_limit per p_period (of one partition, or all) lets the next admission in:
-- the end of the bucket whose leaving brings the count below the limit, plus the period.
CREATE OR REPLACE FUNCTION dbos.kodo_rate_reopen(
    p_queue text, p_part text, p_limit bigint, p_period bigint, p_now bigint)
RETURNS bigint LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
    RETURN (
        WITH b AS (
            SELECT r.bucket_ms, sum(r.n) AS n FROM dbos.queue_rate r
            WHERE r.queue_name = p_queue AND (p_part IS NULL OR r.partition_key = p_part)
              AND r.bucket_ms > p_now - p_period - 100
            GROUP BY r.bucket_ms
        ), c AS (
            SELECT b.bucket_ms, sum(b.n) OVER (ORDER BY b.bucket_ms) AS gone, sum(b.n) OVER () AS used
            FROM b
        )
        SELECT c.bucket_ms + 100 + p_period FROM c
        WHERE c.used >= p_limit AND c.used - c.gone < p_limit
        ORDER BY c.bucket_ms LIMIT 1);
END
$fn$;

-- Admit what the limits of queue p_queue allow, among the runnable unadmitted rows of version
-- p_version, and return the rows to ring: those admitted now, and the hinted rows (p_hint: rows
-- the caller's transaction made runnable) that already hold a slot. A queue without limits admits
-- nothing and rings its hinted rows as they are.
--
-- One statement for the caller. Admissions of a queue are serialised by an advisory lock held to
-- the end of the caller's transaction; every count (dbos.queue_slots, dbos.queue_rate) is read
-- after the lock is taken (a VOLATILE
-- function takes a fresh snapshot for each statement under READ COMMITTED), so concurrent
-- dispatchers cannot overspend a budget (the SKIP LOCKED pitfall). Slots are only freed, never
-- taken, outside this lock; a transaction that frees one calls this function itself.
--
-- Order: each partition's rows by priority (when enabled), then age; partitions take turns
-- (round-robin by slots held, a partition of weight w takes w slots a turn). When a rate window holds work back,
-- the time it reopens is kept in queue_limits.next_window_at_epoch_ms and announced on kodo_timer,
-- so the timer loops admit then (push, not polling).
CREATE OR REPLACE FUNCTION dbos.kodo_admit(p_queue text, p_version text, p_now bigint, p_hint text[])
RETURNS TABLE (workflow_uuid text, queue_name text, name text, queue_partition_key text)
LANGUAGE plpgsql VOLATILE
-- Its statements are planned once per session: re-planning them on every call (custom plans)
-- cost three times the statements' run time (measured with 1,000 waiting rows: 1.3 ms vs 0.47 ms).
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
    lim dbos.queue_limits%ROWTYPE;
    budget bigint := 9223372036854775807;
    used bigint;
    parts text[];
    reopen bigint;
    next_at bigint := NULL;
    fast boolean := false;
BEGIN
    SELECT * INTO lim FROM dbos.queue_limits l WHERE l.queue_name = p_queue;
    IF NOT FOUND THEN
        RETURN QUERY SELECT w.workflow_uuid, w.queue_name, w.name, w.queue_partition_key
            FROM dbos.workflow_status w
            WHERE w.workflow_uuid = ANY (p_hint) AND w.status IN ('ENQUEUED', 'PENDING')
              AND w.wait_kind IS NULL;
        RETURN;
    END IF;
    -- A freed slot with nothing waiting (the common case) admits nothing: no lock, no counting.
    -- A row whose own admission found no slot and that commits after this look is admitted by the
    -- next slot freed, or by the reconcilers' sweep (KODO_RECONCILE_MS) at the latest.
    IF cardinality(p_hint) = 0 AND lim.next_window_at_epoch_ms IS NULL AND NOT EXISTS (
            SELECT 1 FROM dbos.workflow_status w
            WHERE w.queue_name = p_queue AND w.application_version = p_version
              AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
              AND w.status IN ('ENQUEUED', 'PENDING')) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('kodo.admit:' || p_queue, 0));

    -- Hinted rows that hold a slot already (a recovery, a resume of a row still leased): ring them.
    -- (Looked up by key: a generic plan of `= ANY (p_hint)` with these conditions scanned an index.)
    RETURN QUERY SELECT w.workflow_uuid, w.queue_name, w.name, w.queue_partition_key
        FROM (SELECT DISTINCT x AS id FROM unnest(p_hint) AS x) h JOIN dbos.workflow_status w ON w.workflow_uuid = h.id
        WHERE CASE WHEN w.admitted_at_epoch_ms IS NOT NULL AND w.status IN ('ENQUEUED', 'PENDING')
                        AND w.wait_kind IS NULL THEN true ELSE false END;

    -- Fold the slot log (committed changes since the last admission) into the counters, and drop
    -- rate buckets no window of this queue reaches any more.
    PERFORM dbos.kodo_fold_counts(p_queue, p_now,
                                  greatest(coalesce(lim.rate_period_ms, 0), coalesce(lim.partition_rate_period_ms, 0)));

    IF lim.concurrency IS NOT NULL THEN
        SELECT coalesce(sum(s.held), 0) INTO used FROM dbos.queue_slots s WHERE s.queue_name = p_queue;
        budget := least(budget, lim.concurrency - used);
    END IF;
    IF lim.rate_limit IS NOT NULL THEN
        budget := least(budget, lim.rate_limit - dbos.kodo_rate_used(p_queue, NULL, lim.rate_period_ms, p_now));
    END IF;

    -- Fast path, the common start or wake: the rows this transaction made runnable are the only
    -- ones waiting, and every budget has room for all of them; they are admitted as they are (no
    -- partition scan, no ranking: there is nothing to share).
    IF cardinality(p_hint) > 0 AND budget >= cardinality(p_hint) AND NOT EXISTS (
            SELECT 1 FROM dbos.workflow_status w WHERE w.queue_name = p_queue AND w.application_version = p_version
              AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
              AND w.status IN ('ENQUEUED', 'PENDING') AND w.workflow_uuid <> ALL (p_hint)) THEN
        SELECT NOT EXISTS (
            SELECT 1 FROM (
                SELECT coalesce(w.queue_partition_key, '') AS part, count(*) AS k
                FROM dbos.workflow_status w WHERE w.workflow_uuid = ANY (p_hint) AND w.queue_name = p_queue AND w.application_version = p_version
              AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
              AND w.status IN ('ENQUEUED', 'PENDING')
                GROUP BY 1
            ) h
            LEFT JOIN dbos.queue_partition_limits o ON o.queue_name = p_queue AND o.partition_key = h.part
            WHERE h.k > coalesce(coalesce(o.concurrency, lim.partition_concurrency) - coalesce((
                        SELECT s.held FROM dbos.queue_slots s
                        WHERE s.queue_name = p_queue AND s.partition_key = h.part), 0), h.k)
               OR h.k > coalesce(coalesce(o.rate_limit, lim.partition_rate_limit) - dbos.kodo_rate_used(
                        p_queue, h.part, coalesce(o.rate_period_ms, lim.partition_rate_period_ms), p_now), h.k))
        INTO fast;
    END IF;

    -- The partitions with waiting rows: a loose index scan (one probe per partition).
    IF fast THEN
        parts := '{}';
    ELSE
    WITH RECURSIVE p AS (
        (SELECT coalesce(w.queue_partition_key, '') AS part FROM dbos.workflow_status w
         WHERE w.queue_name = p_queue AND w.application_version = p_version
                  AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
                  AND w.status IN ('ENQUEUED', 'PENDING')
         ORDER BY coalesce(w.queue_partition_key, '') LIMIT 1)
        UNION ALL
        SELECT (SELECT coalesce(w.queue_partition_key, '') FROM dbos.workflow_status w
                WHERE w.queue_name = p_queue AND w.application_version = p_version
                  AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
                  AND w.status IN ('ENQUEUED', 'PENDING')
                  AND coalesce(w.queue_partition_key, '') > p.part
                ORDER BY coalesce(w.queue_partition_key, '') LIMIT 1)
        FROM p WHERE p.part IS NOT NULL
    )
    SELECT coalesce(array_agg(p.part), '{}') INTO parts FROM p WHERE p.part IS NOT NULL;
    END IF;

    IF budget > 0 AND (fast OR cardinality(parts) > 0) THEN
        RETURN QUERY
        WITH limits AS (
            SELECT x.part, coalesce(o.weight, 1) AS weight,
                   coalesce(o.concurrency, lim.partition_concurrency) AS conc,
                   coalesce(o.rate_limit, lim.partition_rate_limit) AS rate,
                   coalesce(o.rate_period_ms, lim.partition_rate_period_ms) AS period
            FROM unnest(parts) AS x(part)
            LEFT JOIN dbos.queue_partition_limits o ON o.queue_name = p_queue AND o.partition_key = x.part
        ), held AS (
            SELECT l.*, coalesce((SELECT s.held FROM dbos.queue_slots s
                                  WHERE s.queue_name = p_queue AND s.partition_key = l.part), 0) AS held
            FROM limits l
        ), budgets AS (
            SELECT h.part, h.weight, h.held, least(
                budget,
                CASE WHEN h.conc IS NULL THEN budget ELSE h.conc - h.held END,
                CASE WHEN h.rate IS NULL THEN budget
                     ELSE h.rate - dbos.kodo_rate_used(p_queue, h.part, h.period, p_now) END) AS b
            FROM held h
        ), cand AS (
            -- Each partition's next rows, at most its budget, straight from the index.
            SELECT b.part, b.weight, b.held, c.id, c.prio, c.created_at
            FROM budgets b
            CROSS JOIN LATERAL (
                (SELECT w.workflow_uuid AS id, w.priority AS prio, w.created_at FROM dbos.workflow_status w
                 WHERE lim.priority_enabled AND w.queue_name = p_queue AND w.application_version = p_version
                  AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
                  AND w.status IN ('ENQUEUED', 'PENDING')
                   AND coalesce(w.queue_partition_key, '') = b.part
                 ORDER BY w.priority, w.created_at, w.workflow_uuid LIMIT b.b)
                UNION ALL
                (SELECT w.workflow_uuid, 0, w.created_at FROM dbos.workflow_status w
                 WHERE NOT lim.priority_enabled AND w.queue_name = p_queue AND w.application_version = p_version
                  AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
                  AND w.status IN ('ENQUEUED', 'PENDING')
                   AND coalesce(w.queue_partition_key, '') = b.part
                 ORDER BY w.created_at, w.workflow_uuid LIMIT b.b)
            ) c
            WHERE b.b > 0
        ), ranked AS (
            SELECT c.*, row_number() OVER (PARTITION BY c.part ORDER BY c.prio, c.created_at, c.id) AS rk
            FROM cand c
        ), pick AS (
            -- Turns: a partition's k-th waiting row comes after the slots it holds already, so a
            -- partition holding fewer slots (per weight) goes first, whatever its backlog's age.
            (SELECT r.id FROM ranked r WHERE NOT fast
             ORDER BY (r.held + r.rk - 1) / r.weight, r.prio, r.created_at, r.id
             LIMIT budget)
            UNION ALL
            SELECT w.workflow_uuid FROM dbos.workflow_status w
            WHERE fast AND w.workflow_uuid = ANY (p_hint) AND w.queue_name = p_queue
              AND w.application_version = p_version
        ), free AS (
            -- A row another transaction holds (a cancel or resume, which admits after it) is left
            -- for later: waiting for it while holding this queue's lock could deadlock with it. The
            -- row must still wait once locked (re-checked on its newest version). The check is a
            -- CASE so that no plan scans the partial index of waiting rows for it: every picked row
            -- is looked up by its key.
            SELECT w.workflow_uuid, coalesce(w.queue_partition_key, '') AS part,
                   w.rate_at_epoch_ms IS NULL AS first
            FROM dbos.workflow_status w
            WHERE w.workflow_uuid IN (SELECT id FROM pick)
              AND CASE WHEN w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
                            AND w.status IN ('ENQUEUED', 'PENDING') THEN true ELSE false END
            FOR UPDATE SKIP LOCKED
        ), upd AS (
            UPDATE dbos.workflow_status w SET admitted_at_epoch_ms = p_now,
                rate_at_epoch_ms = coalesce(w.rate_at_epoch_ms, p_now),
                published_at_epoch_ms = p_now, publish_count = 0
            FROM free WHERE w.workflow_uuid = free.workflow_uuid
            RETURNING w.workflow_uuid, w.queue_name, w.name, w.queue_partition_key, free.part, free.first
        ), counted AS (
            -- A first admission counts in the rate windows (a wake-up admitted again does not).
            INSERT INTO dbos.queue_rate AS r (queue_name, partition_key, bucket_ms, n)
            SELECT p_queue, u.part, p_now / 100 * 100, count(*) FROM upd u WHERE u.first GROUP BY u.part
            ON CONFLICT (queue_name, partition_key, bucket_ms) DO UPDATE SET n = r.n + excluded.n
        )
        SELECT u.workflow_uuid, u.queue_name, u.name, u.queue_partition_key FROM upd u;
    END IF;

    -- When a rate window (the queue's, or a waiting partition's) holds waiting rows back, the
    -- moment it lets the next one in.
    IF lim.rate_limit IS NOT NULL AND cardinality(parts) > 0
       AND EXISTS (SELECT 1 FROM dbos.workflow_status w WHERE w.queue_name = p_queue AND w.application_version = p_version
                                   AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL
                                   AND w.wait_kind IS NULL AND w.status IN ('ENQUEUED', 'PENDING')) THEN
        next_at := dbos.kodo_rate_reopen(p_queue, NULL, lim.rate_limit, lim.rate_period_ms, p_now);
    END IF;
    IF cardinality(parts) > 0 AND (lim.partition_rate_limit IS NOT NULL OR EXISTS (
            SELECT 1 FROM dbos.queue_partition_limits o
            WHERE o.queue_name = p_queue AND o.rate_limit IS NOT NULL)) THEN
        SELECT min(dbos.kodo_rate_reopen(p_queue, q.part, q.rate, q.period, p_now)) INTO reopen
        FROM (
            SELECT x.part, coalesce(o.rate_limit, lim.partition_rate_limit) AS rate,
                   coalesce(o.rate_period_ms, lim.partition_rate_period_ms) AS period
            FROM unnest(parts) AS x(part)
            LEFT JOIN dbos.queue_partition_limits o ON o.queue_name = p_queue AND o.partition_key = x.part
        ) q
        WHERE q.rate IS NOT NULL
          -- still waiting after this admission
          AND EXISTS (SELECT 1 FROM dbos.workflow_status w
                      WHERE w.queue_name = p_queue AND w.application_version = p_version
                                   AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL
                                   AND w.wait_kind IS NULL AND w.status IN ('ENQUEUED', 'PENDING') AND coalesce(w.queue_partition_key, '') = q.part);
        IF reopen IS NOT NULL AND (next_at IS NULL OR reopen < next_at) THEN
            next_at := reopen;
        END IF;
    END IF;
    IF cardinality(parts) = 0 THEN
        next_at := NULL;  -- nothing waits: no window to wait for
    END IF;
    UPDATE dbos.queue_limits l SET next_window_at_epoch_ms = next_at
    WHERE l.queue_name = p_queue AND l.next_window_at_epoch_ms IS DISTINCT FROM next_at;
    IF next_at IS NOT NULL AND FOUND THEN
        PERFORM pg_notify('kodo_timer', next_at::text);
    END IF;
END
$fn$;

-- Admission of a row about to be inserted (a start, a child): true when it may be inserted admitted,
-- which it then is, by the same statement (kodo/db/queries/workflows.sql insert_workflow_admitted):
-- one statement, and no second version of the row. It may when nothing of the queue (this version)
-- waits and every budget (the queue's and the partition's caps and windows) has room for one more;
-- otherwise the row is inserted waiting and dbos.kodo_admit, with the row as its hint, decides in
-- its turn (fairly, with whatever else waits). Under the queue's admission lock, as kodo_admit; the
-- row's slot and its rate count are logged by the insert's trigger (dbos.kodo_slot_delta).
CREATE OR REPLACE FUNCTION dbos.kodo_admit_new(p_queue text, p_version text, p_part text, p_now bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
    lim dbos.queue_limits%ROWTYPE;
    o dbos.queue_partition_limits%ROWTYPE;
    conc integer;
    rate integer;
    period bigint;
BEGIN
    SELECT * INTO lim FROM dbos.queue_limits l WHERE l.queue_name = p_queue;
    IF NOT FOUND THEN
        RETURN false;  -- unlimited: rows are claimable without admission
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('kodo.admit:' || p_queue, 0));
    IF EXISTS (SELECT 1 FROM dbos.workflow_status w
               WHERE w.queue_name = p_queue AND w.application_version = p_version
                 AND w.admitted_at_epoch_ms IS NULL AND w.executor_id IS NULL AND w.wait_kind IS NULL
                 AND w.status IN ('ENQUEUED', 'PENDING')) THEN
        RETURN false;  -- others wait: kodo_admit shares the budget among them
    END IF;
    PERFORM dbos.kodo_fold_counts(p_queue, p_now,
                                  greatest(coalesce(lim.rate_period_ms, 0), coalesce(lim.partition_rate_period_ms, 0)));
    IF lim.concurrency IS NOT NULL AND lim.concurrency <= (
            SELECT coalesce(sum(s.held), 0) FROM dbos.queue_slots s WHERE s.queue_name = p_queue) THEN
        RETURN false;
    END IF;
    IF lim.rate_limit IS NOT NULL
       AND lim.rate_limit <= dbos.kodo_rate_used(p_queue, NULL, lim.rate_period_ms, p_now) THEN
        RETURN false;
    END IF;
    SELECT * INTO o FROM dbos.queue_partition_limits x WHERE x.queue_name = p_queue AND x.partition_key = p_part;
    conc := coalesce(o.concurrency, lim.partition_concurrency);
    IF conc IS NOT NULL AND conc <= coalesce((
            SELECT s.held FROM dbos.queue_slots s WHERE s.queue_name = p_queue AND s.partition_key = p_part), 0) THEN
        RETURN false;
    END IF;
    rate := coalesce(o.rate_limit, lim.partition_rate_limit);
    period := coalesce(o.rate_period_ms, lim.partition_rate_period_ms);
    IF rate IS NOT NULL AND rate <= dbos.kodo_rate_used(p_queue, p_part, period, p_now) THEN
        RETURN false;
    END IF;
    RETURN true;
END
$fn$;

-- The per-worker caps, checked by a claim (kodo/db/queries/workflows.sql claim_workflow) before it
-- takes the lease: the leases worker node p_node holds on the row's queue, and on its partition,
-- are counted under a lock of that node and queue (so its processes cannot overspend the cap
-- together). At the cap, an admitted row nobody holds gives its slot back (it is admitted again,
-- for any worker, when a slot frees) and the claim does not happen.
CREATE OR REPLACE FUNCTION dbos.kodo_worker_gate(p_workflow text, p_node text, p_now bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    q text;
    part text;
    wc integer;
    pwc integer;
    n bigint;
BEGIN
    SELECT w.queue_name, coalesce(w.queue_partition_key, '') INTO q, part
    FROM dbos.workflow_status w WHERE w.workflow_uuid = p_workflow;
    IF NOT FOUND THEN
        RETURN true;
    END IF;
    SELECT l.worker_concurrency, coalesce(o.worker_concurrency, l.partition_worker_concurrency)
    INTO wc, pwc
    FROM dbos.queue_limits l
    LEFT JOIN dbos.queue_partition_limits o ON o.queue_name = l.queue_name AND o.partition_key = part
    WHERE l.queue_name = q;
    IF wc IS NULL AND pwc IS NULL THEN
        RETURN true;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('kodo.node:' || p_node || ':' || q, 0));
    IF wc IS NOT NULL THEN
        SELECT count(*) INTO n FROM dbos.workflow_status w
        WHERE w.executor_node = p_node AND w.queue_name = q AND w.executor_id IS NOT NULL
          AND w.lease_until_epoch_ms > p_now AND w.workflow_uuid <> p_workflow;
    END IF;
    IF wc IS NULL OR n < wc THEN
        IF pwc IS NULL THEN
            RETURN true;
        END IF;
        SELECT count(*) INTO n FROM dbos.workflow_status w
        WHERE w.executor_node = p_node AND w.queue_name = q AND w.executor_id IS NOT NULL
          AND coalesce(w.queue_partition_key, '') = part
          AND w.lease_until_epoch_ms > p_now AND w.workflow_uuid <> p_workflow;
        IF n < pwc THEN
            RETURN true;
        END IF;
    END IF;
    UPDATE dbos.workflow_status w SET admitted_at_epoch_ms = NULL, published_at_epoch_ms = p_now
    WHERE w.workflow_uuid = p_workflow AND w.executor_id IS NULL AND w.admitted_at_epoch_ms IS NOT NULL;
    RETURN false;
END
$fn$;
