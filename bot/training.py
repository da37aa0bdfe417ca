"""Retraining: the one job that `hitl retrain`, `/hitl retrain` and the nightly schedule run.

Per task: skip when nothing new was answered; keep a stable hash-chosen holdout out of
training; train a candidate on the rest; measure the candidate and the active model on the
same holdout and on recent traffic; promote only if holdout macro-F1 does not drop by more
than the tolerance; re-score the open review queue; store the run with its report. Any failure
leaves the active model serving and is recorded as a failed run.
"""

import hashlib
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot import outbox
from bot.errors import HitlError
from bot.registry import ModelRegistry, active_version, store_model
from bot.settings import Settings
from bot.states import IMPORT_USER, AnswerKind, LabelSource, ModelStatus, Route, RunStatus
from bot.storage.bulk import insert_rows
from bot.storage.schema import Answer, Item, Prediction, RetrainRun, Task, utcnow
from bot.tasks import get_task
from model import TextClassifier, TrainingError, train
from model.classifier import cross_val_probabilities, minimum_count_missing
from model.metrics import evaluate, per_label_f1

logger = logging.getLogger(__name__)

HOLDOUT_MINIMUM = 50
RECENT_LIMIT = 20_000
STALE_RUN = timedelta(hours=2)
_HASH_BUCKETS = 10_000
_HISTOGRAM_EDGES = np.linspace(0.0, 1.0, 21)

PROMOTED, KEPT, SKIPPED, COLD, FAILED, RUNNING, CLAIMED = (
    RunStatus.PROMOTED,
    RunStatus.KEPT,
    RunStatus.SKIPPED,
    RunStatus.COLD,
    RunStatus.FAILED,
    RunStatus.RUNNING,
    RunStatus.CLAIMED,
)


class RetrainFailed(HitlError):
    """A retrain could not finish; the active model keeps serving."""


@dataclass(frozen=True)
class LabelledData:
    """The human-labelled items of a task (final labels only, skips excluded)."""

    item_ids: list[int]
    texts: list[str]
    labels: list[str]


@dataclass(frozen=True)
class TrainedCandidate:
    """A freshly trained classifier and the data it was measured on."""

    classifier: TextClassifier
    train_size: int
    holdout_size: int
    evaluation: str  # "holdout" or "cross-validation"
    metrics: dict[str, float]
    holdout_texts: list[str]
    holdout_truth: list[str]
    probabilities: NDArray[np.float64]


@dataclass(frozen=True)
class MessageToUpdate:
    """A posted review prompt whose item the new model resolved."""

    item_id: int
    channel: str
    ts: str


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain did, with its report (the figures behind the Slack message)."""

    task: str
    status: str
    version: int | None
    old_version: int | None
    run_id: int | None
    channel: str | None
    report: dict[str, Any] = field(default_factory=dict)
    updates: list[MessageToUpdate] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One line for the CLI and logs."""
        return str(self.report.get("headline", self.status))


def load_labelled(session: Session, task: Task) -> LabelledData:
    """Every item of `task` whose final label was given by a person."""
    rows = session.execute(
        select(Item.id, Item.text, Item.final_label)
        .where(Item.task_id == task.id, Item.final_source == LabelSource.PERSON)
        .order_by(Item.id)
    ).all()
    known = set(task.labels)
    kept = [row for row in rows if row.final_label in known]
    return LabelledData(
        item_ids=[row.id for row in kept],
        texts=[row.text for row in kept],
        labels=[str(row.final_label) for row in kept],
    )


def in_holdout(item_ids: Sequence[int], *, share: float) -> NDArray[np.bool_]:
    """A stable share of items, chosen by a hash of their id, that never enters training."""
    cut = round(share * _HASH_BUCKETS)
    buckets = [
        int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=4).digest(), "big")
        % _HASH_BUCKETS
        for i in item_ids
    ]
    return np.asarray(buckets, dtype=np.int64) < cut


