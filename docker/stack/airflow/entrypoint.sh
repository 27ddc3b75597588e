#!/usr/bin/env bash
# The official image's /entrypoint, as far as docker-compose.yaml uses it
# (https://airflow.apache.org/docs/docker-stack/entrypoint.html):
#   bash ... | python ...      run as given
#   airflow <command> | <command>   `airflow <command>`, once the metadata database answers
#   _AIRFLOW_DB_MIGRATE=true        `airflow db migrate` first
#   _AIRFLOW_WWW_USER_CREATE=true   the admin user _AIRFLOW_WWW_USER_USERNAME / _PASSWORD (kept if it exists)
set -euo pipefail

# An arbitrary uid (docker-compose's AIRFLOW_UID) still gets a passwd entry and a home, as the official image.
if ! whoami >/dev/null 2>&1 && [ -w /etc/passwd ]; then
    echo "airflow-uid-$(id -u):x:$(id -u):0::/home/airflow:/bin/bash" >>/etc/passwd
fi

wait_for_database() {
    # A TCP connect to the database's host and port (cheaper than `airflow db check`'s full import).
    python - <<'PYTHON'
import os, socket, sys, time
from urllib.parse import urlsplit
url = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
parts = urlsplit(url)
if not parts.hostname:
    sys.exit(0)  # SQLite, or a socket: nothing to wait for
deadline = time.monotonic() + int(os.environ.get("CONNECTION_CHECK_MAX_COUNT", "20")) * int(os.environ.get("CONNECTION_CHECK_SLEEP_TIME", "3"))
while True:
    try:
        socket.create_connection((parts.hostname, parts.port or 5432), timeout=3).close()
        sys.exit(0)
    except OSError as error:
        if time.monotonic() > deadline:
            sys.exit(f"the metadata database {parts.hostname}:{parts.port or 5432} does not answer: {error}")
        time.sleep(1)
PYTHON
}

case "${1:-}" in
    bash | python | python3) exec "$@" ;;
esac
if [ "${1:-}" = airflow ]; then shift; fi

wait_for_database
if [ "${_AIRFLOW_DB_MIGRATE:-}" = true ]; then
    airflow db migrate
fi
if [ "${_AIRFLOW_WWW_USER_CREATE:-}" = true ]; then
    : "${_AIRFLOW_WWW_USER_PASSWORD:?_AIRFLOW_WWW_USER_PASSWORD must be set: no default password}"
    username=${_AIRFLOW_WWW_USER_USERNAME:-admin}
    if airflow users list --output plain 2>/dev/null | awk '{print $2}' | grep -qx "$username"; then
        echo "the admin user $username exists"
    else
        airflow users create --username "$username" --password "$_AIRFLOW_WWW_USER_PASSWORD" \
            --firstname "${_AIRFLOW_WWW_USER_FIRSTNAME:-Airflow}" --lastname "${_AIRFLOW_WWW_USER_LASTNAME:-Admin}" \
            --email "${_AIRFLOW_WWW_USER_EMAIL:-airflowadmin@example.com}" --role "${_AIRFLOW_WWW_USER_ROLE:-Admin}"
    fi
fi
if [ $# -eq 0 ]; then exec airflow --help; fi
exec airflow "$@"
