"""The declarative base of the store's tables and the column types they use: `Base` (its metadata carries the
constraint naming convention `NAMING`), `UTCDateTime` (timezone-aware UTC datetimes, also on SQLite), `PlainText`
(text without U+0000) and `utcnow`.

The tables themselves are in esllm/store/models.py; `Base.metadata` holds them once that module is imported
(`esllm.store.models.METADATA` is that metadata, for Alembic's env and the schema tests).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, MetaData, Text
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

# Named constraints: Alembic's batch mode on SQLite can only drop or alter constraints that have a name.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A datetime stored as UTC; naive values are refused, results are aware UTC (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware value (datetime.now(timezone.utc))")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class PlainText(TypeDecorator):
    """Text without U+0000, stored as U+FFFD on every backend: PostgreSQL's text cannot hold a NUL (psycopg refuses
    the whole statement) and no reader wants one, but a model can generate it (a byte-fallback token) and a file
    can carry it. The DDL is plain TEXT. (Where a person types the text, it is refused first: sessions.submit.)"""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Optional[str], dialect) -> Optional[str]:
        return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}
