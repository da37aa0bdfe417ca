"""Engine and session factory set-up, and schema upgrades through Alembic."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
T = TypeVar("T")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and a busy timeout."""
    parsed = make_url(url)
    # A database error's message would otherwise quote the statement's parameters (item
    # texts, bot tokens of the installation store) into every log line that reports it.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        # A serving replica has up to 64 listener, 32 API and a few job threads: a pool of 5
        # (+10 overflow), SQLAlchemy's default, kept clicks waiting seconds for a connection
        # under load. 30 a process keeps two replicas and the CLI well inside PostgreSQL's
        # default 100 connections; a wait past 10 s is an error (503), not a hang.
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        kwargs.setdefault("pool_timeout", 10)
        return create_engine(url, **kwargs)
    if parsed.database not in (None, "", ":memory:") and not parsed.database.startswith("file:"):
        _create_private(Path(parsed.database))
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling fights SAVEPOINTs and BEGIN IMMEDIATE;
        # SQLAlchemy's documented recipe takes it over.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if parsed.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: Any) -> None:
        # Take the write lock up front so two writers queue instead of failing mid-transaction.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only (SQLite gives its -wal and -shm
    files the database file's permissions); an existing file is left as it is."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except (FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError):
        return  # exists already, or SQLite will report the unusable path itself
    os.close(descriptor)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """The one session factory of a process."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    """An Alembic configuration bound to `engine`, with no ini file needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (idempotent)."""
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None when it has none."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# PostgreSQL SQLSTATEs that mean "another transaction got there first; try again".
_RETRYABLE_SQLSTATES = frozenset({"23505", "40001", "40P01"})  # unique, serialization, deadlock


def is_retryable(exc: DBAPIError) -> bool:
    """Whether a failed transaction lost a race that a fresh attempt would not lose."""
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def in_transaction(
    sessions: sessionmaker[Session], work: Callable[[Session], T], *, attempts: int = 5
) -> T:
    """Run `work` in a transaction, again from the start when it lost a race (see above).

    Two requests that insert the same new external id at once: one commits, the other hits
    the unique index, and its retry finds the committed row and answers as a safe replay.
    """
    for attempt in range(1, attempts + 1):
        try:
            with sessions.begin() as session:
                return work(session)
        except DBAPIError as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
    raise AssertionError("unreachable")  # pragma: no cover
