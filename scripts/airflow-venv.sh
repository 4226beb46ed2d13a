#!/usr/bin/env bash
# Apache Airflow in its own venv (.venv-airflow): installed next to the workbench it would downgrade fastapi.
# The DAG's tasks run in the workbench's .venv (see dags/review_pipeline.py), so Airflow needs nothing else.
# Idempotent: does nothing when the wanted version is already there. About 30-70 s on a cold venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
VENV="${AIRFLOW_VENV:-.venv-airflow}"
VERSION="${AIRFLOW_VERSION:-3.3.2}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$VERSION" <<'PYCODE' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("apache-airflow") == sys.argv[1] else 1)
PYCODE
then
  exit 0
fi
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "apache-airflow==$VERSION" 2>&1 \
  | { grep -v "is ignored: it is neither" || true; }  # pip's exit status still fails the script (pipefail)
"$VENV/bin/python" -c "import airflow.sdk, airflow.providers.standard; print('airflow', airflow.__version__, 'in $VENV')"
