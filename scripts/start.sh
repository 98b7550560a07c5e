#!/usr/bin/env bash
# Set up (venv + pinned packages) and start the app on the embedded default model.
#   bash scripts/start.sh [app.py options, e.g. --port 8000]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
exec .venv/bin/python app.py "$@"
