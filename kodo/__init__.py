"""kodo: a durable workflow service (Flask API, Celery workers, Postgres checkpoints).

Importing this package has no side effects. `celery -A kodo` finds the Celery app in `kodo.celery`.
"""

__version__ = "0.1.0"