def train_candidate(
    data: LabelledData,
    *,
    labels: Sequence[str],
    featurizer: str,
    min_per_label: int,
    holdout_share: float,
) -> TrainedCandidate:
    """Train on the non-holdout answers and measure on the holdout (or by cross-validation)."""
    short = minimum_count_missing(labels, data.labels, min_per_label=min_per_label)
    if short:
        shown = ", ".join(f"{label!r} has {count}" for label, count in list(short.items())[:8])
        more = f" and {len(short) - 8} more" if len(short) > 8 else ""
        raise TrainingError(
            f"every label needs at least {min_per_label} answers before a first model; "
            f"{shown}{more}"
        )
    holdout = in_holdout(data.item_ids, share=holdout_share)
    texts = np.asarray(data.texts, dtype=object)
    truth = np.asarray(data.labels, dtype=object)
    fit_labels = [str(x) for x in truth[~holdout]]
    use_holdout = int(holdout.sum()) >= HOLDOUT_MINIMUM and not minimum_count_missing(
        labels, fit_labels, min_per_label=min_per_label
    )
    if use_holdout:
        classifier = train(
            [str(x) for x in texts[~holdout]],
            fit_labels,
            labels=labels,
            featurizer=featurizer,
            min_per_label=min_per_label,
        )
        held_texts = [str(x) for x in texts[holdout]]
        held_truth = [str(x) for x in truth[holdout]]
        probabilities = classifier.predict(held_texts).probabilities
        metrics = evaluate(probabilities, labels, held_truth)
        return TrainedCandidate(
            classifier,
            len(fit_labels),
            len(held_truth),
            "holdout",
            metrics,
            held_texts,
            held_truth,
            probabilities,
        )
    # Too few answers for a meaningful holdout: measure by cross-validation, train on everything.
    probabilities = cross_val_probabilities(
        data.texts, data.labels, labels=labels, featurizer=featurizer
    )
    metrics = evaluate(probabilities, labels, data.labels)
    classifier = train(
        data.texts, data.labels, labels=labels, featurizer=featurizer, min_per_label=min_per_label
    )
    return TrainedCandidate(
        classifier,
        len(data.labels),
        0,
        "cross-validation",
        metrics,
        list(data.texts),
        list(data.labels),
        probabilities,
    )


def worker_name() -> str:
    """Who claims a run: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim(
    sessions: sessionmaker[Session],
    task_name: str,
    *,
    trigger: str,
    scheduled_for: datetime | None,
    now: datetime,
) -> tuple[int, int] | None:
    """Record the run; None when another scheduler already claimed this task's slot."""
    try:
        with sessions.begin() as session:
            task = get_task(session, task_name)
            # A run that stopped sending heartbeats long ago died (process killed, machine lost).
            session.execute(
                update(RetrainRun)
                .where(
                    RetrainRun.task_id == task.id,
                    RetrainRun.status == RUNNING,
                    RetrainRun.heartbeat_at < now - STALE_RUN,
                )
                .values(status=FAILED, error="the process running it stopped", finished_at=now)
            )
            run = RetrainRun(
                task_id=task.id,
                trigger=trigger,
                scheduled_for=scheduled_for,
                claimed_by=worker_name(),
                started_at=now,
                heartbeat_at=now,
                status=RUNNING,
            )
            session.add(run)
            session.flush()
            return task.id, run.id
    except IntegrityError:
        return None


def _finish(
    sessions: sessionmaker[Session],
    run_id: int,
    *,
    status: str,
    report: dict[str, Any],
    error: str | None = None,
    old: int | None = None,
    new: int | None = None,
) -> None:
    with sessions.begin() as session:
        run = session.get_one(RetrainRun, run_id)
        run.status, run.error, run.report = status, error, report
        run.finished_at = utcnow()
        run.old_version, run.new_version = old, new


def new_answers_since(session: Session, task: Task, since: datetime | None) -> tuple[int, int]:
    """Labels given by people (and imports) since `since`: how many, and by how many people."""
    conditions = [Item.task_id == task.id, Answer.kind == AnswerKind.LABEL]
    if since is not None:
        conditions.append(Answer.created_at > since)
    count, people = session.execute(
        select(func.count(), func.count(func.distinct(Answer.user_id)))
        .select_from(Answer)
        .join(Item, Item.id == Answer.item_id)
        .where(and_(*conditions))
    ).one()
    humans = session.scalar(
        select(func.count(func.distinct(Answer.user_id)))
        .join(Item, Item.id == Answer.item_id)
        .where(and_(*conditions), Answer.user_id != IMPORT_USER)
    )
    return int(count), int(humans or 0) if people else 0


