-- name: insert_notification
-- Durable message to a workflow's topic; an idempotency key (message_uuid) makes a re-send a no-op.
INSERT INTO dbos.notifications (message_uuid, destination_uuid, topic, message, created_at_epoch_ms)
VALUES (%(message_uuid)s, %(destination)s, %(topic)s, %(message)s, %(now)s)
ON CONFLICT (message_uuid) DO NOTHING
RETURNING message_uuid

-- name: wake_receiver
-- Wake the destination if it is parked on this topic. The caller holds its row lock (lock_workflow).
UPDATE dbos.workflow_status SET wait_kind = NULL, wait_key = NULL, wake_at_epoch_ms = NULL,
    published_at_epoch_ms = %(now)s, updated_at = %(now)s
WHERE workflow_uuid = %(destination)s AND status = 'PENDING' AND wait_kind = 'recv' AND wait_key = %(topic)s
RETURNING workflow_uuid, queue_name, name, queue_partition_key

-- name: take_message
-- Consume the oldest unconsumed message on a topic (exactly once: the caller holds its own row lock).
UPDATE dbos.notifications SET consumed_at_epoch_ms = %(now)s, consumed_by_function_id = %(function_id)s
WHERE message_uuid = (
    SELECT message_uuid FROM dbos.notifications
    WHERE destination_uuid = %(workflow_uuid)s AND topic = %(topic)s AND consumed_at_epoch_ms IS NULL
    ORDER BY seq LIMIT 1)
RETURNING message
