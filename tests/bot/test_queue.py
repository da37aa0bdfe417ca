"""The review queue's storage on SQLite and PostgreSQL: priorities at enqueue, the next prompt
per channel, budgets, re-posts, redraw flags, digests claimed once, re-ranking after a retrain
and its cap for long queues."""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select, update

from bot import outbox, queue
from bot import tasks as task_ops
from bot.answers import get_item, import_examples, record_answer
from bot.ingest import IncomingItem
from bot.posting_hours import PostingHours
from bot.routing import submit
from bot.scheduler import RERANK_JOB_ID, NightlyRetrain
from bot.services import Services
from bot.states import IMPORT_USER, AnswerSource
from bot.storage.schema import Item, ReviewPrompt, Task
from bot.training import retrain_task
from tests.conftest import TINY

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def make_task(services: Services, name: str = "reviews", channel: str = "C0QUEUE01") -> None:
    with services.sessions.begin() as session:
        task_ops.create_task(
            session, name, ["positive", "negative"], channel=channel, threshold=0.99
        )


def queue_items(services: Services, *texts: str, task: str = "reviews", now: datetime = T0) -> None:
    with services.sessions.begin() as session:
        submit(
            session,
            task_ops.get_task(session, task),
            [IncomingItem(text) for text in texts],
            registry=services.registry,
            max_chars=1000,
            now=now,
        )


def set_priorities(services: Services, priorities: dict[int, float]) -> None:
    with services.sessions.begin() as session:
        for prompt_id, priority in priorities.items():
            session.execute(
                update(ReviewPrompt).where(ReviewPrompt.id == prompt_id).values(priority=priority)
            )


def head_ids(services: Services, **kwargs: object) -> dict[str, int]:
    with services.sessions.begin() as session:
        return {h.channel: h.prompt_id for h in outbox.due_heads(session, **kwargs)}  # type: ignore[arg-type]  # skip_tasks


def post(services: Services, prompt_id: int, *, now: datetime, ts: str) -> None:
    with services.sessions.begin() as session:
        assert outbox.claim(session, prompt_id, now=now) is not None
        outbox.mark_posted(session, prompt_id, channel="C0QUEUE01", ts=ts, now=now)


def test_enqueue_priorities_are_margin_uncertainty_and_spot_checks_first() -> None:
    priorities = queue.enqueue_priorities(
        [[0.5, 0.5], [0.9, 0.1], None, [0.97, 0.03]], [False, False, False, True]
    )
    assert priorities == pytest.approx([1.0, 0.2, 0.0, 1.0])


def test_the_head_of_a_channel_is_the_highest_priority_then_the_oldest(services: Services) -> None:
    make_task(services)
    make_task(services, "other", channel="C0QUEUE01")  # shares the channel
    make_task(services, "alone", channel="C0ALONE01")
    queue_items(services, "a", "b", "c")  # prompts 1-3 of reviews
    queue_items(services, "d", task="other")  # prompt 4
    queue_items(services, "e", "f", task="alone")  # prompts 5, 6
    assert head_ids(services) == {"C0QUEUE01": 1, "C0ALONE01": 5}  # no model: arrival order
    set_priorities(services, {2: 0.7, 3: 0.7, 4: 0.5, 6: 0.1})
    assert head_ids(services) == {"C0QUEUE01": 2, "C0ALONE01": 6}
    set_priorities(services, {4: 0.9})
    assert head_ids(services) == {"C0QUEUE01": 4, "C0ALONE01": 6}
    with services.sessions.begin() as session:
        other = task_ops.get_task(session, "other").id
    assert head_ids(services, skip_tasks={other}) == {"C0QUEUE01": 2, "C0ALONE01": 6}


def test_budgets_count_what_was_posted_since_the_day_began(services: Services) -> None:
    make_task(services)
    queue_items(services, "a", "b", "c")
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        queue.set_daily_budget(session, task, "2", actor="test")
    post(services, 1, now=T0 - timedelta(days=1), ts="1.1")  # yesterday
    post(services, 2, now=T0, ts="1.2")
    day_start = PostingHours().day_start(T0)
    with services.sessions.begin() as session:
        assert outbox.over_budget(session, day_start=day_start) == set()
    post(services, 3, now=T0 + timedelta(hours=1), ts="1.3")
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        assert outbox.over_budget(session, day_start=day_start) == {task.id}
        assert queue.posted_today(session, task, hours=PostingHours(), now=T0) == 2
        queue.set_daily_budget(session, task, "none", actor="test")
        assert outbox.over_budget(session, day_start=day_start) == set()


