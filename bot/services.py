"""The composition root: settings → engine → sessions → model registry, built once."""

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot.metrics import Metrics
from bot.registry import ModelRegistry, signing_key
from bot.settings import Settings
from bot.storage.db import make_engine, make_sessionmaker, upgrade
from bot.vectors import DatabaseVectorStore
from model import embeddings


@dataclass(frozen=True)
class Services:
    """What listeners, jobs and commands are handed; nothing here is global."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    registry: ModelRegistry
    # This process's counters; `/metrics` exports them.
    metrics: Metrics = field(default_factory=Metrics)


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Create the engine, bring the schema up to date and wire the registry."""
    engine = make_engine(settings.database_url)
    if migrate:
        upgrade(engine)
    sessions = make_sessionmaker(engine)
    # The `embeddings` featurizer's model (loaded on first use) and its vector cache.
    embeddings.configure(settings.embedding_model, store=DatabaseVectorStore(engine, sessions))
    metrics = Metrics()
    metrics.watch_database(sessions)
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        registry=ModelRegistry(key=model_key(settings)),
        metrics=metrics,
    )


def model_key(settings: Settings) -> bytes:
    """The key that signs and verifies this deployment's model artifacts."""
    secret = settings.model_signing_key
    return signing_key(secret.get_secret_value() if secret else None, settings.model_key_file)
