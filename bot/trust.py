"""Trust in automatic answers: target precision, what-if previews, spot checks, reviewers' votes.

A task either has a hand-set threshold or a target precision. With a target, the threshold is
chosen from the active model's out-of-fold evidence (see `model.trust`) when the target is set
and again after every retrain; while the evidence cannot support the target nothing is
automated. Spot checks (a share of automatic answers also shown to a person, without the
model's guess) measure the precision the automatic path really has.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.errors import BadInputError, NotFoundError
from bot.queries import recent_texts
from bot.registry import ModelRegistry, active_version
from bot.report import LivePrecision
from bot.routing import AutoRule, effective_threshold
from bot.states import IMPORT_USER, AnswerKind, LabelSource
from bot.storage.schema import Answer, Item, Prediction, Task, utcnow
from bot.tasks import audit, number_or_percent, parse_threshold
from model.intervals import clopper_pearson
from model.trust import CALIBRATION_BINS, ThresholdChoice, choose_threshold, precision_above

# Spot checks older than this no longer describe today's automatic answers.
SPOT_CHECK_WINDOW = timedelta(days=90)
MAX_VOTES = 10


def parse_share(raw: str | float, *, what: str) -> float:
    """A share in [0, 1]; accepts 0.02 and "2%"."""
    text = str(raw).strip()
    try:
        value = number_or_percent(text)
    except ValueError:
        raise BadInputError(f"{what} {text!r} is not a number; give e.g. 0.02 or 2%") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise BadInputError(f"{what} {text} is out of range; it must be between 0 and 1 (0%-100%)")
    return value


def parse_precision(raw: str | float) -> float:
    """A target precision above 0.5 and below 1; accepts 0.95 and "95%"."""
    text = str(raw).strip()
    try:
        value = number_or_percent(text)
    except ValueError:
        raise BadInputError(
            f"target precision {text!r} is not a number; give e.g. 0.95 or 95%"
        ) from None
    if not math.isfinite(value) or not 0.5 <= value < 1.0:
        raise BadInputError(
            f"target precision {text} is out of range; give at least 0.5 and below 1 "
            "(no evidence can promise 100 %)"
        )
    return value


def set_spot_check_rate(session: Session, task: Task, value: str | float, *, actor: str) -> float:
    """Change the share of automatic answers sent for a spot check, audited; returns the old one."""
    new = parse_share(value, what="spot-check share")
    old = task.spot_check_rate
    task.spot_check_rate = new
    audit(session, task, "spot_check_rate", old, new, actor=actor)
    return old


def set_votes_required(session: Session, task: Task, value: str | int, *, actor: str) -> int:
    """Change how many agreeing answers resolve an item, audited; returns the old number."""
    try:
        new = int(str(value).strip())
    except ValueError:
        raise BadInputError(f"votes {str(value)[:40]!r} is not a whole number, e.g. 2") from None
    if not 1 <= new <= MAX_VOTES:
        raise BadInputError(f"votes must be between 1 and {MAX_VOTES}; got {new}")
    old = task.votes_required
    task.votes_required = new
    audit(session, task, "votes_required", old, new, actor=actor)
    return old


# --- target precision ---------------------------------------------------------------------------


def stored_evidence(metrics: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """A model's stored out-of-fold evidence as (confidences, correct), or None without it.

    Each item sits at its bin's lower edge, so a threshold chosen on it never promises more
    than the unbinned evidence would.
    """
    counts = (metrics or {}).get("calibration")
    if not isinstance(counts, list) or not counts:
        return None
    confidences, correct = [], []
    for b, items, right in counts:
        edge = int(b) / CALIBRATION_BINS
        confidences += [edge] * int(items)
        correct += [True] * int(right) + [False] * (int(items) - int(right))
    return np.asarray(confidences, dtype=np.float64), np.asarray(correct, dtype=bool)


def choose_for_task(session: Session, task: Task, target: float) -> ThresholdChoice:
    """The threshold the active model's stored evidence supports for `target`."""
    model = active_version(session, task)
    evidence = stored_evidence(model.metrics if model else None)
    if evidence is None:
        return choose_threshold(np.zeros(0), np.zeros(0, dtype=bool), target=target)
    return choose_threshold(evidence[0], evidence[1], target=target)


