"""Queue names: the one definition (Celery routing, the workflows' queues and the queue policy).

A shared low-level module like `kodo.config` and `kodo.errors`: every layer may import it, and it
imports nothing of kodo, Flask, Celery or psycopg.
"""

from __future__ import annotations

from typing import Literal, get_args

INTENT_QUEUE = "intentQ"  # parent workflows (IntentWorkflow.run)
SBX_QUEUE = "sbxQ"  # fan-out sandbox tasks (IntentWorkflow.taskWorkflow)
CONTROL_QUEUE = "controlQ"  # control and demo workflows (repair, crash demo)
COMPILE_QUEUE = "compileQ"  # a legacy recipe queue: named by requests, served by no worker

# The queues kodo's workers consume (`celery -A kodo worker -Q ...`).
WORKER_QUEUES = (INTENT_QUEUE, SBX_QUEUE, CONTROL_QUEUE)

# The values `RunRequest.queueName` accepts (contract-api §3.2), in the contract's order; the queue
# policy then admits only intentQ for a parent start (§5.2).
QueueName = Literal["compileQ", "sbxQ", "controlQ", "intentQ"]
REQUESTABLE_QUEUES: tuple[str, ...] = get_args(QueueName)
