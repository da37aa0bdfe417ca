"""The embedding cache in the database, on SQLite and PostgreSQL, and its wiring."""

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, inspect, select

from bot import tasks as task_ops
from bot.answers import import_examples
from bot.ingest import IncomingItem
from bot.routing import submit
from bot.services import Services, build_services
from bot.settings import Settings
from bot.storage.db import make_engine, make_sessionmaker, upgrade
from bot.storage.schema import Task, TextVector
from bot.training import retrain_task
from bot.vectors import DatabaseVectorStore, from_bytes, to_bytes
from model import embeddings
from model.embeddings import DEFAULT_MODEL, clean_text, text_key
from tests.conftest import TINY


def vectors(n: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{i:064x}": rng.standard_normal(384).astype(np.float32) for i in range(n)}


@pytest.fixture
def store(services: Services) -> DatabaseVectorStore:
    return DatabaseVectorStore(services.engine, services.sessions)


@pytest.fixture
def model_key() -> str:
    """A model key of this test alone (the PostgreSQL schema is shared across tests)."""
    return uuid.uuid4().hex * 2


def test_round_trip_keeps_every_bit(store: DatabaseVectorStore, model_key: str) -> None:
    given = vectors(1200)  # more keys than one query asks for
    store.put_many(model_key, given)
    asked = [*given, "f" * 64]
    found = store.get_many(model_key, asked)
    assert set(found) == set(given)
    for key, vector in given.items():
        assert found[key].dtype == np.float32
        np.testing.assert_array_equal(found[key], vector)
    assert store.get_many(uuid.uuid4().hex * 2, asked) == {}  # another model's cache


def test_storing_a_key_again_keeps_the_first_vector(
    store: DatabaseVectorStore, services: Services, model_key: str
) -> None:
    first = vectors(3)
    store.put_many(model_key, first)
    again = {key: -vector for key, vector in vectors(5).items()}
    store.put_many(model_key, again)
    found = store.get_many(model_key, list(again))
    for key in again:
        np.testing.assert_array_equal(found[key], first.get(key, again[key]))
    with services.sessions.begin() as session:
        stored = session.scalar(
            select(func.count()).select_from(TextVector).where(TextVector.model_key == model_key)
        )
    assert stored == 5


def test_stored_bytes_are_little_endian_float32() -> None:
    vector = np.array([1.0, -2.5], dtype=np.float32)
    assert to_bytes(vector) == b"\x00\x00\x80\x3f\x00\x00\x20\xc0"
    np.testing.assert_array_equal(from_bytes(to_bytes(vector)), vector)


def test_sqlite_store_never_waits_for_the_callers_open_transaction(tmp_path: Path) -> None:
    """Embedding inside a write transaction (as `submit` does) neither blocks nor fails."""
    engine = make_engine(f"sqlite:///{tmp_path / 'v.db'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    store = DatabaseVectorStore(engine, sessions)
    key = "a" * 64
    stored, waiting = vectors(2), vectors(3, seed=1)
    store.put_many(key, stored)
    started = time.monotonic()
    with sessions.begin() as session:
        session.add(Task(name="t", labels=["a", "b"], threshold=0.8))
        session.flush()  # this session now holds SQLite's write lock
        assert set(store.get_many(key, list(stored))) == set(stored)
        new = {f"{i:b>64}": v for i, v in enumerate(waiting.values())}
        store.put_many(key, new)
        # Waiting in memory, but already served.
        assert set(store.get_many(key, list(new))) == set(new)
        assert store.flush() is False
    assert time.monotonic() - started < 5
    assert store.flush() is True
    with sessions.begin() as session:
        count = session.scalar(select(func.count()).select_from(TextVector))
    assert count == 5
    engine.dispose()


def test_in_memory_sqlite_has_no_cache() -> None:
    engine = make_engine("sqlite://")
    store = DatabaseVectorStore(engine, make_sessionmaker(engine))
    store.put_many("a" * 64, vectors(2))
    assert store.get_many("a" * 64, list(vectors(2))) == {}
    engine.dispose()


def test_migration_creates_the_table_of_the_schema(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    found = inspect(engine)
    columns = {c["name"]: c for c in found.get_columns("text_vector")}
    assert list(columns) == [c.name for c in TextVector.__table__.columns]
    assert not any(c["nullable"] for c in columns.values())
    assert found.get_pk_constraint("text_vector")["constrained_columns"] == [
        "model_key",
        "text_key",
    ]
    engine.dispose()


def test_embedding_model_setting_defaults_to_the_pinned_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(_env_file=None).embedding_model == DEFAULT_MODEL
    monkeypatch.setenv("HITL_EMBEDDING_MODEL", "/srv/models/minilm")
    assert Settings(_env_file=None).embedding_model == "/srv/models/minilm"


# --- with the model (needs the extra) ----------------------------------------------------------


@pytest.fixture
def default_embeddings() -> Iterator[None]:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    pytest.importorskip(DEFAULT_MODEL)
    yield
    embeddings.configure(None)


def test_retrain_embeds_each_text_once_across_processes(
    default_embeddings: None, tmp_path: Path
) -> None:
    """The second retrain (a new process: empty memory cache) takes every vector from the DB."""
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'r.db'}")
    services = build_services(settings)  # configures the embedder with the database store
    rows = [(f"{text} ({n})", label) for n in range(2) for text, label in TINY]
    with services.sessions.begin() as session:
        task = task_ops.create_task(
            session, "moods", ["positive", "negative"], threshold=0.8, featurizer="embeddings"
        )
        import_examples(
            session, task, [IncomingItem(t, label=lab) for t, lab in rows], max_chars=10_000
        )

    def retrain() -> int:
        # Like a new process: the embedder is loaded afresh, with an empty memory cache.
        services = build_services(settings)
        result = retrain_task(
            services.sessions,
            "moods",
            registry=services.registry,
            settings=settings,
            force=True,
        )
        assert result.version is not None
        embedded = embeddings.get_embedder().texts_embedded
        services.engine.dispose()
        return embedded

    assert retrain() >= len(rows)
    with services.sessions.begin() as session:
        stored = session.scalar(select(func.count()).select_from(TextVector))
    assert stored is not None and stored >= len(rows)
    assert retrain() == 0
    services.engine.dispose()


def test_submit_embeds_inside_its_transaction_and_keeps_the_vectors(
    default_embeddings: None, services: Services
) -> None:
    """`submit` predicts inside its own write transaction: the store neither blocks nor fails."""
    rows = [(f"{text} ({n})", label) for n in range(2) for text, label in TINY]
    with services.sessions.begin() as session:
        task = task_ops.create_task(
            session, "moods", ["positive", "negative"], threshold=0.8, featurizer="embeddings"
        )
        import_examples(
            session, task, [IncomingItem(t, label=lab) for t, lab in rows], max_chars=10_000
        )
    retrain_task(services.sessions, "moods", registry=services.registry, settings=services.settings)
    fresh = [f"a new text, number {uuid.uuid4()}", "the soup was cold"]
    started = time.monotonic()
    with services.sessions.begin() as session:
        routed = submit(
            session,
            task_ops.get_task(session, "moods"),
            [IncomingItem(t) for t in fresh],
            registry=services.registry,
            max_chars=10_000,
        )
    assert time.monotonic() - started < 10  # SQLite's busy timeout is 30 s
    assert [r.model_version for r in routed] == [1, 1]
    assert {r.label for r in routed} <= {"positive", "negative"}
    embedder = embeddings.get_embedder()
    keys = [text_key(clean_text(t)) for t in fresh]
    assert embedder.store is not None
    assert set(embedder.store.get_many(embedder.model_key, keys)) == set(keys)
