"""The Celery edge: the app, its one task, and the worker lifecycle. No business logic here."""
