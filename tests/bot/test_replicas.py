"""Several replicas on one database, in process: prompt claims with an owner and a lease (taken
with SKIP LOCKED on PostgreSQL), claims given back on shutdown, each channel's pace shared
through the database, and promoted models reaching a serving replica in the background.

The same with real `hitl serve` processes is in tests/test_faults.py."""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from bot import outbox
from bot import registry as registry_module
from bot import tasks as task_ops
from bot.demo.standin import SlackStandIn
from bot.ingest import IncomingItem
from bot.registry import ModelRefresher, ModelRegistry, load_active_models, store_model
from bot.retention import delete_task
from bot.routing import submit
from bot.services import Services, build_services, model_key
from bot.settings import Settings
from bot.slack.context import make_web_client
from bot.slack.messages import message_for
from bot.slack.poster import Poster
from bot.states import ModelStatus
from bot.storage.schema import ReviewPrompt, Task
from model import TextClassifier, train
from model import loads as real_loads
from tests.conftest import TINY

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
CHANNEL = "C0REPLICA1"
TOKEN = "xoxb-replicas"


def queue_items(services: Services, *texts: str, now: datetime = T0) -> None:
    with services.sessions.begin() as session:
        if session.scalar(select(Task).where(Task.name == "reviews")) is None:
            task_ops.create_task(
                session, "reviews", ["positive", "negative"], channel=CHANNEL, threshold=0.99
            )
        submit(
            session,
            task_ops.get_task(session, "reviews"),
            [IncomingItem(t) for t in texts],
            registry=services.registry,
            max_chars=1000,
            now=now,
        )


def prompt_rows(services: Services) -> list[tuple[str, str | None, datetime | None]]:
    with services.sessions.begin() as session:
        rows = session.execute(
            select(
                ReviewPrompt.status, ReviewPrompt.claimed_by, ReviewPrompt.unconfirmed_since
            ).order_by(ReviewPrompt.id)
        ).all()
    return [(str(r[0]), r[1], r[2]) for r in rows]


def test_a_claim_records_its_replica_and_lease_and_nobody_else_gets_the_prompt(
    services: Services,
) -> None:
    queue_items(services, "a")
    lease = timedelta(seconds=30)
    with services.sessions.begin() as session:
        first = outbox.claim(session, 1, now=T0, owner="replica-a", lease=lease)
        second = outbox.claim(session, 1, now=T0, owner="replica-b", lease=lease)
    assert first is not None and second is None
    with services.sessions.begin() as session:
        row = session.get(ReviewPrompt, 1)
        assert row is not None
        assert (row.status, row.claimed_by, row.lease_until) == ("sending", "replica-a", T0 + lease)


def test_a_dead_replicas_claim_is_taken_over_after_its_lease_and_not_before(
    services: Services,
) -> None:
    queue_items(services, "a")
    with services.sessions.begin() as session:
        outbox.claim(session, 1, now=T0, owner="dead", lease=timedelta(seconds=30))
    with services.sessions.begin() as session:
        assert outbox.release_stale_claims(session, now=T0 + timedelta(seconds=29)) == 0
        assert outbox.claim(session, 1, now=T0 + timedelta(seconds=29), owner="live") is None
    with services.sessions.begin() as session:
        assert outbox.release_stale_claims(session, now=T0 + timedelta(seconds=31)) == 1
    # Pending again, and unconfirmed since the dead replica's attempt: look in Slack first.
    assert prompt_rows(services) == [("pending", None, T0)]
    with services.sessions.begin() as session:
        taken = outbox.claim(session, 1, now=T0 + timedelta(seconds=32), owner="live")
    assert taken is not None and taken.unconfirmed_since == T0


def test_shutdown_gives_back_only_the_replicas_own_claims(services: Services) -> None:
    queue_items(services, "a", "b", "c")
    with services.sessions.begin() as session:
        outbox.claim(session, 1, now=T0, owner="leaving")
        outbox.claim(session, 2, now=T0, owner="staying")
        outbox.claim(session, 3, now=T0, owner="leaving")
        outbox.mark_posted(session, 3, channel=CHANNEL, ts="1.000001", now=T0)
    later = T0 + timedelta(seconds=1)
    with services.sessions.begin() as session:
        assert outbox.release_claims(session, "leaving", now=later) == 1
        # Due once a send it may have abandoned in flight has reached Slack or never will.
        released = session.get(ReviewPrompt, 1)
        assert released is not None
        assert released.next_attempt_at == later + timedelta(seconds=outbox.GIVE_BACK_SETTLE)
    assert prompt_rows(services) == [
        ("pending", None, T0),
        ("sending", "staying", None),
        ("posted", None, None),
    ]


