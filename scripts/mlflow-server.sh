#!/usr/bin/env bash
# make mlflow-server: PostgreSQL + MLflow with basic authentication on 127.0.0.1, state under data/.
# Secrets are generated on first start and kept in 0600 files under data/mlflow-server/; none is printed.
set -euo pipefail
PY="${PY:-.venv/bin/python}"
bash "$(dirname "$0")/ensure-postgres.sh"
umask 077
exec "$PY" -m pipelines.registry.server "$@"
