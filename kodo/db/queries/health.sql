-- Liveness probes of the API and the admin server.

-- name: health_ping
-- The database answers (GET /healthz on both servers).
SELECT 1