def test_a_claim_skips_a_row_another_replica_is_taking_instead_of_waiting(
    postgres_schema_url: str,
) -> None:
    """FOR UPDATE SKIP LOCKED: while another transaction holds the prompt's row, a claim
    answers None at once (a claim that waited would hit the lock timeout and raise)."""
    services = build_services(Settings(_env_file=None, database_url=postgres_schema_url))
    try:
        queue_items(services, "a")
        holder = services.sessions()
        holder.begin()
        holder.execute(select(ReviewPrompt.id).where(ReviewPrompt.id == 1).with_for_update()).one()
        try:
            with services.sessions.begin() as session:
                session.execute(text("SET LOCAL lock_timeout = '2s'"))
                assert outbox.claim(session, 1, now=T0, owner="b") is None
        finally:
            holder.rollback()
            holder.close()
        with services.sessions.begin() as session:
            assert outbox.claim(session, 1, now=T0, owner="b") is not None
    finally:
        services.engine.dispose()


def test_a_channels_turns_are_shared_one_per_interval(services: Services) -> None:
    with services.sessions.begin() as session:
        assert outbox.take_turn(session, CHANNEL, now=T0, interval=1.0) is None
    with services.sessions.begin() as session:  # another replica, 0.4 s later
        wait = outbox.take_turn(session, CHANNEL, now=T0 + timedelta(seconds=0.4), interval=1.0)
        assert wait == pytest.approx(0.6)
        # Another channel has its own turns.
        assert outbox.take_turn(session, "C0OTHER01", now=T0, interval=1.0) is None
    with services.sessions.begin() as session:
        assert (
            outbox.take_turn(session, CHANNEL, now=T0 + timedelta(seconds=1), interval=1.0) is None
        )
        assert (
            outbox.take_turn(session, CHANNEL, now=T0 + timedelta(seconds=1), interval=1.0) == 1.0
        )


class SharedClock:
    """One fake clock for both replicas: it moves only when a test moves it."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)


@pytest.fixture
def two_posters(services: Services) -> Iterator[tuple[SharedClock, SlackStandIn, list[Poster]]]:
    clock = SharedClock()
    with SlackStandIn(TOKEN, rate_limit_per_channel=None) as slack:
        posters = [
            Poster(
                services.sessions,
                make_web_client(TOKEN, base_url=slack.api_url, timeout=5.0, retries=False),
                message_for,
                min_interval=1.0,
                clock=clock.monotonic,
                now=clock.now,
                wait=lambda seconds: None,
                owner=name,
                shared_pacing=True,
            )
            for name in ("replica-a", "replica-b")
        ]
        yield clock, slack, posters
        for poster in posters:
            poster.stop()


def test_two_replicas_together_keep_one_message_a_second_per_channel(
    services: Services, two_posters: tuple[SharedClock, SlackStandIn, list[Poster]]
) -> None:
    clock, slack, posters = two_posters
    queue_items(services, *(f"item {n:02d}" for n in range(6)))
    # Each replica alone would post once a second; taking turns in memory only, the two would
    # post twice a second. Step both every 0.25 s of fake time for 4 s.
    posted_at: list[float] = []
    for _ in range(16):
        for poster in posters:
            before = len(slack.messages(CHANNEL))
            poster.run_once()
            assert poster.wait_for_sends(10.0)
            posted_at += [clock.seconds] * (len(slack.messages(CHANNEL)) - before)
        clock.seconds += 0.25
    assert posted_at == [0.0, 1.0, 2.0, 3.0]  # one a second, whoever posted it
    assert {p.stats.posted for p in posters} != {0} and sum(p.stats.posted for p in posters) == 4
    ids = [m["metadata"]["event_payload"]["item_id"] for m in slack.messages(CHANNEL)]
    assert len(ids) == len(set(ids))  # each item once


def tiny_model() -> TextClassifier:
    return train([t for t, _ in TINY], [lab for _, lab in TINY], labels=["positive", "negative"])


def promote(services: Services, classifier: TextClassifier) -> int:
    """Store `classifier` as the task's new active version (what a retrain that promotes does)."""
    with services.sessions.begin() as session:
        task = session.scalar(select(Task).where(Task.name == "reviews"))
        if task is None:
            task = task_ops.create_task(session, "reviews", ["positive", "negative"], threshold=0.5)
        row = store_model(
            session,
            task,
            classifier,
            registry=services.registry,
            status=ModelStatus.ACTIVE,
            train_size=len(TINY),
            metrics={},
        )
        return row.version


