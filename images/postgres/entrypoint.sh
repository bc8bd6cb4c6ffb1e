#!/bin/sh
# Starts PostgreSQL on the service's volume; on an empty volume, first makes the cluster
# (initdb) with the superuser password from POSTGRES_PASSWORD_FILE (a Flotilla file secret
# from the vault) or POSTGRES_PASSWORD (an env secret). Runs as the postgres user and needs
# no capability. The settings are the official postgres image's, so a spec works with both.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"

password() {
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        cat "$POSTGRES_PASSWORD_FILE"
    else
        printf '%s' "${POSTGRES_PASSWORD:-}"
    fi
}

init_cluster() {
    pw=$(password)
    if [ -z "$pw" ]; then
        echo "flotilla-postgres: $PGDATA is empty and no password is given: set POSTGRES_PASSWORD_FILE (a file secret) or POSTGRES_PASSWORD" >&2
        exit 64
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$pw" >"$pwfile"
    # Local (socket, inside the container) connections are trusted, as in the official
    # image; every network connection needs the password.
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
    echo "flotilla-postgres: initialised a new cluster in $PGDATA (database $POSTGRES_DB)" >&2
}

[ -s "$PGDATA/PG_VERSION" ] || init_cluster
# The socket in /var/run/postgresql (where psql looks) and in /tmp, which stays writable
# under read_only: true; PostgreSQL fails only when it can make neither.
exec postgres -D "$PGDATA" -c listen_addresses='*' \
    -c unix_socket_directories=/var/run/postgresql,/tmp
