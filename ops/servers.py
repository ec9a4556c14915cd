"""Throwaway PostgreSQL and Redis servers for fault tests: private, on free ports, in a temp dir.

The fault tests (Postgres restart, Redis outage) must never touch the machine's shared servers
(Postgres on 5432, Redis on 6379): other runs use them. Each class here starts a server of its own:

    with PostgresServer() as pg, RedisServer() as rd:
        pg.create_database("kodo")
        env = {"KODO_DATABASE_URL": pg.dsn("kodo"), "KODO_BROKER_URL": rd.url()}
        ...
        pg.restart(down_seconds=2)   # fast shutdown (clients see AdminShutdown), 2 s down, start
        rd.stop(); ...; rd.start()   # an outage of any length; the same port afterwards
        rd.kill()                    # SIGKILL, no shutdown at all

- `PostgresServer`: `initdb` (the newest /usr/lib/postgresql/*/bin, or `bin_dir`) into a temp dir,
  trust auth, user `postgres`, listening on 127.0.0.1:<free port> only, its Unix socket in the temp
  dir (`-k`), fsync off. Run as the `postgres` OS user when we are root (initdb refuses root).
- `RedisServer`: `redis-server` on 127.0.0.1:<free port>, no RDB, no AOF, its dir the temp dir.

The port is chosen once and kept across `stop()`/`start()`, so clients reconnect to the same URL.
Every server runs in its own session: `kill()` SIGKILLs the whole process group (postmaster and its
backends at once, like a power cut). `close()` (and leaving the `with`) kills what runs and removes
the temp dir. Logs: `<dir>/postgres.log`, `<dir>/redis.log` (`log_tail()`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ops.processes import free_port, live_group_pids

__all__ = ["PostgresServer", "RedisServer", "ServerError"]


class ServerError(RuntimeError):
    """A private server did not start or stop (the message ends with its log's tail)."""


def _wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return ""


class _Server:
    """A process of ours in its own session, on a fixed port, with a temp dir and a log."""

    kind = "server"
    host = "127.0.0.1"

    def __init__(self, *, port: int | None = None, base_dir: str | Path | None = None) -> None:
        self.port = port or free_port(self.host)
        self.dir = Path(tempfile.mkdtemp(prefix=f"kodo-{self.kind}-", dir=base_dir))
        self.log = self.dir / f"{self.kind}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (no-op if it runs) and return once it accepts connections."""
        if self.running():
            return
        self._prepare()
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self._argv(),
                cwd=self.dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **self._run_as(),
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if not self.running():
                raise ServerError(f"{self.kind} on port {self.port} exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(
                    f"{self.kind} on port {self.port} not ready in {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown (the server's own fast stop); SIGKILL after `timeout` s."""
        if not self.running():
            self._reap()
            return
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, self._stop_signal())
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server's whole process group (no shutdown, no flush) and wait for it."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)
        self._reap()

    def restart(self, down_seconds: float = 0.0) -> None:
        """`stop()`, stay down `down_seconds`, `start()` (same port, same data)."""
        self.stop()
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        """Kill the server and remove its temp dir (logs included)."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        return _tail(self.log, n)

    # -- hooks -----------------------------------------------------------------------------------

    def _prepare(self) -> None:
        pass

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _stop_signal(self) -> int:
        return signal.SIGTERM

    def _run_as(self) -> dict[str, Any]:
        return {}

    def _reap(self) -> None:
        """Wait until no process of the group is left (backends outlive a killed postmaster briefly)."""
        if self.popen is None:
            return
        deadline = time.monotonic() + 10
        while live_group_pids(self.popen.pid) and time.monotonic() < deadline:
            time.sleep(0.01)


# ---- PostgreSQL ------------------------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin dir (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise ServerError("no PostgreSQL found (/usr/lib/postgresql/*/bin/initdb or initdb on PATH)")
    return Path(initdb).parent


class PostgresServer(_Server):
    """A private PostgreSQL cluster: trust auth, superuser `postgres`, 127.0.0.1:<port> only."""

    kind = "postgres"

    def __init__(
        self,
        *,
        port: int | None = None,
        base_dir: str | Path | None = None,
        bin_dir: str | Path | None = None,
        max_connections: int = 200,
        settings: dict[str, str] | None = None,
    ) -> None:
        self._user = self._os_user()
        # Run as `postgres`, the cluster must be reachable by that user: a root-only parent (pytest's
        # tmp_path is 0700) is not, so it then lives in the system temp dir.
        super().__init__(port=port, base_dir=base_dir if self._user is None else None)
        self.bin = Path(bin_dir) if bin_dir is not None else postgres_bin_dir()
        self.data = self.dir / "data"
        self.socket_dir = self.dir
        self.settings = {
            "max_connections": str(max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
            **(settings or {}),
        }
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)

    @staticmethod
    def _os_user() -> pwd.struct_passwd | None:
        """The OS user the server runs as: `postgres` when we are root (initdb refuses root), else us."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServerError("running as root needs an OS user `postgres` to run PostgreSQL") from exc

    def _run_as(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _prepare(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        argv = [
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        with self.log.open("ab") as out:
            done = subprocess.run(
                argv, check=False, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT, **self._run_as()
            )
        if done.returncode != 0:
            raise ServerError(f"initdb failed ({done.returncode}):\n{self.log_tail()}")

    def _argv(self) -> list[str]:
        argv = [
            str(self.bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-h",
            self.host,
            "-k",
            str(self.socket_dir),
        ]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _stop_signal(self) -> int:
        return signal.SIGINT  # "fast" shutdown: clients get AdminShutdown, like `pg_ctl restart`

    def _ready(self) -> bool:
        if not _wait_port(self.host, self.port, 0.05):
            return False
        done = subprocess.run(
            [
                str(self.bin / "pg_isready"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-t",
                "1",
            ],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return done.returncode == 0

    # -- addresses -------------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URL to `dbname` on this server (user `postgres`, no password)."""
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def url(self, dbname: str = "postgres") -> str:
        """The same as `dsn()` (the name the Redis server uses too)."""
        return self.dsn(dbname)

    def env(self, dbname: str) -> dict[str, str]:
        """kodo's settings for this server (KODO_DATABASE_URL wins over DB_HOST/DB_PORT/APP_DB_NAME)."""
        return {
            "KODO_DATABASE_URL": self.dsn(dbname),
            "DB_HOST": self.host,
            "DB_PORT": str(self.port),
            "DB_USER": "postgres",
            "APP_DB_NAME": dbname,
        }

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run `sql` through psql (-tA, stop on error); returns its output."""
        done = subprocess.run(
            [str(self.bin / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-tA", "-d", self.dsn(dbname), "-c", sql],
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ServerError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name` (if missing); returns its DSN."""
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


# ---- Redis -----------------------------------------------------------------------------------------


class RedisServer(_Server):
    """A private redis-server on 127.0.0.1:<port>: no persistence, nothing outlives `close()`."""

    kind = "redis"

    def __init__(
        self, *, port: int | None = None, base_dir: str | Path | None = None, binary: str | None = None
    ) -> None:
        super().__init__(port=port, base_dir=base_dir)
        found = binary or shutil.which("redis-server")
        if found is None:
            raise ServerError("redis-server not found on PATH")
        self.binary = found

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
        ]

    def _ping(self, timeout: float = 0.5) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _ready(self) -> bool:
        return self._ping(0.2)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def flushall(self) -> None:
        """FLUSHALL: every key of every db is gone (e.g. the broker's queued messages)."""
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            s.sendall(b"FLUSHALL\r\n")
            reply = s.recv(64)
        if not reply.startswith(b"+OK"):
            raise ServerError(f"FLUSHALL failed: {reply!r}")
