"""Settings parsing follows the original's rules (no services needed)."""

from __future__ import annotations

import pytest

from kodo import faults
from kodo.config import FaultSettings, Settings, fault_settings, workflow_modules_from_env
from kodo.errors import ConfigError


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/app_local"
    assert s.broker_url == "redis://127.0.0.1:6379/0"
    assert (s.app_version, s.port, s.admin_port, s.wf_sleep_ms) == ("v1", 3001, 3002, 5000)
    assert s.heartbeat_ms == s.lease_ms // 4


def test_dbos_appversion_is_honoured_and_kodo_name_wins() -> None:
    assert Settings.from_env({"DBOS__APPVERSION": "demo-v1"}).app_version == "demo-v1"
    both = {"DBOS__APPVERSION": "demo-v1", "KODO_APP_VERSION": "native"}
    assert Settings.from_env(both).app_version == "native"


def test_empty_means_default_and_db_parts_compose_the_url() -> None:
    s = Settings.from_env(
        {"PORT": "", "DB_HOST": "db", "DB_PORT": "6543", "DB_PASSWORD": "p w", "APP_DB_NAME": "x"}
    )
    assert s.port == 3001
    assert s.database_url == "postgresql://postgres:p%20w@db:6543/x"
    assert Settings.from_env({"KODO_DATABASE_URL": "postgresql://u@h/d"}).database_url == "postgresql://u@h/d"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "30x1"}, "invalid integer env value: 30x1"),
        ({"WF_SLEEP_MS": "1.5"}, "invalid integer env value: 1.5"),
        ({"KODO_EMBEDDED_RECONCILER": "yes"}, "invalid boolean env value: yes"),
        ({"KODO_LEASE_MS": "10"}, "invalid integer env value: 10"),
    ],
)
def test_bad_values_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(("raw", "expected"), [("TRUE", True), ("1", True), ("false", False), ("0", False)])
def test_booleans(raw: str, expected: bool) -> None:
    assert Settings.from_env({"KODO_EMBEDDED_RECONCILER": raw}).embedded_reconciler is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ()),
        ("", ()),
        ("  ", ()),
        ("a.b", ("a.b",)),
        (" a.b , ,c ,", ("a.b", "c")),
    ],
)
def test_workflow_modules_are_a_comma_list_without_blanks(raw: str | None, expected: tuple[str, ...]) -> None:
    env = {} if raw is None else {"KODO_WORKFLOW_MODULES": raw}
    assert Settings.from_env(env).workflow_modules == expected
    assert workflow_modules_from_env(env) == expected


def test_workflow_modules_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KODO_WORKFLOW_MODULES", "x.y,z")
    assert workflow_modules_from_env() == ("x.y", "z")
    assert Settings.from_env().workflow_modules == ("x.y", "z")


def test_fault_settings_are_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fault_settings({}) is None
    assert fault_settings({"KODO_FAULTS": ""}) == FaultSettings(spec=None, marker_file=None)
    env = {"KODO_FAULTS": " step.committed@mark ", "KODO_FAULT_FILE": "/tmp/f"}
    assert fault_settings(env) == FaultSettings(spec="step.committed@mark", marker_file="/tmp/f")
    monkeypatch.delenv("KODO_FAULTS", raising=False)
    assert fault_settings() is None
    monkeypatch.setenv("KODO_FAULTS", "step.started")
    assert fault_settings() == FaultSettings(spec="step.started", marker_file=None)


def test_an_unarmed_fault_point_returns_and_an_unknown_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KODO_FAULTS", "step.committed@other")
    faults.reached(faults.STEP_COMMITTED, "mark")  # armed for another name: returns at once
    faults.reached(faults.STEP_STARTED, "other")  # another point: returns at once
    monkeypatch.setenv("KODO_FAULTS", "no.such.point")
    with pytest.raises(ValueError, match=r"unknown fault point 'no\.such\.point'"):
        faults.reached(faults.STEP_STARTED, "x")


def test_schedule_tick_interval() -> None:
    assert Settings.from_env({}).schedule_tick_ms == 30_000
    assert Settings.from_env({"KODO_SCHEDULE_TICK_MS": "0"}).schedule_tick_ms == 0  # off
    assert Settings.from_env({"KODO_SCHEDULE_TICK_MS": "1000"}).schedule_tick_ms == 1000
    for raw, message in [
        ("500", r"invalid integer env value: 500 \(KODO_SCHEDULE_TICK_MS must be 0 \(off\) or >= 1000\)"),
        ("-1", "invalid integer env value: -1"),
        ("30s", "invalid integer env value: 30s"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Settings.from_env({"KODO_SCHEDULE_TICK_MS": raw})
