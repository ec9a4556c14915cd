-- name: insert_mark
-- Crash-demo step effect: one mark per (run, step), exactly once.
INSERT INTO app.marks (run_id, step) VALUES (%(run_id)s, %(step)s) ON CONFLICT DO NOTHING

-- name: count_marks
-- Marks of one run, by step.
SELECT step, count(*) AS n FROM app.marks WHERE run_id = %(run_id)s GROUP BY step
