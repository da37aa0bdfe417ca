"""Figures about a task: traffic, routing, answers, queue and the active model."""

import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from bot import outbox
from bot.queries import LabelCounts, label_counts
from bot.registry import active_version
from bot.report import LivePrecision
from bot.states import AnswerKind, AnswerSource, Route
from bot.storage.schema import Answer, Item, Task, utcnow
from bot.trust import live_precision, threshold_state


@dataclass(frozen=True)
class TaskStats:
    """A snapshot of one task's figures."""

    task: str
    labels: int
    channel: str | None
    threshold: float | None  # None while a target precision cannot be supported yet
    items: int
    auto: int
    review: int
    review_queue: int
    imported: int  # labels stored by `hitl import`
    answers: int  # labels given by people in Slack
    label_counts: LabelCounts  # every stored label once, by source

    @property
    def labels_by_source(self) -> dict[str, int]:
        """The label counts as JSON: slack, import, spot_check, total, people."""
        return self.label_counts.as_dict()

    items_today: int
    items_7d: int
    auto_share_7d: float | None
    answers_today: int
    answers_7d: int
    median_answer_seconds: float | None
    top_reviewers: list[tuple[str, int]]
    model_version: int | None
    model_train_size: int | None
    model_metrics: dict[str, Any]
    # Whether prompts can reach the task's channel: {"state": "ok"}, or {"state": "blocked",
    # "reason": …, "since": …} while Slack refuses the token or the channel.
    posting: dict[str, Any]
    prompts_failed: int  # refused by Slack as malformed; `hitl prompts retry` re-queues them
    # Trust: the target (None when the threshold is set by hand), the lower confidence bound
    # behind the chosen threshold, whether anything is automated, and why.
    target_precision: float | None = None
    precision_lower_bound: float | None = None
    automating: bool = True
    threshold_reason: str | None = None
    # Spot checks: the live precision of automatic answers, {estimate, low, high, n}.
    auto_precision: LivePrecision = field(default_factory=lambda: LivePrecision(None, 0, 1, 0))
    spot_check_rate: float = 0.0
    votes_required: int = 1

    @property
    def precision_alarm(self) -> bool:
        """Spot checks put even the top of the interval below the target."""
        return (
            self.target_precision is not None
            and self.auto_precision.n > 0
            and self.auto_precision.high < self.target_precision
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        del data["label_counts"]
        data["labels_by_source"] = self.labels_by_source
        data["auto_precision"] = self.auto_precision.to_json()
        data["precision_alarm"] = self.precision_alarm
        return data


def _count(session: Session, *conditions: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(Item).where(*conditions)) or 0)


def task_stats(session: Session, task: Task, *, now: datetime | None = None) -> TaskStats:
    """Compute the task's figures; 'today' is the last 24 hours, '7d' the last 7 days."""
    now = now or utcnow()
    day, week = now - timedelta(days=1), now - timedelta(days=7)
    mine = Item.task_id == task.id
    submitted = and_(mine, Item.source != "import")
    routes = dict(
        session.execute(
            select(Item.route, func.count()).where(submitted).group_by(Item.route)
        ).all()
    )
    auto, review = int(routes.get(Route.AUTO, 0)), int(routes.get(Route.REVIEW, 0))
    queue = _count(session, mine, Item.route == Route.REVIEW, Item.final_source.is_(None))
    week_routes = dict(
        session.execute(
            select(Item.route, func.count())
            .where(submitted, Item.submitted_at >= week)
            .group_by(Item.route)
        ).all()
    )
    items_7d = int(sum(week_routes.values()))
    counts = label_counts(session, task)
    # The same rule as `label_counts`: current label answers, given by a person in Slack.
    people = and_(
        Answer.kind == AnswerKind.LABEL,
        Answer.is_current.is_(True),
        Answer.source == AnswerSource.SLACK,
        Item.task_id == task.id,
    )
    answers_base = select(func.count()).select_from(Answer).join(Item, Item.id == Answer.item_id)
    answers_today = int(session.scalar(answers_base.where(people, Answer.created_at >= day)) or 0)
    answers_7d = int(session.scalar(answers_base.where(people, Answer.created_at >= week)) or 0)
    waits = session.execute(
        select(Item.submitted_at, func.min(Answer.created_at))
        .join(Answer, Answer.item_id == Item.id)
        .where(people, Item.route == Route.REVIEW, Answer.created_at >= week)
        .group_by(Item.id, Item.submitted_at)
    ).all()
    seconds = [
        (_aware(first) - _aware(submitted_at)).total_seconds() for submitted_at, first in waits
    ]
    reviewers = session.execute(
        select(Answer.user_id, func.count())
        .join(Item, Item.id == Answer.item_id)
        .where(people, Answer.created_at >= week)
        .group_by(Answer.user_id)
        .order_by(func.count().desc(), Answer.user_id)
        .limit(5)
    ).all()
    model = active_version(session, task)
    state = threshold_state(task)
    return TaskStats(
        task=task.name,
        labels=len(task.labels),
        channel=task.channel,
        threshold=state["threshold"],
        items=auto + review + int(routes.get(None, 0)),
        auto=auto,
        review=review,
        review_queue=queue,
        imported=counts.imported,
        answers=counts.slack,
        label_counts=counts,
        items_today=_count(session, submitted, Item.submitted_at >= day),
        items_7d=items_7d,
        auto_share_7d=(week_routes.get(Route.AUTO, 0) / items_7d) if items_7d else None,
        answers_today=answers_today,
        answers_7d=answers_7d,
        median_answer_seconds=statistics.median(seconds) if seconds else None,
        top_reviewers=[(str(user), int(count)) for user, count in reviewers],
        model_version=model.version if model else None,
        model_train_size=model.train_size if model else None,
        model_metrics=dict(model.metrics) if model else {},
        posting=outbox.posting_state(session, task.channel, team_id=task.team_id),
        prompts_failed=outbox.failed_count(session, task),
        target_precision=task.target_precision,
        precision_lower_bound=task.precision_lower_bound,
        automating=state["automating"],
        threshold_reason=state["reason"],
        auto_precision=live_precision(session, task, now=now),
        spot_check_rate=task.spot_check_rate,
        votes_required=task.votes_required,
    )


def _aware(value: datetime) -> datetime:
    # Aggregates can lose the column's type on some backends; treat a naive value as UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
