"""Every module of kodo and workers imports alone, in a fresh interpreter.

An import cycle only shows when a module is the first one imported (`import kodo.intent.service`
used to fail because it reached back into kodo.api), so each module gets its own `python -c
"import <module>"`. The modules are found on disk (nothing is imported to find them) and checked
concurrently. The layer rules themselves are import-linter contracts (`lint-imports` in ops/test.sh).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("kodo", "workers")
TIMEOUT_S = 60


def module_names() -> list[str]:
    """Dotted names of every module and package under PACKAGES (directories with `__init__.py`)."""
    names: list[str] = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if not all((REPO / Path(*parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))):
                continue  # not inside a package (a stray script)
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _import_alone(module: str) -> tuple[str, str | None]:
    """(module, None) when it imports cleanly, else (module, the last lines of its traceback)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return module, f"timed out after {TIMEOUT_S}s"
    if proc.returncode == 0:
        return module, None
    return module, "\n".join(proc.stderr.strip().splitlines()[-3:])


def test_module_names_cover_the_packages() -> None:
    names = module_names()
    assert {"kodo", "kodo.api", "kodo.intent.service", "workers.celery_app"} <= set(names)
    assert len(names) == len(set(names))


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(_import_alone, module_names()))
    failures = {module: error for module, error in results if error is not None}
    assert not failures, "\n\n".join(f"import {m}:\n{e}" for m, e in failures.items())
