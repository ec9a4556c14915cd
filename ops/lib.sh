# Shared by ops/*.sh: bring a fresh machine to a runnable state. Source it, then call `bootstrap`.
# Installs nothing system-wide except mise (npm) and, for the dev extra, Debian's chromium (apt-get)
# when missing; everything else goes into .venv.

KODO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$KODO_ROOT/.venv"
PYTHON_BIN="${KODO_PYTHON:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3

say() { printf '[kodo] %s\n' "$*" >&2; }

ensure_postgres() {
  local host="${DB_HOST:-127.0.0.1}" port="${DB_PORT:-5432}"
  if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then return 0; fi
  if [ "$host" != "127.0.0.1" ] && [ "$host" != "localhost" ]; then
    say "PostgreSQL at $host:$port is not answering (not local, so not starting it)"; return 1
  fi
  say "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    local ver; ver="$(ls /etc/postgresql | sort -V | tail -n 1)"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  elif command -v pg_ctl >/dev/null 2>&1 && [ -n "${PGDATA:-}" ]; then
    pg_ctl -D "$PGDATA" -l "$KODO_ROOT/.tmp/postgres.log" start || true
  fi
  for _ in $(seq 1 60); do pg_isready -q -h "$host" -p "$port" && return 0; sleep 0.5; done
  say "PostgreSQL did not come up on $host:$port"; return 1
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return 0; fi
  say "starting Redis"
  mkdir -p "$KODO_ROOT/.tmp"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$KODO_ROOT/.tmp" --logfile "$KODO_ROOT/.tmp/redis.log"
  for _ in $(seq 1 40); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0; sleep 0.25; done
  say "Redis did not come up on 127.0.0.1:6379"; return 1
}

ensure_venv() {
  local extras="${1:-dev}" stamp
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv .venv"
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  stamp="$VENV/.kodo-deps-$(cat "$KODO_ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$extras"
  if [ ! -f "$stamp" ]; then
    say "installing kodo and its dependencies into .venv ($extras)"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$KODO_ROOT[$extras]"
    rm -f "$VENV"/.kodo-deps-*-"$extras"
    touch "$stamp"
  fi
}

ensure_mise() {
  if command -v mise >/dev/null 2>&1; then
    mise trust -q "$KODO_ROOT/mise.toml" >/dev/null 2>&1 || true
    return 0
  fi
  if command -v npm >/dev/null 2>&1; then
    say "installing mise (npm install -g @jdxcode/mise)"
    if npm install -g @jdxcode/mise >/dev/null 2>&1; then
      mise trust -q "$KODO_ROOT/mise.toml" >/dev/null 2>&1 || true
    else
      say "could not install mise; the ops/*.sh scripts work without it"
    fi
  else
    say "npm not found: mise not installed; the ops/*.sh scripts work without it"
  fi
}

ensure_chromium() {
  # The UI tests (tests/e2e/test_ui.py) drive the system's chromium through Playwright: no browser
  # download (`playwright install` is never run). Quiet and instant when it is already there.
  [ -x /usr/bin/chromium ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    say "apt-get not found: chromium not installed (the UI tests need /usr/bin/chromium)"; return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  say "installing chromium (apt-get) for the UI tests"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } \
      >"$KODO_ROOT/.tmp/apt-chromium.log" 2>&1; then
    say "could not install chromium (see .tmp/apt-chromium.log); the UI tests will fail"
  fi
}

bootstrap() {
  mkdir -p "$KODO_ROOT/.tmp"
  ensure_postgres
  ensure_redis
  ensure_venv "${1:-dev}"
  case "${1:-dev}" in *dev*) ensure_chromium ;; esac
  ensure_mise
}
