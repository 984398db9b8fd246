"""Alembic's entry point: runs the migrations on the connection the store hands over
(``config.attributes["connection"]``), or on ``sqlalchemy.url`` from the command line."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from genre_core.store.schema import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    engine = engine_from_config(
        config.get_section(config.config_ini_section) or {}, prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    connection = engine.connect()
# SQLite alters tables by copying them ("batch" mode); other databases alter in place.
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
