"""Settings, read once from the environment. Owns every environment variable kodo reads.

Parsing rules follow the original: integers must be whole numbers, booleans are true/1/false/0,
and an empty string means "use the default". The only module that reads `os.environ`: everything else
takes a `Settings` (or, for what must be read at call time, a function of this module). Must not
import flask, celery or psycopg.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from kodo.errors import ConfigError


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int | None = None) -> int:
    """Read an integer variable; raise ConfigError('invalid integer env value: X') when malformed."""
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ConfigError(f"invalid integer env value: {raw}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"invalid integer env value: {raw} ({name} must be >= {minimum})")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Read a boolean variable (true/1/false/0, any case)."""
    raw = _raw(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ConfigError(f"invalid boolean env value: {raw}")


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _raw(env, name)
    return default if raw is None else raw


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """Read a variable that must be one of `choices` (exact, lower case)."""
    value = env_str(env, name, default)
    if value not in choices:
        raise ConfigError(f"invalid {name}: {value} (expected one of {', '.join(choices)})")
    return value


def env_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Read a comma list; items are stripped and blank items dropped (unset or empty: `()`)."""
    raw = _raw(env, name)
    if raw is None:
        return ()
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _optional_int(env: Mapping[str, str], name: str) -> int | None:
    return None if _raw(env, name) is None else env_int(env, name, 0)


def _trace_base_url(env: Mapping[str, str]) -> str | None:
    """TRACE_BASE_URL must be an http(s) URL; `{traceId}`/`{spanId}` placeholders are allowed."""
    raw = _raw(env, "TRACE_BASE_URL")
    if raw is None:
        return None
    if not raw.startswith(("http://", "https://")) or len(raw.split("://", 1)[1]) == 0:
        raise ConfigError(f"invalid TRACE_BASE_URL: {raw} (must be an http(s) URL)")
    return raw


def _database_url(env: Mapping[str, str]) -> str:
    explicit = _raw(env, "KODO_DATABASE_URL")
    if explicit is not None:
        return explicit
    host = env_str(env, "DB_HOST", "127.0.0.1")
    port = env_int(env, "DB_PORT", 5432, minimum=1)
    user = env_str(env, "DB_USER", "postgres")
    password = _raw(env, "DB_PASSWORD")
    name = env_str(env, "APP_DB_NAME", "app_local")
    auth = quote(user) if password is None else f"{quote(user)}:{quote(password)}"
    return f"postgresql://{auth}@{host}:{port}/{name}"


@dataclass(frozen=True)
class Settings:
    """Every knob kodo reads, resolved once. Build with `Settings.from_env()`."""

    database_url: str
    broker_url: str
    app_version: str
    port: int
    admin_port: int
    lease_ms: int
    reconcile_interval_ms: int
    republish_after_ms: int
    db_pool_max: int
    embedded_reconciler: bool
    wf_sleep_ms: int
    boundary_fresh_ms: int
    # The intent product (contract-api §16).
    oc_mode: str = "replay"
    sbx_mode: str = "mock"
    sbx_provider: str = "e2b"
    sbx_alt_provider_enabled: bool = False
    sbx_queue_partition: bool = True
    sbx_default_timeout_ms: int = 300_000
    sbx_default_net: bool = False
    chaos_sleep_execute_ms: int = 0
    trace_base_url: str | None = None
    random_seed: int | None = None
    # Extra modules whose import registers workflows (the defaults are kodo.runtime's).
    workflow_modules: tuple[str, ...] = ()

    @property
    def heartbeat_ms(self) -> int:
        """Leases are renewed four times per lease period, so one missed beat never loses a lease."""
        return max(self.lease_ms // 4, 50)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        e = _environ(env)
        version = _raw(e, "KODO_APP_VERSION") or _raw(e, "DBOS__APPVERSION") or "v1"
        return cls(
            database_url=_database_url(e),
            broker_url=env_str(e, "KODO_BROKER_URL", "redis://127.0.0.1:6379/0"),
            app_version=version,
            port=env_int(e, "PORT", 3001, minimum=1),
            admin_port=env_int(e, "ADMIN_PORT", 3002, minimum=1),
            lease_ms=env_int(e, "KODO_LEASE_MS", 5000, minimum=200),
            reconcile_interval_ms=env_int(e, "KODO_RECONCILE_MS", 500, minimum=20),
            republish_after_ms=env_int(e, "KODO_REPUBLISH_AFTER_MS", 10000, minimum=100),
            db_pool_max=env_int(e, "KODO_DB_POOL_MAX", 10, minimum=1),
            embedded_reconciler=env_bool(e, "KODO_EMBEDDED_RECONCILER", True),
            wf_sleep_ms=env_int(e, "WF_SLEEP_MS", 5000, minimum=0),
            boundary_fresh_ms=env_int(e, "KODO_BOUNDARY_FRESH_MS", 100, minimum=0),
            oc_mode=env_choice(e, "OC_MODE", "replay", ("replay", "record", "live")),
            sbx_mode=env_choice(e, "SBX_MODE", "mock", ("mock", "live")),
            sbx_provider=env_choice(e, "SBX_PROVIDER", "e2b", ("e2b", "microsandbox")),
            sbx_alt_provider_enabled=env_bool(e, "SBX_ALT_PROVIDER_ENABLED", False),
            sbx_queue_partition=env_bool(e, "SBX_QUEUE_PARTITION", True),
            sbx_default_timeout_ms=env_int(e, "SBX_DEFAULT_TIMEOUT_MS", 300_000, minimum=1),
            sbx_default_net=env_bool(e, "SBX_DEFAULT_NET", False),
            chaos_sleep_execute_ms=env_int(e, "CHAOS_SLEEP_EXECUTE", 0, minimum=0),
            trace_base_url=_trace_base_url(e),
            random_seed=_optional_int(e, "RANDOM_SEED"),
            workflow_modules=workflow_modules_from_env(e),
        )


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def workflow_modules_from_env(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """KODO_WORKFLOW_MODULES: extra modules (comma list) whose import registers workflows."""
    return env_list(_environ(env), "KODO_WORKFLOW_MODULES")


@dataclass(frozen=True)
class FaultSettings:
    """The crash-test fault points (`kodo.faults`): KODO_FAULTS and KODO_FAULT_FILE, unparsed."""

    spec: str | None  # e.g. "step.committed@mark,step.started"; None when unset or blank
    marker_file: str | None  # where a reached point is written before the process hangs


def fault_settings(env: Mapping[str, str] | None = None) -> FaultSettings | None:
    """The fault settings, read now (not once): None when KODO_FAULTS is not set at all.

    Read at every fault point rather than at start-up, so a process sees the faults its environment
    has when the point is reached (a test arms a worker subprocess through its environment).
    """
    e = _environ(env)
    if "KODO_FAULTS" not in e:
        return None
    return FaultSettings(spec=_raw(e, "KODO_FAULTS"), marker_file=_raw(e, "KODO_FAULT_FILE"))