def recent_texts(session: Session, task: Task, *, since: datetime) -> list[str]:
    """Texts of items submitted since `since` (not imports), newest first, capped."""
    return list(
        session.scalars(
            select(Item.text)
            .where(Item.task_id == task.id, Item.source != "import", Item.submitted_at >= since)
            .order_by(Item.id.desc())
            .limit(RECENT_LIMIT)
        )
    )


def traffic_figures(
    confidences: NDArray[np.float64], *, threshold: float, days: int
) -> dict[str, Any]:
    """Mean confidence, share routed automatically, items per day and a histogram."""
    n = len(confidences)
    auto = float((confidences >= threshold).mean()) if n else 0.0
    histogram, _ = np.histogram(confidences, bins=_HISTOGRAM_EDGES)
    return {
        "mean_confidence": float(confidences.mean()) if n else 0.0,
        "auto_share": auto,
        "auto_per_day": auto * n / days,
        "histogram": [int(x) for x in histogram],
    }


def label_movers(
    old: dict[str, float], new: dict[str, float], *, limit: int = 3
) -> dict[str, list[dict[str, float | str]]]:
    """Labels whose F1 rose or fell the most between two models."""
    ordered = sorted(new, key=lambda k: new[k] - old.get(k, 0.0))

    def row(label: str) -> dict[str, float | str]:
        before = old.get(label, 0.0)
        return {"label": label, "old": before, "new": new[label], "delta": new[label] - before}

    gains = [row(k) for k in reversed(ordered) if new[k] > old.get(k, 0.0)][:limit]
    losses = [row(k) for k in ordered if new[k] < old.get(k, 0.0)][:limit]
    return {"gains": gains, "losses": losses}


def _rescore_queue(
    session: Session,
    task: Task,
    classifier: TextClassifier,
    *,
    model_id: int,
    version: int,
    now: datetime,
) -> tuple[int, list[MessageToUpdate]]:
    """Resolve open review items the new model is now sure about; returns messages to update."""
    open_items = session.execute(
        select(Item.id, Item.text).where(
            Item.task_id == task.id, Item.route == Route.REVIEW, Item.final_source.is_(None)
        )
    ).all()
    if not open_items:
        return 0, []
    prediction = classifier.predict([row.text for row in open_items])
    sure = [int(i) for i in np.flatnonzero(prediction.confidence >= task.threshold)]
    if not len(sure):
        return 0, []
    resolved_ids = [int(open_items[i].id) for i in sure]
    insert_rows(
        session,
        Prediction,
        [
            {
                "item_id": open_items[i].id,
                "model_version_id": model_id,
                "label": prediction.predicted[i],
                "confidence": float(prediction.confidence[i]),
                "probabilities": np.round(prediction.probabilities[i], 5).tolist(),
                "route": Route.AUTO,
                "created_at": now,
            }
            for i in sure
        ],
    )
    for i in sure:
        session.execute(
            update(Item)
            .where(Item.id == int(open_items[i].id), Item.final_source.is_(None))
            .values(
                final_label=prediction.predicted[i], final_source=LabelSource.MODEL, resolved_at=now
            )
        )
    updates = [
        MessageToUpdate(m.item_id, m.channel, m.ts)
        for m in outbox.mark_resolved(session, resolved_ids, now=now)
    ]
    logger.info("task %s: model v%d resolved %d queued items", task.name, version, len(sure))
    return len(sure), updates


