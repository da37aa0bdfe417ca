"""Alembic environment: runs migrations on the engine handed over by `bot.storage.db`."""

from alembic import context
from sqlalchemy import create_engine

from bot.storage.schema import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # plain `alembic` command line use: take the URL from the config
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///hitl.db")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
