"""SQL lives in named files, and each named query is used; the deploy files agree with each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kodo.db import queries

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("kodo", "workers", "ops", "tests")


def _python_sources() -> str:
    return "\n".join(p.read_text() for d in CODE_DIRS for p in (REPO / d).rglob("*.py"))


def test_every_query_is_used_and_every_used_query_exists() -> None:
    used = set(re.findall(r'Q\["(\w+)"\]', _python_sources()))
    defined = set(queries.Q)
    assert used - defined == set(), "code names a query that no .sql file defines"
    assert defined - used == set(), "a .sql file defines a query nothing uses"


def test_parser_rejects_duplicates_and_empty_blocks() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        queries.parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")
    with pytest.raises(ValueError, match="empty"):
        queries.parse("-- name: a\n-- only a description\n")
    assert queries.parse("-- name: a\n-- what it does\nSELECT 1\n") == {"a": "SELECT 1"}


def test_no_sql_strings_outside_the_query_files() -> None:
    sql_call = re.compile(r"""\.execute\(\s*["'](?:SELECT|INSERT|UPDATE|DELETE)\b""")
    offenders = [
        str(p.relative_to(REPO))
        for d in ("kodo", "workers")
        for p in (REPO / d).rglob("*.py")
        if sql_call.search(p.read_text()) and p.name != "migrate.py"
    ]
    assert offenders == []


def test_migration_files_are_numbered_and_paired_with_revisions() -> None:
    sql_files = sorted((REPO / "migrations" / "sql").glob("*.sql"))
    revisions = sorted((REPO / "migrations" / "versions").glob("[0-9]*.py"))
    assert [p.name[:4] for p in sql_files] == [p.name[:4] for p in revisions]
    for p in sql_files:
        assert re.fullmatch(r"\d{4}_[a-z0-9_]+\.sql", p.name), p.name


def _procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line and not line.startswith("#"))


def test_compose_runs_the_procfile_processes() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"db", "redis", "api", "intent-worker", "sbx-worker", "reconciler", "flower"} <= set(services)
    procfile = _procfile()
    assert set(procfile) == {"api", "intent", "sbx", "reconciler", "flower"}
    pairs = {
        "api": "api",
        "intent-worker": "intent",
        "sbx-worker": "sbx",
        "reconciler": "reconciler",
        "flower": "flower",
    }
    for service, proc in pairs.items():
        # Same program and flags; values (ports, counts, bind addresses) may differ.
        words = [w for w in services[service]["command"] if not re.search(r"[0-9=]", w)]
        line = procfile[proc]
        missing = [w for w in words if w not in line]
        assert missing == [], f"compose {service} has {missing}, Procfile {proc} is: {line}"
    for queue in ("intentQ", "sbxQ"):
        assert any(queue in " ".join(s.get("command", [])) for s in services.values())


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (REPO / "ops" / "docker" / "Dockerfile").read_text()
    for pkg in ("kodo", "workers", "ops", "migrations", "pyproject.toml"):
        assert f"COPY {pkg}" in dockerfile


def test_only_the_config_module_reads_the_environment() -> None:
    """Settings are read once, in kodo/config.py: no other module of kodo or workers reads os.environ."""
    env_read = re.compile(r"\bos\.(?:environ|getenv)\b|\bfrom os import\b[^\n]*\b(?:environ|getenv)\b")
    offenders = [
        str(p.relative_to(REPO))
        for d in ("kodo", "workers")
        for p in (REPO / d).rglob("*.py")
        if env_read.search(p.read_text()) and p != REPO / "kodo" / "config.py"
    ]
    assert offenders == []
