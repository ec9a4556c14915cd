"""End-to-end fixtures: the real system started as processes, the way `mise run start` runs it.

* `live_system` (module scope): the monolith (reconciler + admin, API, intent worker, sbx worker),
  one application version per test module, killed at the module's end.
* `make_system` (function scope): a factory for systems a test assembles itself (the split topology:
  `make_system("shim").start("api")`, then `.start_workers()`); all killed at the test's end.
* `browser` (module scope): headless Debian chromium driven by Playwright (the UI tests).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.e2e.live import LiveSystem

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; the dev bootstrap installs it (never a download)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: ops/test.sh's bootstrap installs it (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _tag(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name.rsplit("/", 1)[-1].removesuffix(".py"))[:30].strip("-")


@pytest.fixture(scope="module")
def live_system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveSystem]:
    tag = _tag(request.node.name)
    system = LiveSystem(tmp_path_factory.mktemp(f"live-{tag}"), tag)
    try:
        system.start()
        yield system
    finally:
        system.close()


@pytest.fixture
def make_system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., LiveSystem]]:
    made: list[LiveSystem] = []

    def factory(tag: str = "", **env: str) -> LiveSystem:
        name = _tag(f"{request.node.name}-{tag}" if tag else request.node.name)
        system = LiveSystem(tmp_path_factory.mktemp(f"sys-{name}"), name, env)
        made.append(system)
        return system

    try:
        yield factory
    finally:
        for system in made:
            system.close()
