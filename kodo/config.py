"""Settings, read once from the environment. Owns every environment variable kodo reads.

Parsing rules follow the original: integers must be whole numbers, booleans are true/1/false/0,
and an empty string means "use the default". The only module that reads `os.environ`: everything else
takes a `Settings` (or, for what must be read at call time, a function of this module). Must not
import flask, celery or psycopg.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from kodo.errors import ConfigError
from kodo.queues import INTENT_QUEUE, SBX_QUEUE


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
    filled = raw.replace("{traceId}", "trace").replace("{spanId}", "span")
    if not _is_http_url(filled) or any(c in filled for c in "{} "):
        raise ConfigError(
            f"invalid trace base url env value: {raw} (TRACE_BASE_URL must be an http(s) URL; "
            "the only placeholders are {traceId} and {spanId})"
        )
    return raw


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    raw = _raw(env, name)
    if raw is not None and (not raw.startswith(("http://", "https://")) or not raw.split("://", 1)[1]):
        raise ConfigError(f"invalid {name}: {raw} (must be an http(s) URL)")
    return raw.rstrip("/") if raw is not None else None


def _oc_base_url(env: Mapping[str, str]) -> str:
    """OC_BASE_URL, else http://127.0.0.1:<OC_SERVER_PORT> (the daemon `oc:daemon:up` starts)."""
    port = env_int(env, "OC_SERVER_PORT", 4096, minimum=1)
    return _http_url(env, "OC_BASE_URL") or f"http://127.0.0.1:{port}"


# The replay compiler's recorded answers ship with the package (record mode writes here too).
DEFAULT_OC_FIXTURE_DIR = str(Path(__file__).resolve().parent / "intent" / "fixtures" / "oc")
SCHEDULE_TICK_MIN_MS = 1000


def _schedule_tick_ms(env: Mapping[str, str]) -> int:
    """KODO_SCHEDULE_TICK_MS: the scheduled tick's interval, 0 (off) or at least 1000 ms."""
    value = env_int(env, "KODO_SCHEDULE_TICK_MS", 30_000, minimum=0)
    if 0 < value < SCHEDULE_TICK_MIN_MS:
        raise ConfigError(
            f"invalid integer env value: {value} (KODO_SCHEDULE_TICK_MS must be 0 (off) "
            f"or >= {SCHEDULE_TICK_MIN_MS})"
        )
    return value


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
class Observability:
    """Tracing (OpenTelemetry, OTLP/HTTP), metrics (Prometheus) and Flower. See `kodo.telemetry`."""

    traces_endpoints: tuple[str, ...] = ()  # where spans are POSTed; empty: tracing is off
    logs_endpoints: tuple[str, ...] = ()  # where the structured step records are POSTed
    otlp_required: bool = False  # start-up probes every endpoint and stops if one does not answer
    service_name: str = "kodo"
    resource_attributes: tuple[tuple[str, str], ...] = ()
    metrics_dir: str | None = None  # prometheus_client's multiprocess directory (step histograms)
    flower_basic_auth: tuple[str, ...] = ()  # user:password pairs (never printed)
    flower_unauthenticated_api: bool = False

    @property
    def tracing(self) -> bool:
        return bool(self.traces_endpoints)


