"""Shared fixtures: databases on SQLite and PostgreSQL, services, and small datasets."""

import csv
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.services import Services, build_services
from bot.settings import Settings
from bot.storage.db import make_engine, upgrade

# The model signing key file is made on first use under $XDG_CONFIG_HOME/hitl; keep the test
# run's out of the developer's home (subprocesses started by tests inherit it).
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="hitl-test-config-")


def find_banking77() -> Path:
    """banking77.csv from $HITL_DATASETS_DIR, the shared folder beside the checkout, or /work."""
    candidates = [
        Path(os.environ.get("HITL_DATASETS_DIR", "/nonexistent")) / "banking77.csv",
        Path(__file__).resolve().parents[2] / "shared" / "datasets" / "banking77.csv",
        Path("/work/shared/datasets/banking77.csv"),
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"banking77.csv not found (set HITL_DATASETS_DIR); looked in {searched}"
    )


BANKING77 = find_banking77()
POSTGRES_URL = os.environ.get(
    "HITL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

TINY = [
    ("the food was wonderful", "positive"),
    ("what a lovely evening", "positive"),
    ("great service and kind staff", "positive"),
    ("I loved every minute", "positive"),
    ("absolutely fantastic experience", "positive"),
    ("terrible, cold and late", "negative"),
    ("the worst meal I ever had", "negative"),
    ("rude staff and dirty tables", "negative"),
    ("I hated the noise", "negative"),
    ("awful, never again", "negative"),
]


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    """A fresh schema on the local PostgreSQL server, migrated once, dropped at the end."""
    schema = f"hitl_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc}); start it first")
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    engine = make_engine(rendered)
    upgrade(engine)
    engine.dispose()
    yield rendered
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database: a new SQLite file, or the PostgreSQL schema emptied."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hitl.db'}"
        yield url
        return
    url = request.getfixturevalue("postgres_schema_url")
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "TRUNCATE task, item, prediction, answer, model_version, review_prompt, "
                "audit_log, retrain_run, posting_block, text_vector, channel_turn "
                "RESTART IDENTITY CASCADE"
            )
        )
    engine.dispose()
    yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for tests: the fixture database, no .env file."""
    return Settings(_env_file=None, database_url=database_url)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """Services on the fixture database, schema migrated."""
    built = build_services(settings)
    yield built
    built.engine.dispose()


def load_banking77() -> list[tuple[str, str]]:
    """Every (text, label) of banking77."""
    with BANKING77.open(encoding="utf-8", newline="") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="session")
def banking77() -> list[tuple[str, str]]:
    """banking77 rows, read once."""
    return load_banking77()


@pytest.fixture
def sqlite_services(tmp_path: Path) -> Iterator[Services]:
    """Services on a fresh SQLite file (for tests whose subject is not the storage backend)."""
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'one.db'}")
    built = build_services(settings)
    yield built
    built.engine.dispose()