def test_a_model_promoted_elsewhere_reaches_a_serving_replica_without_a_request_loading_it(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica B serves with deferred loads. Another process promotes v2; B keeps serving v1
    until its refresher runs, then serves v2; no request pays for the load."""
    classifier = tiny_model()
    promote(services, classifier)
    serving = ModelRegistry(key=model_key(services.settings))  # another process: its own cache
    with services.sessions.begin() as session:
        assert load_active_models(session, serving) == (1, 1)
    serving.defer_loads()
    reads: list[bytes] = []  # artifacts read from the database (not cache hits)

    def counting_loads(data: bytes, meta: dict[str, Any], *, key: bytes) -> TextClassifier:
        reads.append(data)
        return real_loads(data, meta, key=key)

    monkeypatch.setattr(registry_module, "loads", counting_loads)

    def serving_version() -> int:
        with services.sessions.begin() as session:
            loaded = serving.active(session, task_ops.get_task(session, "reviews"))
            assert loaded is not None
            return loaded.version

    assert serving_version() == 1 and reads == []  # v1 was loaded at start
    assert promote(services, classifier) == 2
    assert serving_version() == 1 and reads == []  # the request did not pay for the load
    rounds = iter([False, True])  # one refresh round, then stop
    refresher = ModelRefresher(
        services.sessions, serving, interval=30.0, wait=lambda seconds: next(rounds)
    )
    refresher.run()
    assert len(reads) == 1 and refresher.refreshed_at is not None
    assert serving_version() == 2 and len(reads) == 1


def test_a_task_without_a_model_in_this_process_loads_its_first_one_at_once(
    services: Services,
) -> None:
    serving = ModelRegistry(key=model_key(services.settings))
    serving.defer_loads()
    promote(services, tiny_model())
    with services.sessions.begin() as session:
        loaded = serving.active(session, task_ops.get_task(session, "reviews"))
    assert loaded is not None and loaded.version == 1


def test_a_refresh_that_fails_keeps_the_old_model_and_tries_again(services: Services) -> None:
    calls: list[float] = []
    rounds = iter([False, False, True])

    def wait(seconds: float) -> bool:
        calls.append(seconds)
        return next(rounds)

    broken = threading.Event()

    class Sessions:
        def begin(self) -> object:
            broken.set()
            raise RuntimeError("database down")

    refresher = ModelRefresher(Sessions(), services.registry, interval=7.0, wait=wait)  # type: ignore[arg-type]
    refresher.run()
    assert calls == [7.0, 7.0, 7.0] and broken.is_set() and refresher.refreshed_at is None


def test_a_deleted_tasks_cached_model_is_never_served_to_the_task_that_reuses_its_ids(
    services: Services,
) -> None:
    """SQLite gives a deleted row's id to the next row: the new task's model v1 has the old
    one's row id (and the task its task id), yet the registry serves the new model."""
    promote(services, tiny_model())
    with services.sessions.begin() as session:
        old = services.registry.active(session, task_ops.get_task(session, "reviews"))
        assert old is not None
        delete_task(session, task_ops.get_task(session, "reviews"), actor="test")
    flipped = train(
        [t for t, _ in TINY],
        [("negative" if lab == "positive" else "positive") for _, lab in TINY],
        labels=["positive", "negative"],
    )
    promote(services, flipped)
    with services.sessions.begin() as session:
        new = services.registry.active(session, task_ops.get_task(session, "reviews"))
    assert new is not None and new.classifier is not old.classifier
    text = TINY[0][0]
    assert new.classifier.predict([text]).predicted != old.classifier.predict([text]).predicted
