"""Database connection and schema upgrades.

    url = database_url()          # $ESLLM_DATABASE_URL or sqlite:///<repo>/db/esllm.sqlite3
    upgrade(url)                  # Alembic "upgrade head" (the app and the CLI call it at start)
    engine = make_engine(url)
    Session = make_sessionmaker(engine)
    with Session() as s, s.begin():   # one session per UI event or CLI command, never shared by threads
        ...

On SQLite every new connection gets WAL (readers never block the writer), a 5 s busy timeout (a second
writer waits instead of failing at once) and foreign keys on (SQLite leaves them off by default).
PostgreSQL runs through psycopg 3: `postgresql://user:password@host/db` means `postgresql+psycopg://…` (SQLAlchemy
would pick psycopg2, not installed); pooled connections are checked before use (a restarted server costs one
reconnect, not an error page). Any other SQLAlchemy URL is used as is.
Migrations live in db/migrations (revisions in versions/; batch mode on SQLite). A new revision:
    .venv/bin/python -c "from esllm.store.db import alembic_config; from alembic import command; \
        command.revision(alembic_config(), 'what changed', autogenerate=True)"
then read and tidy the generated file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from esllm import EsllmError
from esllm.paths import DB_DIR, MIGRATIONS_DIR

MIGRATIONS = MIGRATIONS_DIR
DEFAULT_SQLITE = DB_DIR / "esllm.sqlite3"
BUSY_TIMEOUT_MS = 5000  # long enough for another writer's short transaction, short enough for a UI click


def database_url() -> str:
    """$ESLLM_DATABASE_URL, or the SQLite file under db/ in the repository."""
    return os.environ.get("ESLLM_DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE}"


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    cur = dbapi_connection.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")  # answers "memory" for in-memory databases: fine
    finally:
        cur.close()


def make_engine(url: Optional[str] = None, **kwargs) -> Engine:
    """An engine for `url` (default `database_url()`); SQLite gets WAL, busy timeout and foreign keys,
    `postgresql://` the psycopg 3 driver."""
    url = url or database_url()
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise EsllmError(f"URL de base de datos no válida: {url!r} ({e}). Revise ESLLM_DATABASE_URL.") from e
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not parsed.database.startswith("file:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """The one session factory of a process. Objects stay readable after commit (UI handlers return them)."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: Optional[str] = None):
    """An Alembic Config for db/migrations, built in code (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = url or database_url()  # not via set_main_option: "%" in URLs breaks configparser
    return cfg


def upgrade(url: Optional[str] = None, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (creates the SQLite file and the tables if missing)."""
    from alembic import command

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def open_store(url: Optional[str] = None) -> sessionmaker[Session]:
    """What every command that uses the database starts with: the schema upgraded to head, then the
    process's session factory."""
    upgrade(url)
    return make_sessionmaker(make_engine(url))


def current_revision(engine: Engine) -> Optional[str]:
    """The revision the database is at (None for an empty database)."""
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