def _otlp_endpoints(env: Mapping[str, str], signal: str) -> tuple[str, ...]:
    """OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT (a comma list of full URLs, used as given), else
    OTEL_EXPORTER_OTLP_ENDPOINT (base URLs; `/v1/<signal>` appended, as the OTLP spec says)."""
    urls = env_list(env, f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or tuple(
        f"{base.rstrip('/')}/v1/{signal}" for base in env_list(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    for url in urls:
        if not _is_http_url(url):
            raise ConfigError(f"invalid OTLP endpoint URL: {url}")
    return urls


def _resource_attributes(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """OTEL_RESOURCE_ATTRIBUTES: `key=value,key=value` (values may be percent-encoded)."""
    pairs = []
    for item in env_list(env, "OTEL_RESOURCE_ATTRIBUTES"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid OTEL_RESOURCE_ATTRIBUTES item: {item} (expected key=value)")
        pairs.append((key.strip(), unquote(value.strip())))
    return tuple(pairs)


def _metrics_dir(env: Mapping[str, str]) -> str | None:
    raw = _raw(env, "PROMETHEUS_MULTIPROC_DIR")
    if raw is not None and not os.path.isdir(raw):
        raise ConfigError(f"invalid PROMETHEUS_MULTIPROC_DIR: {raw} (not an existing directory)")
    return raw


def _basic_auth(env: Mapping[str, str]) -> tuple[str, ...]:
    pairs = env_list(env, "FLOWER_BASIC_AUTH")
    for pair in pairs:
        user, sep, password = pair.partition(":")
        if not (user and sep and password):
            raise ConfigError("invalid FLOWER_BASIC_AUTH (expected user:password[,user:password])")
    return pairs


def observability_from_env(env: Mapping[str, str] | None = None) -> Observability:
    """The observability settings. Tracing is on when a traces endpoint is set (DBOS_ENABLE_OTLP=false
    turns it off). DBOS_ENABLE_OTLP=true needs both a traces and a logs endpoint; it and OTLP_REQUIRED=1
    make start-up probe the endpoints (`kodo.telemetry.setup`)."""
    e = _environ(env)
    enabled = None if _raw(e, "DBOS_ENABLE_OTLP") is None else env_bool(e, "DBOS_ENABLE_OTLP", False)
    traces, logs = _otlp_endpoints(e, "traces"), _otlp_endpoints(e, "logs")
    if enabled is False:
        traces, logs = (), ()
    if enabled and not (traces and logs):
        raise ConfigError(
            "OTLP enabled but missing OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
        )
    required = env_bool(e, "OTLP_REQUIRED", False) or bool(enabled)
    if required and not traces:
        raise ConfigError(
            "OTLP_REQUIRED is set but no OTLP endpoint is configured (set OTEL_EXPORTER_OTLP_ENDPOINT or "
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; DBOS_ENABLE_OTLP=false turns tracing off)"
        )
    return Observability(
        traces_endpoints=traces,
        logs_endpoints=logs,
        otlp_required=required,
        service_name=env_str(e, "OTEL_SERVICE_NAME", "kodo"),
        resource_attributes=_resource_attributes(e),
        metrics_dir=_metrics_dir(e),
        flower_basic_auth=_basic_auth(e),
        flower_unauthenticated_api=env_bool(e, "FLOWER_UNAUTHENTICATED_API", False),
    )


DEFAULT_MAX_BODY_BYTES = 1_048_576  # 1 MiB
MIN_API_TOKEN_CHARS = 16
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def _api_tokens(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """KODO_API_TOKENS: `name:token[,name:token]`, (name, token) pairs; unset or empty: `()` (off).

    A name is 1-64 characters of `[A-Za-z0-9._@-]` (it becomes the actor of ops audit rows); a token
    is at least 16 characters without whitespace or comma. Names and tokens are unique. An error names
    the item by its position and name, never its token."""
    raw = _raw(env, "KODO_API_TOKENS")
    if raw is None:
        return ()
    pairs: list[tuple[str, str]] = []
    for n, item in enumerate(raw.split(","), start=1):
        name, sep, token = item.strip().partition(":")
        where = f"item {n}" + (f" ({name!r})" if _TOKEN_NAME.fullmatch(name) else "")
        if not sep or not _TOKEN_NAME.fullmatch(name):
            raise ConfigError(
                f"invalid KODO_API_TOKENS: {where} must be name:token, the name 1-64 characters of "
                "[A-Za-z0-9._@-] (expected name:token[,name:token])"
            )
        if len(token) < MIN_API_TOKEN_CHARS or any(c.isspace() for c in token):
            raise ConfigError(
                f"invalid KODO_API_TOKENS: {where}: a token must be at least {MIN_API_TOKEN_CHARS} "
                "characters without whitespace"
            )
        if any(name == other for other, _ in pairs):
            raise ConfigError(f"invalid KODO_API_TOKENS: {where}: the name is given twice")
        if any(token == other for _, other in pairs):
            raise ConfigError(f"invalid KODO_API_TOKENS: {where}: its token is another name's too")
        pairs.append((name, token))
    return tuple(pairs)


@dataclass(frozen=True)
class Rate:
    """A rolling-window rate limit: at most `limit` admissions per `period_ms`."""

    limit: int
    period_ms: int

    def __str__(self) -> str:
        seconds = self.period_ms / 1000
        return f"{self.limit}/{seconds:g}s"


@dataclass(frozen=True)
class QueueLimits:
    """The flow control of one queue (admission, `kodo.workflow.admission`). None: no limit.

    Queue-wide: `concurrency` (workflows holding a slot: admitted and not parked or ended),
    `worker_concurrency` (leases one worker process group holds), `rate` (admissions per window).
    Per partition (`queuePartitionKey`; rows without one are one partition), the same three, which
    per-partition overrides (`kodo queue set Q --partition KEY`) replace for one key."""

    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate: Rate | None = None
    partition_concurrency: int | None = None
    partition_worker_concurrency: int | None = None
    partition_rate: Rate | None = None
    priority_enabled: bool = True

    @property
    def limited(self) -> bool:
        return any(
            v is not None
            for v in (
                self.concurrency,
                self.worker_concurrency,
                self.rate,
                self.partition_concurrency,
                self.partition_worker_concurrency,
                self.partition_rate,
            )
        )


def env_limit(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    """A limit: a whole number >= 1, or `none` (no limit); unset or empty: the default."""
    raw = _raw(env, name)
    if raw is None:
        return default
    if raw.lower() == "none":
        return None
    try:
        value = int(raw, 10)
    except ValueError:
        raise ConfigError(f"invalid {name}: {raw} (a whole number >= 1, or none)") from None
    if value < 1:
        raise ConfigError(f"invalid {name}: {raw} (a whole number >= 1, or none)")
    return value


def _rate(env: Mapping[str, str], prefix: str, default: int | None) -> Rate | None:
    limit = env_limit(env, f"{prefix}_RATE_LIMIT_PER_PERIOD", default)
    period_s = env_int(env, f"{prefix}_RATE_LIMIT_PERIOD_SEC", 60, minimum=1)
    return None if limit is None else Rate(limit, period_s * 1000)


def _queue_limits(env: Mapping[str, str], prefix: str, defaults: tuple[int | None, ...]) -> QueueLimits:
    """`<prefix>_*` as the original's partitioned queue counted them (per partition):
    CONCURRENCY, WORKER_CONCURRENCY and RATE_LIMIT_PER_PERIOD / RATE_LIMIT_PERIOD_SEC hold for each
    partition; `<prefix>_GLOBAL_*` the same three for the whole queue; PRIORITY_ENABLED."""
    conc, worker, rate = defaults
    return QueueLimits(
        concurrency=env_limit(env, f"{prefix}_GLOBAL_CONCURRENCY", None),
        worker_concurrency=env_limit(env, f"{prefix}_GLOBAL_WORKER_CONCURRENCY", None),
        rate=_rate(env, f"{prefix}_GLOBAL", None),
        partition_concurrency=env_limit(env, f"{prefix}_CONCURRENCY", conc),
        partition_worker_concurrency=env_limit(env, f"{prefix}_WORKER_CONCURRENCY", worker),
        partition_rate=_rate(env, prefix, rate),
        priority_enabled=env_bool(env, f"{prefix}_PRIORITY_ENABLED", True),
    )


def queue_limits_from_env(env: Mapping[str, str] | None = None) -> dict[str, QueueLimits]:
    """The default limits of sbxQ (the original's: 50 per partition, 10 per worker and partition,
    100 per 60 s per partition) and intentQ (none unless INTENT_QUEUE_* set them)."""
    e = _environ(env)
    return {
        SBX_QUEUE: _queue_limits(e, "SBX_QUEUE", (50, 10, 100)),
        INTENT_QUEUE: _queue_limits(e, "INTENT_QUEUE", (None, None, None)),
    }


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
    # The OpenCode compiler (contract-internals §7, §11): OC_MODE=live|record talk to OC_BASE_URL.
    oc_base_url: str = "http://127.0.0.1:4096"
    oc_server_host: str = "127.0.0.1"
    oc_server_port: int = 4096
    oc_timeout_ms: int = 300_000
    oc_strict_mode: bool = False
    oc_health_retries: int = 40
    oc_fixture_dir: str = DEFAULT_OC_FIXTURE_DIR
    test_seed: int = 424242
    sbx_mode: str = "mock"
    sbx_provider: str = "e2b"
    sbx_alt_provider_enabled: bool = False
    sbx_live_cmd: str = "echo sbx-live-stub"
    # SBX_PROVIDER=e2b: passed to the e2b SDK explicitly (None: the SDK's own default).
    e2b_api_key: str | None = None
    e2b_domain: str | None = None
    e2b_api_url: str | None = None
    e2b_sandbox_url: str | None = None
    # SBX_PROVIDER=local: limits of the subprocess besides the request's timeoutMs and limits.memMB.
    sbx_local_max_file_mb: int = 64
    sbx_local_max_procs: int = 256
    sbx_queue_partition: bool = True
    sbx_default_timeout_ms: int = 300_000
    sbx_default_net: bool = False
    chaos_sleep_execute_ms: int = 0
    trace_base_url: str | None = None
    random_seed: int | None = None
    # The scheduled tick (ScheduledOpsWorkflow.tick) every this many ms; 0 turns it off.
    schedule_tick_ms: int = 30_000
    # The largest request body the API reads (KODO_MAX_BODY_BYTES); a larger one is a 413.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    stream_max_s: int = 30  # the longest a run stream stays open (GET /api/runs/:wid/stream)
    # KODO_API_TOKENS: (name, token) pairs; set, the API's writes and ops routes need a bearer token.
    api_tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # Extra modules whose import registers workflows (the defaults are kodo.runtime's).
    workflow_modules: tuple[str, ...] = ()
    # The longest a database checkout waits (KODO_DB_POOL_TIMEOUT_MS): then the API answers 503
    # db_unavailable and a delivery is retried, instead of hanging while Postgres is away.
    db_pool_timeout_ms: int = 2000
    # The broker's connect and socket timeouts for a publish (KODO_PUBLISH_TIMEOUT_MS), with no retry
    # loop: with the broker down a start still answers at once (the reconciler publishes it later).
    publish_timeout_ms: int = 1000
    # Tracing, metrics and Flower (kodo.telemetry, workers.flower).
    observability: Observability = field(default_factory=Observability)
    # Flow control defaults (SBX_QUEUE_*, INTENT_QUEUE_*), written to dbos.queue_limits by every
    # reconciler at start-up unless an operator has set the queue (`kodo queue set`).
    queue_limits: dict[str, QueueLimits] = field(default_factory=dict)

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
            db_pool_timeout_ms=env_int(e, "KODO_DB_POOL_TIMEOUT_MS", 2000, minimum=50),
            publish_timeout_ms=env_int(e, "KODO_PUBLISH_TIMEOUT_MS", 1000, minimum=50),
            max_body_bytes=env_int(e, "KODO_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1),
            stream_max_s=env_int(e, "KODO_STREAM_MAX_S", 30, minimum=1),
            api_tokens=_api_tokens(e),
            embedded_reconciler=env_bool(e, "KODO_EMBEDDED_RECONCILER", True),
            wf_sleep_ms=env_int(e, "WF_SLEEP_MS", 5000, minimum=0),
            boundary_fresh_ms=env_int(e, "KODO_BOUNDARY_FRESH_MS", 100, minimum=0),
            oc_mode=env_choice(e, "OC_MODE", "replay", ("replay", "record", "live")),
            oc_base_url=_oc_base_url(e),
            oc_server_host=env_str(e, "OC_SERVER_HOST", "127.0.0.1"),
            oc_server_port=env_int(e, "OC_SERVER_PORT", 4096, minimum=1),
            oc_timeout_ms=env_int(e, "OC_TIMEOUT_MS", 300_000, minimum=1),
            oc_strict_mode=env_bool(e, "OC_STRICT_MODE", False),
            oc_health_retries=env_int(e, "OC_HEALTH_RETRIES", 40, minimum=1),
            oc_fixture_dir=env_str(e, "OC_FIXTURE_DIR", DEFAULT_OC_FIXTURE_DIR),
            test_seed=env_int(e, "TEST_SEED", 424242),
            sbx_mode=env_choice(e, "SBX_MODE", "mock", ("mock", "live")),
            sbx_provider=env_choice(e, "SBX_PROVIDER", "e2b", ("e2b", "microsandbox", "local")),
            sbx_alt_provider_enabled=env_bool(e, "SBX_ALT_PROVIDER_ENABLED", False),
            sbx_live_cmd=env_str(e, "SBX_LIVE_CMD", "echo sbx-live-stub"),
            e2b_api_key=_raw(e, "E2B_API_KEY"),
            e2b_domain=_raw(e, "E2B_DOMAIN"),
            e2b_api_url=_http_url(e, "E2B_API_URL"),
            e2b_sandbox_url=_http_url(e, "E2B_SANDBOX_URL"),
            sbx_local_max_file_mb=env_int(e, "SBX_LOCAL_MAX_FILE_MB", 64, minimum=1),
            sbx_local_max_procs=env_int(e, "SBX_LOCAL_MAX_PROCS", 256, minimum=1),
            sbx_queue_partition=env_bool(e, "SBX_QUEUE_PARTITION", True),
            sbx_default_timeout_ms=env_int(e, "SBX_DEFAULT_TIMEOUT_MS", 300_000, minimum=1),
            sbx_default_net=env_bool(e, "SBX_DEFAULT_NET", False),
            chaos_sleep_execute_ms=env_int(e, "CHAOS_SLEEP_EXECUTE", 0, minimum=0),
            trace_base_url=_trace_base_url(e),
            random_seed=_optional_int(e, "RANDOM_SEED"),
            schedule_tick_ms=_schedule_tick_ms(e),
            workflow_modules=workflow_modules_from_env(e),
            observability=observability_from_env(e),
            queue_limits=queue_limits_from_env(e),
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


@dataclass(frozen=True)
class LogSettings:
    """What the deployed processes log besides warnings, errors and their start-up lines: the lines
    written per request and per task, off by default (under load, most of what they wrote)."""

    access_log: bool  # KODO_ACCESS_LOG: the API's access log, to stdout (kodo.api.gunicorn_conf)
    task_log: bool  # KODO_TASK_LOG: the workers' per-task lines (workers.tasklog)


def log_settings(env: Mapping[str, str] | None = None) -> LogSettings:
    """KODO_ACCESS_LOG and KODO_TASK_LOG (booleans, default false), read when a process starts."""
    e = _environ(env)
    return LogSettings(
        access_log=env_bool(e, "KODO_ACCESS_LOG", False), task_log=env_bool(e, "KODO_TASK_LOG", False)
    )
