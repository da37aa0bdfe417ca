"""The review queue: the order people are asked in, what waits for them, and daily budgets.

Order (`model.ranking`): the most uncertain item first (the smallest margin between the model's
two best labels: its answer teaches the model most), spread so that near-duplicates of an item
already ahead move back (cosine similarity of the model's own features), and aged (a third of a
point a day) so that nothing waits forever. A spot check counts as a coin toss, so measuring the
automatic answers is never starved by a long queue. Without a model every item scores 0 and the
queue keeps arrival order.

A prompt gets the cheap part (its uncertainty) when it is queued; the whole ranking, spread and
age included, is redone after each retrain and every few minutes (`rerank_all`), for at most the
`RERANK_LIMIT` best and `RERANK_LIMIT` oldest pending prompts of a task, so a huge queue costs no
more than a long one and its oldest items still age their way up.

A task's daily budget caps the prompts posted per day (in `HITL_TIMEZONE`); the rest wait, still
ranked, for the next day. The daily digest tells the channel how many items wait.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Table, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.errors import BadInputError
from bot.outbox import waits_for_a_person
from bot.posting_hours import PostingHours
from bot.registry import ModelRegistry
from bot.states import PromptState
from bot.storage.schema import Item, Prediction, ReviewPrompt, Task
from bot.tasks import audit, list_tasks
from model import TextClassifier
from model.ranking import margin_uncertainty, rank

logger = logging.getLogger(__name__)

# Re-ranking reads at most this many of a task's best pending prompts, and as many oldest.
RERANK_LIMIT = 1000
# How often the serve process re-ranks every task's queue (ages move, answers leave gaps).
RERANK_MINUTES = 5
# A spot check asks about an automatic answer; it ranks like an item the model cannot decide.
SPOT_CHECK_UNCERTAINTY = 1.0
MAX_DAILY_BUDGET = 100_000
NO_BUDGET_WORDS = frozenset({"none", "unlimited", "off"})
# Prompts in these states wait for a person: queued, being sent, or in the channel.
_OPEN = (PromptState.PENDING, PromptState.SENDING, PromptState.POSTED)
_SECONDS_PER_DAY = 86_400.0


# --- order ----------------------------------------------------------------------------------


def enqueue_priorities(
    probabilities: Sequence[Sequence[float] | None], spot_checks: Sequence[bool]
) -> list[float]:
    """The priority of newly queued items: their margin uncertainty (0 without a model)."""
    priorities = []
    for probs, spot in zip(probabilities, spot_checks, strict=True):
        if spot:
            priorities.append(SPOT_CHECK_UNCERTAINTY)
        elif probs is None or len(probs) < 2:
            priorities.append(0.0)
        else:
            row = np.asarray([probs], dtype=np.float64)
            priorities.append(float(margin_uncertainty(row)[0]))
    return priorities


def rerank(
    session: Session,
    task: Task,
    classifier: TextClassifier | None,
    *,
    now: datetime,
    limit: int = RERANK_LIMIT,
) -> int:
    """Rank the task's pending prompts again with `classifier` (None: age alone); returns how
    many were ranked."""
    base = (
        select(ReviewPrompt.id, ReviewPrompt.created_at, Item.text, Item.spot_check)
        .join(Item, Item.id == ReviewPrompt.item_id)
        .where(ReviewPrompt.task_id == task.id, ReviewPrompt.status == PromptState.PENDING)
    )
    best = session.execute(
        base.order_by(ReviewPrompt.priority.desc(), ReviewPrompt.id).limit(limit)
    ).all()
    rows = {int(row[0]): row for row in best}
    if len(best) == limit:  # a long queue: its oldest age their way up from wherever they are
        for row in session.execute(base.order_by(ReviewPrompt.id).limit(limit)).all():
            rows.setdefault(int(row[0]), row)
    if not rows:
        return 0
    # Oldest first: the ranking's ties keep the order it is given.
    ordered = [rows[key] for key in sorted(rows)]
    texts = [str(row[2]) for row in ordered]
    spot = np.asarray([bool(row[3]) for row in ordered], dtype=bool)
    features: Any = None
    if classifier is not None:
        probabilities = classifier.predict(texts).probabilities
        features = classifier.features(texts)
    else:
        probabilities = np.ones((len(texts), 1))  # one label: no uncertainty, age decides
    if spot.any() and probabilities.shape[1] >= 2:
        probabilities = probabilities.copy()
        probabilities[spot] = 1.0 / probabilities.shape[1]
    age_days = np.asarray(
        [(now - row[1]).total_seconds() / _SECONDS_PER_DAY for row in ordered], dtype=np.float64
    )
    ranking = rank(probabilities, features=features, age_days=age_days)
    _store_priorities(session, [int(row[0]) for row in ordered], ranking.priority)
    return len(ordered)


def _store_priorities(
    session: Session, prompt_ids: list[int], priority: NDArray[np.float64]
) -> None:
    table = ReviewPrompt.__table__
    assert isinstance(table, Table)
    session.execute(
        update(table)
        .where(table.c.id == bindparam("prompt_id"), table.c.status == PromptState.PENDING)
        # A new priority is not a new state: `updated_at` dates claims, so it stays.
        .values(priority=bindparam("new_priority"), updated_at=table.c.updated_at),
        [
            {"prompt_id": prompt_id, "new_priority": float(value)}
            for prompt_id, value in zip(prompt_ids, priority, strict=True)
        ],
    )


def rerank_all(sessions: sessionmaker[Session], registry: ModelRegistry, *, now: datetime) -> int:
    """Re-rank every task that has pending prompts with its active model; returns how many
    prompts were ranked. One index lookup per task when nothing waits."""
    with sessions.begin() as session:
        waiting = [
            task.id
            for task in list_tasks(session)
            if session.scalar(
                select(ReviewPrompt.id)
                .where(ReviewPrompt.task_id == task.id, ReviewPrompt.status == PromptState.PENDING)
                .limit(1)
            )
            is not None
        ]
    ranked = 0
    for task_id in waiting:
        with sessions.begin() as session:
            task = session.get_one(Task, task_id)
            loaded = registry.active(session, task)
            ranked += rerank(session, task, loaded.classifier if loaded else None, now=now)
    return ranked


# --- what waits -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """An item waiting for a person, as `hitl queue` shows it."""

    item_id: int
    external_id: str | None
    text: str
    predicted_label: str | None
    confidence: float | None
    priority: float
    posted: bool  # in the channel already (or being sent)
    since: datetime  # queued at

    def as_dict(self) -> dict[str, Any]:
        """`hitl queue --json`: `id` is the caller's id, `item_id` ours (as in `hitl export`)."""
        return {
            "id": self.external_id,
            "item_id": self.item_id,
            "text": self.text,
            "predicted_label": self.predicted_label,
            "confidence": None if self.confidence is None else round(self.confidence, 6),
            "priority": round(self.priority, 6),
        }


