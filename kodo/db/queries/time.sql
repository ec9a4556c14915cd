-- The product's time primitives (kodo/intent/timewf.py): the durable sleep behind POST /api/ops/sleep
-- and the scheduled tick. Their intent and run rows are synthetic (contract-internals §2.1-§2.2).

-- name: time_ensure_intent
-- A synthetic intent (`it-utility-<wf>` of a sleep, `scheduled-ops` of the ticks); kept if present.
INSERT INTO app.intents (id, goal, payload) VALUES (%(id)s, %(goal)s, %(payload)s)
ON CONFLICT (id) DO NOTHING

-- name: time_ensure_run
-- A synthetic run with id = workflow_id; kept if present (or if either key is taken: see time_run_owner).
INSERT INTO app.runs (id, intent_id, workflow_id, status)
VALUES (%(id)s, %(intent_id)s, %(id)s, %(status)s)
ON CONFLICT DO NOTHING

-- name: time_run_owner
-- The runs holding an id as their run id or their workflow id (a sleep owns its id only when the one
-- row is its own: id = workflow_id).
SELECT id, workflow_id, intent_id FROM app.runs WHERE id = %(id)s OR workflow_id = %(id)s
