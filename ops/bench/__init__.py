"""Benchmarks. `python -m ops.bench.engine`: kodo vs DBOS Transact (queue mode) vs raw Celery."""