def retrain_task(
    sessions: sessionmaker[Session],
    task_name: str,
    *,
    registry: ModelRegistry,
    settings: Settings,
    trigger: str = "cli",
    scheduled_for: datetime | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> RetrainResult:
    """Run the retrain job for one task and store the run; see the module docstring."""
    now = now or utcnow()
    claimed = _claim(sessions, task_name, trigger=trigger, scheduled_for=scheduled_for, now=now)
    if claimed is None:
        return RetrainResult(
            task_name,
            CLAIMED,
            None,
            None,
            None,
            None,
            {"headline": f"{task_name}: already retrained for this slot"},
        )
    task_id, run_id = claimed
    try:
        return _run(
            sessions, task_id, run_id, registry=registry, settings=settings, force=force, now=now
        )
    except Exception as exc:  # the job's boundary: every failure is recorded and reported
        logger.exception("retrain of %s failed", task_name)
        reason = (
            str(exc)
            if isinstance(exc, HitlError | TrainingError)
            else f"{type(exc).__name__}: {exc}"
        )
        report = {"headline": f"{task_name}: retrain failed: {reason}", "status": FAILED}
        _finish(sessions, run_id, status=FAILED, report=report, error=reason[:2000])
        raise RetrainFailed(f"retrain of {task_name!r} failed: {reason}") from exc


def _run(
    sessions: sessionmaker[Session],
    task_id: int,
    run_id: int,
    *,
    registry: ModelRegistry,
    settings: Settings,
    force: bool,
    now: datetime,
) -> RetrainResult:
    with sessions.begin() as session:
        task = session.get_one(Task, task_id)
        name, channel, threshold = task.name, task.channel, task.threshold
        labels, featurizer = list(task.labels), task.featurizer
        active = active_version(session, task)
        old_version = active.version if active else None
        new_count, people = new_answers_since(session, task, active.created_at if active else None)
        data = load_labelled(session, task)
        window = now - timedelta(days=settings.report_window_days)
        traffic = recent_texts(session, task, since=window)
        old_classifier = registry.load(session, active.id) if active else None
        old_metrics = dict(active.metrics) if active else {}

    base: dict[str, Any] = {
        "task": name,
        "threshold": threshold,
        "old_version": old_version,
        "new_answers": new_count,
        "answerers": people,
        "started_at": now.isoformat(),
        "window_days": settings.report_window_days,
    }
    if active is not None and new_count == 0 and not force:
        report = {
            **base,
            "status": SKIPPED,
            "headline": f"{name}: no new answers since model v{old_version}; kept it",
        }
        _finish(sessions, run_id, status=SKIPPED, report=report, old=old_version, new=old_version)
        return RetrainResult(name, SKIPPED, old_version, old_version, run_id, channel, report)
    try:
        candidate = train_candidate(
            data,
            labels=labels,
            featurizer=featurizer,
            min_per_label=settings.min_answers_per_label,
            holdout_share=settings.holdout_share,
        )
    except TrainingError as exc:
        if active is not None:
            raise
        report = {**base, "status": COLD, "headline": f"{name}: no model yet: {exc}"}
        _finish(sessions, run_id, status=COLD, report=report)
        return RetrainResult(name, COLD, None, None, run_id, channel, report)

    new_metrics = candidate.metrics
    new_f1 = per_label_f1(candidate.probabilities, labels, candidate.holdout_truth)
    if old_classifier is not None and candidate.evaluation == "holdout":
        old_probabilities = old_classifier.predict(candidate.holdout_texts).probabilities
        old_eval = evaluate(old_probabilities, labels, candidate.holdout_truth)
        old_f1 = per_label_f1(old_probabilities, labels, candidate.holdout_truth)
        compared_on = "holdout"
    else:
        # Without a holdout the old model can only be judged by the figures it was stored with.
        old_eval = {k: float(v) for k, v in old_metrics.items() if isinstance(v, int | float)}
        old_f1 = {}
        compared_on = "cross-validated" if old_classifier is not None else "none"

    recent_new = candidate.classifier.predict(traffic).confidence if traffic else np.zeros(0)
    recent_old = (
        old_classifier.predict(traffic).confidence
        if traffic and old_classifier is not None
        else np.zeros(len(traffic))
    )
    days = settings.report_window_days
    tolerance = settings.promotion_tolerance
    old_macro = float(old_eval.get("macro_f1", 0.0))
    if old_classifier is None:
        promote, reason = True, "first model of the task"
    elif new_metrics["macro_f1"] >= old_macro - tolerance:
        promote, reason = (
            True,
            (
                f"{compared_on} macro-F1 {new_metrics['macro_f1']:.3f} vs {old_macro:.3f}"
                f" (tolerance {tolerance:g})"
            ),
        )
    else:
        promote, reason = (
            False,
            (
                f"{compared_on} macro-F1 would fall from {old_macro:.3f} to "
                f"{new_metrics['macro_f1']:.3f}, more than the tolerance {tolerance:g}"
            ),
        )
    stored_metrics: dict[str, Any] = {
        **new_metrics,
        "evaluation": candidate.evaluation,
        "holdout_size": candidate.holdout_size,
        "trained_at": now.isoformat(),
    }
    old_traffic = traffic_figures(recent_old, threshold=threshold, days=days)
    new_traffic = traffic_figures(recent_new, threshold=threshold, days=days)
    report = {
        **base,
        "train_size": candidate.train_size,
        "holdout_size": candidate.holdout_size,
        "evaluation": candidate.evaluation,
        "compared_on": compared_on,
        "holdout": {"old": old_eval if old_classifier is not None else None, "new": new_metrics},
        "recent": {
            "items": len(traffic),
            "items_per_day": len(traffic) / days,
            "old": old_traffic if old_classifier is not None else None,
            "new": new_traffic,
            "confidence_gain": (
                new_traffic["mean_confidence"] - old_traffic["mean_confidence"]
                if old_classifier is not None and len(traffic)
                else None
            ),
            "histogram_edges": [float(x) for x in _HISTOGRAM_EDGES],
        },
        "movers": label_movers(old_f1, new_f1) if old_f1 else {"gains": [], "losses": []},
        "promoted": promote,
        "reason": reason,
    }
    with sessions.begin() as session:
        task = session.get_one(Task, task_id)
        row = store_model(
            session,
            task,
            candidate.classifier,
            status=ModelStatus.ACTIVE if promote else ModelStatus.REJECTED,
            train_size=candidate.train_size,
            metrics=stored_metrics,
        )
        version = row.version
        resolved, updates = 0, list[MessageToUpdate]()
        if promote:
            resolved, updates = _rescore_queue(
                session, task, candidate.classifier, model_id=row.id, version=version, now=now
            )
        report["new_version"] = version
        report["queue_resolved"] = resolved
        report["status"] = PROMOTED if promote else KEPT
        report["headline"] = (
            (
                f"model v{old_version} → v{version} promoted"
                if old_version
                else f"first model v{version} promoted"
            )
            if promote
            else f"kept v{old_version}; candidate v{version} rejected"
        )
        report["finished_at"] = utcnow().isoformat()
        run = session.get_one(RetrainRun, run_id)
        run.status, run.report, run.finished_at = report["status"], report, utcnow()
        run.old_version, run.new_version = old_version, version
    if promote:
        # Serve the new model from the cache at once; the registry reloads by id anyway.
        with sessions.begin() as session:
            registry.load(session, row.id)
    return RetrainResult(
        name,
        str(report["status"]),
        version if promote else old_version,
        old_version,
        run_id,
        channel,
        report,
        updates,
    )


def latest_run(session: Session, task: Task, *, version: int | None = None) -> RetrainRun | None:
    """The newest finished run of a task with a report (for a model version, if given)."""
    query = select(RetrainRun).where(RetrainRun.task_id == task.id, RetrainRun.report.is_not(None))
    if version is not None:
        query = query.where(RetrainRun.new_version == version)
    return session.scalar(query.order_by(RetrainRun.id.desc()).limit(1))


def version_history(session: Session, task: Task) -> list[dict[str, Any]]:
    """Per promoted run: version, holdout accuracy and automatic share, oldest first."""
    runs = session.scalars(
        select(RetrainRun)
        .where(RetrainRun.task_id == task.id, RetrainRun.status == PROMOTED)
        .order_by(RetrainRun.id)
    ).all()
    history = []
    for run in runs:
        report = run.report or {}
        new = (report.get("holdout") or {}).get("new") or {}
        recent = ((report.get("recent") or {}).get("new")) or {}
        history.append(
            {
                "version": run.new_version,
                "accuracy": new.get("accuracy"),
                "macro_f1": new.get("macro_f1"),
                "auto_share": recent.get("auto_share"),
            }
        )
    return history
