#!/usr/bin/env bash
# One-shot set-up of the SQL Server started by docker-compose.yml (service mssql-init runs this in a
# container of the same image, whose sqlcmd is /opt/mssql-tools18/bin/sqlcmd). Safe to run again.
#
#   database powersync               the demo schema (db/demo/mssql) and the errors table
#                                    (db/migrations/mssql), CDC on the database and on lists, todos,
#                                    powersync_upload_errors and dbo._powersync_checkpoints: what
#                                    PowerSync's SQL Server source needs to replicate it
#   database powersync_upload_test   empty, for `make test` (the suite drops and recreates its tables):
#                                    MSSQL_URL=mssql://sa:<password>@127.0.0.1:1433/powersync_upload_test make test
#
# Environment: MSSQL_SA_PASSWORD (required), MSSQL_HOST (default mssql, the compose service),
# DB_DIR (default /db, the repository's db/ folder mounted read-only), SQLCMD.
set -euo pipefail

: "${MSSQL_SA_PASSWORD:?MSSQL_SA_PASSWORD must be set}"
host=${MSSQL_HOST:-mssql}
db_dir=${DB_DIR:-/db}
here=$(cd "$(dirname "$0")" && pwd)
sqlcmd=${SQLCMD:-/opt/mssql-tools18/bin/sqlcmd}
export SQLCMDPASSWORD=$MSSQL_SA_PASSWORD  # read by sqlcmd: keeps the password off the command line

# -C trusts the server's self-signed certificate; -b exits non-zero on the first error.
sql() { "$sqlcmd" -C -b -S "$host" -U sa "$@"; }

for _ in $(seq 1 60); do
  if sql -Q "SELECT 1" -o /dev/null 2>/dev/null; then break; fi
  sleep 2
done
sql -Q "SELECT 1" -o /dev/null  # still down after 2 minutes: fail with sqlcmd's own message

echo "== databases powersync, powersync_upload_test"
sql -d master -i "$here/10-databases.sql"
# The repository's own scripts, as they are (-x: no sqlcmd variable substitution in them).
for script in "$db_dir/migrations/mssql/001_powersync_upload_errors.sql" "$db_dir/demo/mssql/001_demo_schema.sql"; do
  echo "== powersync: $script"
  sql -d powersync -x -i "$script"
done
echo "== powersync: CDC and dbo._powersync_checkpoints"
sql -d powersync -i "$here/20-powersync-cdc.sql"
echo "SQL Server is ready: databases powersync (CDC on) and powersync_upload_test"
