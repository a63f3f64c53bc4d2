#!/bin/sh
# Wait until the database named by the settings (PAEC_DATABASE_URL) accepts connections,
# then run the given command. The migrate service of docker-compose.yml runs
#   sh docker/wait-for-db.sh python -m store.admin migrate
# Compose already starts it only once Postgres is healthy; the wait covers everything else
# (`docker compose run`, other orchestrators, a database on another host that restarts).
# The timeout is WAIT_FOR_DB_S (seconds, default 60; not a PAEC_ setting: only this script
# reads it).
set -eu
python - <<'PY'
import os
import sys
import time

from sqlalchemy import create_engine, text

from store.settings import Settings

url = Settings().resolved_database_url
deadline = time.monotonic() + float(os.environ.get("WAIT_FOR_DB_S", "60"))
engine = create_engine(url)
while True:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        break
    except Exception as exc:  # any failure to connect: the server may still be starting
        if time.monotonic() > deadline:
            sys.exit(f"wait-for-db: the database did not answer in time: {exc}")
        print(f"wait-for-db: waiting for the database ({type(exc).__name__})", flush=True)
        time.sleep(1)
engine.dispose()
PY
exec "$@"
