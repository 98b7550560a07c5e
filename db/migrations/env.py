"""Alembic environment for esllm: run through esllm.store.db.upgrade() (or alembic_config()).

The connection (or the URL) comes in `config.attributes`; there is no alembic.ini and no logging setup.
On SQLite, migrations run in batch mode (tables are copied and recreated to alter them) with foreign keys
switched off while they run, then `PRAGMA foreign_key_check` must come back clean.
On PostgreSQL the whole upgrade is one transaction (DDL is transactional) that first takes an advisory lock:
processes starting together on one database (the app, a CLI command) upgrade it one after the other, and the
later ones find it at head instead of failing on "relation already exists".
"""

from __future__ import annotations

from alembic import context

from esllm.store.db import database_url, make_engine
from esllm.store.models import METADATA

config = context.config
target_metadata = METADATA
UPGRADE_LOCK = 0x65736C6C6D  # "esllm": the advisory lock key of schema upgrades on PostgreSQL


def _run(connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # no effect inside a transaction: before it
        connection.commit()
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=sqlite, compare_type=True)
    try:
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":  # held until this transaction ends; then read the revision
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK})")
            context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left rows with broken foreign keys: {broken[:5]}")
    finally:
        if sqlite:
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.attributes.get("url") or database_url())
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    """`--sql` mode: print the DDL instead of running it."""
    context.configure(url=config.attributes.get("url") or database_url(), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