@dataclass(frozen=True)
class QueueSummary:
    """How many items of a task wait for a person, and since when the oldest does."""

    waiting: int
    in_channel: int
    oldest_since: datetime | None


def _open_prompts(task: Task) -> Any:
    return (
        select(ReviewPrompt, Item)
        .join(Item, Item.id == ReviewPrompt.item_id)
        .where(
            ReviewPrompt.task_id == task.id,
            ReviewPrompt.status.in_(_OPEN),
            waits_for_a_person(),
        )
    )


def waiting_items(session: Session, task: Task, *, limit: int | None = None) -> list[Waiting]:
    """The items of `task` waiting for a person, in the order they are asked: those in the
    channel already (longest there first), then the ones being sent, then the queued ones in
    the order the poster will send them (priority, then age)."""
    query = _open_prompts(task)
    posted = ReviewPrompt.status == PromptState.POSTED
    groups = [
        query.where(posted).order_by(ReviewPrompt.posted_at.nulls_first(), ReviewPrompt.id),
        query.where(ReviewPrompt.status == PromptState.SENDING).order_by(ReviewPrompt.id),
        query.where(ReviewPrompt.status == PromptState.PENDING).order_by(
            ReviewPrompt.priority.desc(), ReviewPrompt.id
        ),
    ]
    rows: list[tuple[ReviewPrompt, Item]] = []
    for group in groups:
        room = None if limit is None else limit - len(rows)
        if room is not None and room <= 0:
            break
        found = session.execute(group if room is None else group.limit(room)).all()
        rows.extend(found)
    guesses = latest_guesses(session, [item.id for _, item in rows])
    result = []
    for prompt, item in rows:
        label, confidence = guesses.get(item.id, (None, None))
        result.append(
            Waiting(
                item_id=item.id,
                external_id=item.external_id,
                text=item.text,
                predicted_label=label,
                confidence=confidence if label is not None else None,
                priority=prompt.priority,
                posted=prompt.status != PromptState.PENDING,
                since=prompt.created_at,
            )
        )
    return result


