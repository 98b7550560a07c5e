#!/usr/bin/env bash
# Set up (venv, pinned packages, Debian's Chromium for the browser tests) and run the test suite.
#   bash scripts/test.sh            # everything, as CI does
#   bash scripts/test.sh -m "not slow"   # extra pytest arguments pass through
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# the `esllm` console script (pyproject.toml), editable: the checkout itself is the package
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "Installing Debian's chromium for the browser tests…"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
export GRADIO_ANALYTICS_ENABLED=False
.venv/bin/ruff check .   # lint first: seconds, and a red lint is a red CI (config in pyproject.toml)
exec .venv/bin/python -m pytest "$@"
