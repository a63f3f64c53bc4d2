"""Operator commands: tenants and API keys, and the database schema.

    python -m store.admin migrate                      # alembic upgrade head
    python -m store.admin create-key --tenant acme     # creates the tenant if needed
    export PAEC_API_KEY=$(python -m store.admin create-key --tenant acme --print-key)
    python -m store.admin revoke-key key_...
    python -m store.admin list-keys [--tenant acme]

The database is the one the settings name (PAEC_DATABASE_URL, else the embedded SQLite under
PAEC_DATA_DIR). A key is printed once; only its sha256 is stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sqlalchemy import select

from store.db import make_engine, make_sessionmaker, transaction, unix
from store.errors import ServiceError
from store.models import ApiKey, Tenant
from store.settings import Settings
from store.tenants import create_key, get_or_create_tenant, revoke_key

ROOT = Path(__file__).resolve().parents[1]


def migrate(settings: Settings) -> None:
    """Bring the database to the newest schema (creates the SQLite file if needed)."""
    from alembic import command
    from alembic.config import Config

    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def main(argv: list[str] | None = None) -> int:
    """Run one admin command; prints JSON."""
    ap = argparse.ArgumentParser(prog="python -m store.admin", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="upgrade the database schema to the newest revision")
    ck = sub.add_parser("create-key", help="create an API key (and the tenant if new)")
    ck.add_argument("--tenant", required=True)
    ck.add_argument("--name", default="default")
    ck.add_argument("--print-key", action="store_true",
                    help="print only the key, for `export PAEC_API_KEY=$(...)`")
    rk = sub.add_parser("revoke-key", help="revoke an API key by id")
    rk.add_argument("key_id")
    lk = sub.add_parser("list-keys", help="list keys (ids and prefixes, never secrets)")
    lk.add_argument("--tenant")
    args = ap.parse_args(argv)
    settings = Settings()
    if args.command == "migrate":
        migrate(settings)
        print(json.dumps({"migrated": True}))
        return 0
    sessions = make_sessionmaker(make_engine(settings.resolved_database_url))
    try:
        with transaction(sessions) as session:
            if args.command == "create-key":
                tenant = get_or_create_tenant(session, args.tenant)
                key = create_key(session, tenant, args.name)
                out: object = {"tenant_id": tenant.id, "tenant": tenant.name, "key_id": key.id,
                               "api_key": key.secret}
            elif args.command == "revoke-key":
                revoked = revoke_key(session, args.key_id)
                out = {"key_id": revoked.id, "revoked_at": unix(revoked.revoked_at)}
            else:
                query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
                if args.tenant:
                    query = query.where(Tenant.name == args.tenant)
                out = [{"key_id": k.id, "tenant": name, "name": k.name, "prefix": k.prefix,
                        "created_at": unix(k.created_at), "revoked_at": unix(k.revoked_at)}
                       for k, name in session.execute(query.order_by(ApiKey.created_at))]
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    if args.command == "create-key" and args.print_key:
        print(key.secret)
        return 0
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
