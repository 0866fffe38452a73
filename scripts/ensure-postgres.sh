#!/usr/bin/env bash
# The team MLflow server (make mlflow-server) keeps runs and users in PostgreSQL. Install Debian's
# postgresql through apt when it is missing and we can; the server runs its own cluster under data/.
set -u
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo ">> installing postgresql (Debian package) for the team MLflow server"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    && exit 0
fi
echo "warning: PostgreSQL is not installed and could not be installed automatically." >&2
echo "         Install it (Debian/Ubuntu: sudo apt-get install postgresql; macOS: brew install postgresql)" >&2
echo "         for make mlflow-server; everything else works with the embedded sqlite store." >&2
exit 0
