"""Lets `celery -A kodo worker` find the app: Celery looks for a `celery` module in the package."""

from workers.celery_app import app

__all__ = ["app"]
