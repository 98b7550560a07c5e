"""The evaluation data store: SQLAlchemy models, engine/session setup, Alembic upgrades, users.

    from esllm.store import db, models, users
    db.upgrade()                                   # schema to head ($ESLLM_DATABASE_URL or db/esllm.sqlite3)
    Session = db.make_sessionmaker(db.make_engine())

Importing this package connects to nothing.
"""
