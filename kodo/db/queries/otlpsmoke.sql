-- The OTLP smoke (`mise run otlp:smoke`, kodo.demo.otlpsmoke): one run whose one step records the
-- trace and span ids of its span in app.run_steps (step OTLPSmokeST).

-- name: otlp_smoke_intent
INSERT INTO app.intents (id, goal, payload) VALUES (%(intent_id)s, 'otlp smoke', '{}'::jsonb)
ON CONFLICT (id) DO NOTHING

-- name: otlp_smoke_run
INSERT INTO app.runs (id, intent_id, workflow_id, status) VALUES (%(run_id)s, %(intent_id)s, %(workflow_id)s, 'running')
ON CONFLICT (id) DO NOTHING

-- name: otlp_smoke_step
INSERT INTO app.run_steps (run_id, step_id, phase, output, trace_id, span_id, started_at, finished_at, attempt)
VALUES (%(run_id)s, 'OTLPSmokeST', 'otlp-smoke', '{"attempt": 1}'::jsonb, %(trace_id)s, %(span_id)s, now(), now(), 1)
ON CONFLICT (run_id, step_id, attempt) DO NOTHING

-- name: otlp_smoke_finish
UPDATE app.runs SET status = 'succeeded', last_step = 'OTLPSmokeST', updated_at = now() WHERE id = %(run_id)s

-- name: otlp_smoke_read
SELECT trace_id, span_id FROM app.run_steps WHERE run_id = %(run_id)s AND step_id = 'OTLPSmokeST'
