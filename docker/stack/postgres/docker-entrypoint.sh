#!/bin/bash
# The official postgres image's first-start contract, for Debian's PostgreSQL 15 (see the Dockerfile).
set -euo pipefail
if [ "${1:-}" != postgres ]; then exec "$@"; fi

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set: this image has no default password}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" >"$password_file"
    chown postgres "$password_file"
    as_postgres initdb --pgdata="$PGDATA" --username="$user" --pwfile="$password_file" --encoding=UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$password_file"
    # Every network client authenticates (the official image's POSTGRES_HOST_AUTH_METHOD default).
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    {
        echo "listen_addresses = '*'"
        echo "jit = off"  # the base image leaves LLVM out
    } >>"$PGDATA/postgresql.conf"
    as_postgres pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait start >/dev/null
    if [ "$database" != postgres ]; then
        as_postgres psql -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres --quiet \
            --command="CREATE DATABASE \"$database\""
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sh) echo "running $script"; bash "$script" ;;
            *.sql) echo "running $script"; as_postgres psql -v ON_ERROR_STOP=1 --username="$user" --dbname="$database" --file="$script" ;;
            *) ;;
        esac
    done
    as_postgres pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop >/dev/null
    echo "PostgreSQL initialised in $PGDATA (user $user, database $database)"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$@" -D "$PGDATA"
