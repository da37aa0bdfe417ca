"""The embedding cache in the database: each text is embedded once per model, across retrains.

`model.embeddings` asks this store for vectors while it embeds, and it embeds inside predict
and train calls, some of them made within a caller's open transaction. So the store never uses
the caller's session: each call opens a short one of its own. On PostgreSQL that is all it
takes. SQLite has one writer at a time and the caller may be it (every transaction here begins
IMMEDIATE, see bot/storage/db.py), which a second session of the same thread would wait for in
vain. So on SQLite the store reads through connections that never ask for the write lock (in
WAL mode a reader sees the last commit and waits for nobody), and writes without waiting: while
the database is locked, new vectors stay in memory and go in with a later call.
"""

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, Table, create_engine, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from bot.storage.db import make_engine
from bot.storage.schema import TextVector, utcnow

logger = logging.getLogger(__name__)

_BYTES = np.dtype("<f4")  # vectors are stored as little-endian float32
_KEYS_PER_QUERY = 500  # text keys per `IN (...)`, well inside every backend's parameter limit
# Vectors waiting for SQLite's write lock; past this many the oldest are dropped (a dropped
# vector is computed again when next needed, nothing more).
_MAX_PENDING = 20_000
_SQLITE_BUSY = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})


def to_bytes(vector: NDArray[np.float32]) -> bytes:
    """A vector as stored: little-endian float32."""
    return np.asarray(vector, dtype=_BYTES).tobytes()


def from_bytes(data: bytes) -> NDArray[np.float32]:
    """A stored vector back as a native float32 array."""
    return np.frombuffer(data, dtype=_BYTES).astype(np.float32)


class DatabaseVectorStore:
    """`model.embeddings.VectorStore` on the `text_vector` table; see the module docstring."""

    def __init__(self, engine: Engine, sessions: sessionmaker[Session]) -> None:
        self._dialect = engine.dialect.name
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], bytes] = {}
        self._reads: sessionmaker[Session] | None = sessions
        self._writes: sessionmaker[Session] | None = sessions
        if self._dialect == "sqlite":
            database = engine.url.database or ""
            if database in ("", ":memory:") or database.startswith("file:"):
                # Another connection would open another (empty) database: no cache.
                self._reads = self._writes = None
            else:
                self._reads = sessionmaker(_sqlite_reader(engine))
                self._writes = sessionmaker(_sqlite_writer(engine))

    def get_many(self, model_key: str, keys: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        """The stored vectors of those `keys` that have one."""
        if self._reads is None:
            return {}
        self.flush()
        found: dict[str, NDArray[np.float32]] = {}
        with self._lock:
            for key in keys:
                waiting = self._pending.get((model_key, key))
                if waiting is not None:
                    found[key] = from_bytes(waiting)
        wanted = [key for key in dict.fromkeys(keys) if key not in found]
        with self._reads.begin() as session:
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                rows = session.execute(
                    select(TextVector.text_key, TextVector.vector).where(
                        TextVector.model_key == model_key,
                        TextVector.text_key.in_(wanted[start : start + _KEYS_PER_QUERY]),
                    )
                )
                found.update((key, from_bytes(data)) for key, data in rows)
        return found

    def put_many(self, model_key: str, vectors: Mapping[str, NDArray[np.float32]]) -> None:
        """Store `vectors` (text key → vector); keys stored before keep their vector."""
        if self._writes is None or not vectors:
            return
        with self._lock:
            for key, vector in vectors.items():
                self._pending[(model_key, key)] = to_bytes(vector)
            while len(self._pending) > _MAX_PENDING:
                del self._pending[next(iter(self._pending))]
        self.flush()

    def flush(self) -> bool:
        """Write the vectors waiting in memory; False if SQLite's write lock was taken."""
        if self._writes is None:
            return True
        with self._lock:
            batch = dict(self._pending)
        if not batch:
            return True
        now = utcnow()
        # Sorted, so that two writers inserting overlapping keys take their locks in one order.
        rows = [
            {"model_key": model, "text_key": key, "vector": data, "created_at": now}
            for (model, key), data in sorted(batch.items())
        ]
        try:
            with self._writes.begin() as session:
                session.execute(self._insert_ignoring_duplicates(), rows)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlite_errorname", None) not in _SQLITE_BUSY:
                raise
            logger.debug("database locked by another writer; %d vectors wait", len(batch))
            return False
        with self._lock:
            for written, data in batch.items():
                if self._pending.get(written) is data:
                    del self._pending[written]
        return True

    def _insert_ignoring_duplicates(self) -> Any:
        table = cast(Table, TextVector.__table__)
        if self._dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        if self._dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing()
        raise NotImplementedError(f"no vector cache for {self._dialect} databases")


def _sqlite_reader(engine: Engine) -> Engine:
    """Connections to `engine`'s SQLite file that read without a transaction of their own."""
    reader = create_engine(engine.url, poolclass=NullPool)

    @event.listens_for(reader, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        # The driver's autocommit mode and no BEGIN at all: each SELECT reads the last commit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return reader


def _sqlite_writer(engine: Engine) -> Engine:
    """Like `engine` (BEGIN IMMEDIATE), but failing at once when another writer holds the lock."""
    writer = make_engine(engine.url.render_as_string(hide_password=False), poolclass=NullPool)

    @event.listens_for(writer, "connect")
    def _no_wait(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()

    return writer