def test_an_unanswered_prompt_is_queued_again_once_and_answered_ones_never(
    services: Services,
) -> None:
    make_task(services)
    queue_items(services, "a", "b")
    post(services, 1, now=T0, ts="1.1")
    post(services, 2, now=T0, ts="1.2")
    with services.sessions.begin() as session:  # the second item is answered by an import
        items = session.scalars(select(ReviewPrompt.item_id).order_by(ReviewPrompt.id)).all()
        record_answer(
            session,
            get_item(session, items[1]),
            IMPORT_USER,
            label="negative",
            source=AnswerSource.IMPORT,
            now=T0,
        )
    later = T0 + timedelta(hours=25)
    with services.sessions.begin() as session:
        assert (
            outbox.queue_reposts(session, posted_before=later - timedelta(hours=24), now=later) == 1
        )
        assert outbox.queue_reposts(session, posted_before=later, now=later) == 0
        rows = session.execute(
            select(ReviewPrompt.status, ReviewPrompt.message_ts, ReviewPrompt.redraw_at).order_by(
                ReviewPrompt.id
            )
        ).all()
        redraws = outbox.redraws_due(session, limit=10)
    assert [tuple(r) for r in rows] == [("pending", "1.1", None), ("posted", "1.2", T0)]
    assert [(r.prompt_id, r.ts) for r in redraws] == [(2, "1.2")]
    with services.sessions.begin() as session:
        claim = outbox.claim(session, 1, now=later)
        assert claim is not None and claim.previous == outbox.PostedMessage(
            items[0], "C0QUEUE01", "1.1"
        )
        outbox.mark_redrawn(session, redraws[0])
        assert outbox.redraws_due(session, limit=10) == []


def test_a_digest_is_claimed_once_per_day_and_given_back_on_failure(services: Services) -> None:
    make_task(services)
    queue_items(services, "a", "b")
    post(services, 1, now=T0, ts="1.1")
    hours = PostingHours()
    with services.sessions.begin() as session:
        assert queue.digests_due(session, hours=hours, hour=13, now=T0) == []  # before 13:00
        (digest,) = queue.digests_due(session, hours=hours, hour=9, now=T0)
    assert digest.day == date(2026, 3, 2)
    assert (digest.summary.waiting, digest.summary.in_channel) == (2, 1)
    assert digest.summary.oldest_since == T0
    with services.sessions.begin() as session:
        assert queue.claim_digest(session, digest)
    with services.sessions.begin() as session:  # another process, the same day
        assert not queue.claim_digest(session, digest)
        assert queue.digests_due(session, hours=hours, hour=9, now=T0) == []
        queue.release_digest(session, digest)  # Slack refused it
        assert queue.claim_digest(session, digest)
    tomorrow = T0 + timedelta(days=1)
    with services.sessions.begin() as session:
        assert [d.day for d in queue.digests_due(session, hours=hours, hour=9, now=tomorrow)] == [
            date(2026, 3, 3)
        ]


def test_a_retrain_ranks_the_queue_it_leaves(services: Services) -> None:
    """Queued without a model (priority 0), the items are ranked by the first model."""
    make_task(services)
    queue_items(services, "the food was lovely", "cold and rude", "an evening")
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        import_examples(
            session, task, [IncomingItem(t, label=label) for t, label in TINY], max_chars=99
        )
    retrain_task(
        services.sessions, "reviews", registry=services.registry, settings=services.settings
    )
    with services.sessions.begin() as session:
        priorities = session.scalars(select(ReviewPrompt.priority).order_by(ReviewPrompt.id)).all()
    assert all(p > 0 for p in priorities), priorities


def test_a_long_queue_reranks_its_best_and_its_oldest(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a cap of 2: the two best and the two oldest are ranked (age lifts the oldest), the
    rest keep their priority."""
    make_task(services)
    queue_items(services, *[f"item {k}" for k in range(6)])
    set_priorities(services, {5: 0.9, 6: 0.8, 1: 0.1, 2: 0.1, 3: 0.3, 4: 0.2})
    with services.sessions.begin() as session:
        task = session.scalars(select(Task)).one()
        ranked = queue.rerank(session, task, None, now=T0 + timedelta(days=3), limit=2)
        priorities = dict(session.execute(select(ReviewPrompt.id, ReviewPrompt.priority)).all())
    assert ranked == 4
    # No model: every ranked item's score is its age, one point after three days.
    assert [round(priorities[k], 6) for k in (1, 2, 5, 6)] == [1.0] * 4
    assert (priorities[3], priorities[4]) == (0.3, 0.2)


def test_rerank_all_is_cheap_when_nothing_waits(services: Services) -> None:
    make_task(services)
    assert queue.rerank_all(services.sessions, services.registry, now=T0) == 0


def test_the_serve_process_reranks_every_few_minutes(services: Services) -> None:
    nightly = NightlyRetrain(services)
    job = nightly.scheduler.get_job(RERANK_JOB_ID)
    assert job is not None and job.trigger.interval == timedelta(minutes=queue.RERANK_MINUTES)
    make_task(services)
    queue_items(services, "a", "b")
    nightly._rerank()  # what the job runs: no model yet, age alone
    with services.sessions.begin() as session:
        priorities = session.scalars(select(ReviewPrompt.priority)).all()
    assert np.all(np.asarray(priorities) > 0)


def test_items_of_a_task_whose_embedding_model_is_missing_are_refused_whole(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring fails (the embedding model is gone): a clear UnavailableError, nothing stored."""
    from bot.errors import UnavailableError
    from model.embeddings import EmbeddingModelError

    make_task(services)

    class Broken:
        def predict(self, texts: object) -> object:
            raise EmbeddingModelError("embedding model directory /gone does not exist")

    class Loaded:
        classifier = Broken()

    monkeypatch.setattr(services.registry, "active", lambda session, task: Loaded())
    with pytest.raises(UnavailableError, match="cannot score items: embedding model directory"):
        queue_items(services, "a", "b")
    with services.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(ReviewPrompt)) == 0
        assert session.scalar(select(func.count()).select_from(Item)) == 0