def apply_choice(
    task: Task,
    choice: ThresholdChoice,
    *,
    now: datetime,
    raised_to: float | None = None,
) -> None:
    """Route by `choice` from now on (nothing automated when it has no threshold)."""
    before = effective_threshold(task)
    evidence = choice.as_dict()
    if choice.threshold is not None:
        task.threshold = raised_to if raised_to is not None else choice.threshold
        task.precision_lower_bound = choice.lower_bound
    else:
        task.precision_lower_bound = None
    if raised_to is not None:
        evidence["raised_by_spot_checks"] = True
        evidence["threshold"] = raised_to
    task.threshold_evidence = evidence
    after = effective_threshold(task)
    # Spot checks at a higher threshold than today's would miss the newly automated range, and
    # those that raised it judged answers no longer automated: both start afresh. A threshold
    # that merely rises keeps them (they then err on the pessimistic side).
    lowered = after is not None and (before is None or after < before)
    if lowered or raised_to is not None or task.threshold_since is None:
        task.threshold_since = now
    task.precision_alert_at = None


def set_target_precision(
    session: Session, task: Task, value: str | float, *, actor: str, now: datetime | None = None
) -> ThresholdChoice:
    """Switch a task to a target precision, audited; the threshold follows from the evidence."""
    now = now or utcnow()
    target = parse_precision(value)
    old = task.target_precision
    task.target_precision = target
    audit(session, task, "target_precision", old, target, actor=actor)
    choice = choose_for_task(session, task, target)
    apply_choice(task, choice, now=now)
    return choice


def threshold_state(task: Task) -> dict[str, Any]:
    """What `hitl threshold` and `hitl stats --json` say about the threshold."""
    evidence = task.threshold_evidence or {}
    automating = effective_threshold(task) is not None
    return {
        "mode": "precision" if task.target_precision is not None else "manual",
        "target_precision": task.target_precision,
        "threshold": task.threshold if automating else None,
        "precision_lower_bound": task.precision_lower_bound,
        "confidence_level": evidence.get("confidence_level"),
        "automating": automating,
        "reason": evidence.get("reason")
        if task.target_precision is not None
        else "set by hand: no precision is promised",
    }


