"""Fast multi-row inserts that hand back the new primary keys in input order."""

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session


def insert_returning_ids(session: Session, model: Any, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert `rows` into `model`'s table and return their ids in the order given.

    PostgreSQL orders RETURNING rows for us. SQLite cannot promise that order, and SQLAlchemy
    then falls back to one statement per row; instead we insert in one executemany and read
    the ids back: the connection holds SQLite's write lock (BEGIN IMMEDIATE) and an INTEGER
    PRIMARY KEY grows by one per row, so ours are the last `len(rows)` ids, which we verify.
    """
    if not rows:
        return []
    if session.get_bind().dialect.name != "sqlite":
        table = cast(Table, model.__table__)
        statement = table.insert().returning(table.c.id, sort_by_parameter_order=True)
        return list(session.scalars(statement, rows))
    before = session.scalar(select(func.max(model.id))) or 0
    # The Core table insert keeps every row in one executemany; the ORM's bulk insert splits
    # the batch wherever a column flips between None and a value.
    session.execute(cast(Table, model.__table__).insert(), rows)
    after = session.scalar(select(func.max(model.id))) or 0
    if after - before != len(rows):
        raise RuntimeError("unexpected id allocation during a bulk insert; nothing was kept")
    return list(range(before + 1, after + 1))


def insert_rows(session: Session, model: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` into `model`'s table in one executemany (see `insert_returning_ids`)."""
    if rows:
        session.execute(cast(Table, model.__table__).insert(), rows)
