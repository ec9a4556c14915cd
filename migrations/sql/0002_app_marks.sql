-- Product tables used by the durability proofs (schema app). Idempotent.
CREATE SCHEMA IF NOT EXISTS app;

CREATE TABLE IF NOT EXISTS app.marks (
    run_id     text NOT NULL,
    step       text NOT NULL CHECK (step IN ('s1', 's2')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step)
);

CREATE TABLE IF NOT EXISTS app.workflow_runs (
    workflow_id text PRIMARY KEY,
    step1_done  boolean NOT NULL DEFAULT false,
    step2_done  boolean NOT NULL DEFAULT false,
    completed   boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO app.marks (run_id, step) VALUES ('seed_sentinel', 's1'), ('seed_sentinel', 's2')
    ON CONFLICT DO NOTHING;
INSERT INTO app.workflow_runs (workflow_id, step1_done, step2_done, completed)
    VALUES ('seed_sentinel', true, true, true) ON CONFLICT DO NOTHING;