# --- what-if ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """What a threshold would do to recent traffic, before anyone commits to it."""

    task: str
    threshold: float
    current_threshold: float | None
    items: int
    days: int
    review_share: float | None
    review_per_day: float
    auto_per_day: float
    auto_precision: dict[str, Any]
    model_version: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (`hitl threshold TASK X --preview --json`)."""
        return {
            "task": self.task,
            "threshold": self.threshold,
            "current_threshold": self.current_threshold,
            "model_version": self.model_version,
            "items": self.items,
            "days": self.days,
            "review_share": self.review_share,
            "review_per_day": round(self.review_per_day, 2),
            "auto_share": None if self.review_share is None else 1 - self.review_share,
            "auto_per_day": round(self.auto_per_day, 2),
            "auto_precision": self.auto_precision,
        }


def preview(
    session: Session,
    task: Task,
    threshold: str | float,
    *,
    registry: ModelRegistry,
    days: int,
    now: datetime | None = None,
) -> Preview:
    """Share and number of items a day that would go to people, and the precision expected."""
    value = parse_threshold(threshold)
    now = now or utcnow()
    loaded = registry.active(session, task)
    model = active_version(session, task)
    if loaded is None or model is None:
        raise NotFoundError(
            f"task {task.name!r} has no model yet, so there is nothing to preview; "
            "answer some items and run `hitl retrain`"
        )
    texts = recent_texts(session, task, since=now - timedelta(days=days))
    rule = AutoRule.of(task, model.metrics).with_threshold(value)
    automatic = rule.mask(loaded.classifier.predict(texts)) if texts else np.zeros(0, dtype=bool)
    auto = int(automatic.sum())
    evidence = stored_evidence(model.metrics)
    if evidence is None:
        estimate: dict[str, Any] = {"estimate": None, "low": 0.0, "high": 1.0, "n": 0}
    else:
        right, total = precision_above(model.metrics["calibration"], value)
        estimate = clopper_pearson(right, total).as_dict()
    return Preview(
        task=task.name,
        threshold=value,
        current_threshold=effective_threshold(task),
        items=len(texts),
        days=days,
        review_share=(1 - auto / len(texts)) if texts else None,
        review_per_day=(len(texts) - auto) / days,
        auto_per_day=auto / days,
        auto_precision=estimate,
        model_version=model.version,
    )


# --- spot checks ----------------------------------------------------------------------------------


def live_precision(session: Session, task: Task, *, now: datetime | None = None) -> LivePrecision:
    """Precision of the automatic answers, from spot checks since the threshold took effect.

    A spot check counts once a person answered it: right when the decided label is the model's
    or, while a second opinion is pending, when every answer so far agrees with the model. A
    correction waiting for its second opinion counts as wrong, so waiting never flatters.
    """
    now = now or utcnow()
    since = now - SPOT_CHECK_WINDOW
    if task.threshold_since is not None and task.threshold_since > since:
        since = task.threshold_since
    checked = select(Item.id).where(
        Item.task_id == task.id, Item.spot_check.is_(True), Item.submitted_at >= since
    )
    first = (
        select(Prediction.item_id, func.min(Prediction.id).label("first_id"))
        .where(Prediction.item_id.in_(checked))
        .group_by(Prediction.item_id)
        .subquery()
    )
    rows = session.execute(
        select(Item.id, Item.final_label, Item.final_source, Prediction.label, Answer.label)
        .join(first, first.c.item_id == Item.id)
        .join(Prediction, Prediction.id == first.c.first_id)
        .join(Answer, Answer.item_id == Item.id)
        .where(
            Answer.is_current.is_(True),
            Answer.kind == AnswerKind.LABEL,
            Answer.user_id != IMPORT_USER,
        )
    ).all()
    verdicts: dict[int, bool] = {}
    for item_id, final, source, guessed, answered in rows:
        if source == LabelSource.PERSON:
            verdicts[item_id] = final == guessed
        else:
            verdicts[item_id] = verdicts.get(item_id, True) and answered == guessed
    right = sum(verdicts.values())
    interval = clopper_pearson(right, len(verdicts))
    return LivePrecision(interval.estimate, interval.low, interval.high, interval.n)


def precision_alarm(session: Session, task: Task, *, now: datetime) -> LivePrecision | None:
    """The spot-check figures when they just fell below the target (tell the channel once)."""
    if task.target_precision is None or task.precision_alert_at is not None:
        return None
    live = live_precision(session, task, now=now)
    if live.n == 0 or live.high >= task.target_precision:
        return None
    task.precision_alert_at = now
    audit(
        session, task, "precision_alert", None, f"{right_share(live)} < target", actor="spot checks"
    )
    return live


def right_share(live: LivePrecision) -> str:
    """`"41 of 50 right (82 %, 95 % interval 69 %-91 %)"`."""
    right = round((live.estimate or 0.0) * live.n)
    return (
        f"{right} of {live.n} right ({live.estimate or 0:.0%}, 95 % interval "
        f"{live.low:.0%}-{live.high:.0%})"
    )


def raised_threshold(current: float) -> float:
    """Where the threshold goes when spot checks refute the target: halfway to 1."""
    return round(current + (1.0 - current) / 2, 4)
