#!/bin/sh
# Runs once, when the postgres container initialises an empty data volume
# (after 10-schema.sql). Creates the login roles from the passwords in .env.
set -eu

for var in BRIDGE_DB_PASSWORD WATCHDOG_DB_PASSWORD READER_DB_PASSWORD; do
    eval "value=\${$var:-}"
    if [ -z "$value" ]; then
        echo "20-roles.sh: $var is empty; set it in .env (see .env.example)" >&2
        exit 1
    fi
done

# psql variables (:'name') quote the passwords, so any character is safe.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v bridge_pw="$BRIDGE_DB_PASSWORD" \
    -v watchdog_pw="$WATCHDOG_DB_PASSWORD" \
    -v reader_pw="$READER_DB_PASSWORD" <<'SQL'
CREATE ROLE bridge LOGIN PASSWORD :'bridge_pw' IN ROLE iot_bridge;
CREATE ROLE watchdog LOGIN PASSWORD :'watchdog_pw' IN ROLE iot_watchdog;
CREATE ROLE reader LOGIN PASSWORD :'reader_pw' IN ROLE iot_reader;
SQL