def latest_guesses(
    session: Session, item_ids: Sequence[int]
) -> dict[int, tuple[str | None, float | None]]:
    """The latest prediction (label, confidence) of each item."""
    latest: dict[int, tuple[str | None, float | None]] = {}
    for start in range(0, len(item_ids), 1000):
        chunk = list(item_ids[start : start + 1000])
        for item_id, label, confidence in session.execute(
            select(Prediction.item_id, Prediction.label, Prediction.confidence)
            .where(Prediction.item_id.in_(chunk))
            .order_by(Prediction.id)
        ):
            latest[int(item_id)] = (label, confidence)
    return latest


def queue_summary(session: Session, task: Task) -> QueueSummary:
    """How many items of `task` wait for a person, how many of them are in the channel, and
    since when the oldest waits."""
    query = (
        select(
            func.count(),
            func.sum(case((ReviewPrompt.status == PromptState.POSTED, 1), else_=0)),
            func.min(ReviewPrompt.created_at),  # typed like the column: an aware UTC datetime
        )
        .select_from(ReviewPrompt)
        .join(Item, Item.id == ReviewPrompt.item_id)
        .where(
            ReviewPrompt.task_id == task.id,
            ReviewPrompt.status.in_(_OPEN),
            waits_for_a_person(),
        )
    )
    count, in_channel, oldest = session.execute(query).one()
    return QueueSummary(int(count or 0), int(in_channel or 0), oldest)


# --- daily budget ---------------------------------------------------------------------------


def parse_budget(value: str | int | None) -> int | None:
    """Prompts a day, a whole number from 1; `none`, `unlimited` or `off` for no limit."""
    text = str(value).strip()
    if text.lower() in NO_BUDGET_WORDS:
        return None
    try:
        number = int(text)
    except ValueError:
        raise BadInputError(
            f"budget {text[:40]!r} is not a whole number; give prompts a day (e.g. 50), "
            "or `none` for no limit"
        ) from None
    if not 1 <= number <= MAX_DAILY_BUDGET:
        raise BadInputError(
            f"budget must be 1 to {MAX_DAILY_BUDGET:,} prompts a day; got {number} "
            "(`none` removes the limit)"
        )
    return number


def set_daily_budget(session: Session, task: Task, value: str | int, *, actor: str) -> int | None:
    """Change the prompts a task may post a day (None: no limit), audited; returns the old."""
    new = parse_budget(value)
    old = task.daily_budget
    task.daily_budget = new
    audit(session, task, "daily_budget", old, new, actor=actor)
    return old


def posted_today(session: Session, task: Task, *, hours: PostingHours, now: datetime) -> int:
    """Prompts `task` posted (or re-posted) since local midnight."""
    return int(
        session.scalar(
            select(func.count()).where(
                ReviewPrompt.task_id == task.id,
                ReviewPrompt.posted_at >= hours.day_start(now),
            )
        )
        or 0
    )


# --- daily digest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """A task's daily digest: how many of its items wait, posted in its channel."""

    task_id: int
    task_name: str
    channel: str
    team_id: str | None
    day: date
    summary: QueueSummary


def digests_due(session: Session, *, hours: PostingHours, hour: int, now: datetime) -> list[Digest]:
    """The digests due at `now`: tasks with a channel and waiting items whose digest of today
    was not sent, once the day's digest time has come (never in quiet hours)."""
    if hours.is_quiet(now):
        return []
    day = hours.day(now)
    if now < hours.digest_time(day, hour):
        return []
    found = session.scalars(
        select(Task).where(
            Task.channel.is_not(None), or_(Task.digest_on.is_(None), Task.digest_on != day)
        )
    ).all()
    due = []
    for task in found:
        summary = queue_summary(session, task)
        if summary.waiting and task.channel:
            due.append(Digest(task.id, task.name, task.channel, task.team_id, day, summary))
    return due


def claim_digest(session: Session, digest: Digest) -> bool:
    """Take the sending of `digest`; False when it was sent (or is being sent) already."""
    claimed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
        update(Task)
        .where(
            Task.id == digest.task_id,
            or_(Task.digest_on.is_(None), Task.digest_on != digest.day),
        )
        .values(digest_on=digest.day, updated_at=Task.updated_at)
    ).rowcount
    return bool(claimed == 1)


def release_digest(session: Session, digest: Digest) -> None:
    """Sending `digest` failed: let a later round send it."""
    session.execute(
        update(Task)
        .where(Task.id == digest.task_id, Task.digest_on == digest.day)
        .values(digest_on=None, updated_at=Task.updated_at)
    )
