#!/usr/bin/env bash
# Set up (venv, pinned packages, Debian's Chromium for the browser tests, Debian's PostgreSQL for the store tests'
# PostgreSQL runs) and run the test suite.
#   bash scripts/test.sh            # everything, as CI does
#   bash scripts/test.sh -m "not slow"   # extra pytest arguments pass through
# A throwaway PostgreSQL cluster (initdb in a temporary folder, 127.0.0.1 on a free port, fsync off) runs while
# pytest does and is stopped and deleted on exit; tests get its URL in ESLLM_TEST_POSTGRES_URL, and
# ESLLM_REQUIRE_POSTGRES=1 makes a PostgreSQL run fail rather than skip if the cluster is unusable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# the `esllm` console script (pyproject.toml), editable: the checkout itself is the package
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian's ${missing[*]} for the browser and PostgreSQL tests…"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export GRADIO_ANALYTICS_ENABLED=False
.venv/bin/ruff check .   # lint first: seconds, and a red lint is a red CI (config in pyproject.toml)

# ---- the throwaway PostgreSQL cluster
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PG_DIR=$(mktemp -d /tmp/esllm-pg.XXXXXX)  # in /tmp: the `postgres` user can reach it, and the socket path stays short
AS_PG=()  # initdb and the server refuse to run as root: as root, they run as Debian's `postgres` user
if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DIR"; AS_PG=(runuser -u postgres --); fi
stop_postgres() {
  "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
trap stop_postgres EXIT
trap 'exit 130' INT   # so that Ctrl-C and a kill still run the EXIT trap
trap 'exit 143' TERM
PG_PORT=$(.venv/bin/python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
pg_started=$(date +%s%N)
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U esllm --auth=trust -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" \
  || { cat "$PG_DIR/initdb.log"; exit 1; }
# durability off (a throwaway cluster): fsync, synchronous commit and full-page writes cost time and protect nothing
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start -o \
  "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  >/dev/null || { cat "$PG_DIR/server.log"; exit 1; }
echo "PostgreSQL $("$PG_BIN/postgres" -V | awk '{print $3}') on 127.0.0.1:$PG_PORT (set up in $(( ($(date +%s%N) - pg_started) / 1000000 )) ms)"
export ESLLM_TEST_POSTGRES_URL="postgresql+psycopg://esllm@127.0.0.1:$PG_PORT/postgres"
export ESLLM_REQUIRE_POSTGRES=1

.venv/bin/python -m pytest "$@"
