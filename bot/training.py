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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot import outbox
from bot.errors import HitlError
from bot.queries import LabelCounts, label_counts
from bot.registry import ModelRegistry, active_version, store_model
from bot.report import (
    Holdout,
    HoldoutMetrics,
    LabelMove,
    Movers,
    RecentTraffic,
    RetrainReport,
    Traffic,
    VersionPoint,
)
from bot.settings import Settings
from bot.states import LabelSource, ModelStatus, Route, RunStatus
from bot.storage.bulk import insert_rows
from bot.storage.schema import Item, ModelVersion, Prediction, RetrainRun, Task, utcnow
from bot.tasks import get_task
from model import ArtifactError, TextClassifier, TrainingError, train
from model.classifier import cross_val_probabilities, minimum_count_missing
from model.metrics import evaluate, per_label_f1

logger = logging.getLogger(__name__)

HOLDOUT_MINIMUM = 50
RECENT_LIMIT = 20_000
STALE_RUN = timedelta(hours=2)
_HASH_BUCKETS = 10_000
_HISTOGRAM_EDGES = np.linspace(0.0, 1.0, 21)

# Called with each stage's name as it starts: gathering, training, evaluating, saving, re-scoring.
Progress = Callable[[str], None]

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
    status: RunStatus
    version: int | None
    old_version: int | None
    run_id: int | None
    channel: str | None
    report: RetrainReport
    updates: list[MessageToUpdate] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One line for the CLI and logs."""
        return self.report.headline or self.status.value


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


def _record_run(
    session: Session,
    run_id: int,
    report: RetrainReport,
    *,
    error: str | None = None,
    old: int | None = None,
    new: int | None = None,
) -> None:
    """Write how a run ended, with its report in the stored JSON form."""
    run = session.get_one(RetrainRun, run_id)
    run.status, run.error, run.report = report.status, error, report.to_json()
    run.finished_at = utcnow()
    run.old_version, run.new_version = old, new


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


# --- gather ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gathered:
    """Everything a retrain reads from the database before it trains."""

    name: str
    channel: str | None
    threshold: float
    labels: list[str]
    featurizer: str
    old_version: int | None
    old_classifier: TextClassifier | None
    old_metrics: dict[str, Any]
    old_refused: str | None  # why the active model's artifact could not be trusted
    new_labels: LabelCounts
    data: LabelledData
    traffic: list[str]


def gather(
    session: Session, task: Task, *, registry: ModelRegistry, settings: Settings, now: datetime
) -> Gathered:
    """Read the task, its active model, the labels since that model, and recent traffic."""
    active = active_version(session, task)
    old_classifier, refused = None, None
    if active is not None:
        try:
            old_classifier = registry.load(session, active.id)
        except ArtifactError as exc:
            # An untrusted active model cannot be compared against, only replaced.
            logger.error("task %s: active model v%d refused: %s", task.name, active.version, exc)
            refused = str(exc)
    return Gathered(
        name=task.name,
        channel=task.channel,
        threshold=task.threshold,
        labels=list(task.labels),
        featurizer=task.featurizer,
        old_version=active.version if active else None,
        old_classifier=old_classifier,
        old_metrics=dict(active.metrics) if active else {},
        old_refused=refused,
        new_labels=label_counts(session, task, since=active.created_at if active else None),
        data=load_labelled(session, task),
        traffic=recent_texts(
            session, task, since=now - timedelta(days=settings.report_window_days)
        ),
    )


def should_skip(gathered: Gathered, *, force: bool) -> bool:
    """Nothing was labelled since the active model was trained (and no one forced a run)."""
    return gathered.old_version is not None and gathered.new_labels.total == 0 and not force


# --- evaluate and decide (pure: no database) -----------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The candidate and the active model measured side by side."""

    holdout: Holdout
    compared_on: str  # "holdout", "cross-validated" (stored figures) or "none" (no old model)
    recent: RecentTraffic
    movers: Movers


@dataclass(frozen=True)
class Decision:
    """Whether the candidate replaces the active model, and why."""

    promote: bool
    reason: str


def traffic_figures(confidences: NDArray[np.float64], *, threshold: float, days: int) -> Traffic:
    """Mean confidence, share routed automatically, items per day and a histogram.

    Without traffic the mean and the share are None: nothing was routed, which is not 0 %.
    """
    n = len(confidences)
    histogram, _ = np.histogram(confidences, bins=_HISTOGRAM_EDGES)
    auto = float((confidences >= threshold).mean()) if n else None
    return Traffic(
        mean_confidence=float(confidences.mean()) if n else None,
        auto_share=auto,
        auto_per_day=(auto or 0.0) * n / days,
        histogram=tuple(int(x) for x in histogram),
    )


def label_movers(old: dict[str, float], new: dict[str, float], *, limit: int = 3) -> Movers:
    """Labels whose F1 rose or fell the most between two models."""
    ordered = sorted(new, key=lambda k: new[k] - old.get(k, 0.0))

    def move(label: str) -> LabelMove:
        return LabelMove(label, old.get(label, 0.0), new[label])

    gains = [move(k) for k in reversed(ordered) if new[k] > old.get(k, 0.0)][:limit]
    losses = [move(k) for k in ordered if new[k] < old.get(k, 0.0)][:limit]
    return Movers(tuple(gains), tuple(losses))


def evaluate_models(
    candidate: TrainedCandidate,
    old_classifier: TextClassifier | None,
    *,
    old_metrics: dict[str, Any],
    labels: Sequence[str],
    traffic: Sequence[str],
    threshold: float,
    days: int,
) -> Evaluation:
    """Both models on the candidate's holdout and on recent traffic."""
    new_f1 = per_label_f1(candidate.probabilities, labels, candidate.holdout_truth)
    old_f1: dict[str, float] = {}
    if old_classifier is None:
        old_eval, compared_on = None, "none"
    elif candidate.evaluation == "holdout":
        old_probabilities = old_classifier.predict(candidate.holdout_texts).probabilities
        old_eval = evaluate(old_probabilities, labels, candidate.holdout_truth)
        old_f1 = per_label_f1(old_probabilities, labels, candidate.holdout_truth)
        compared_on = "holdout"
    else:
        # Without a holdout the old model can only be judged by the figures it was stored with.
        old_eval = {k: float(v) for k, v in old_metrics.items() if isinstance(v, int | float)}
        compared_on = "cross-validated"

    texts = list(traffic)
    new_traffic = traffic_figures(
        candidate.classifier.predict(texts).confidence if texts else np.zeros(0),
        threshold=threshold,
        days=days,
    )
    old_traffic = None
    if old_classifier is not None:
        old_traffic = traffic_figures(
            old_classifier.predict(texts).confidence if texts else np.zeros(0),
            threshold=threshold,
            days=days,
        )
    gain = None
    if old_traffic is not None and old_traffic.mean_confidence is not None:
        gain = (new_traffic.mean_confidence or 0.0) - old_traffic.mean_confidence
    return Evaluation(
        holdout=Holdout(
            old=HoldoutMetrics.from_json(old_eval) if old_eval is not None else None,
            new=HoldoutMetrics.from_json(candidate.metrics),
        ),
        compared_on=compared_on,
        recent=RecentTraffic(
            items=len(texts),
            items_per_day=len(texts) / days,
            old=old_traffic,
            new=new_traffic,
            confidence_gain=gain,
            histogram_edges=tuple(float(x) for x in _HISTOGRAM_EDGES),
        ),
        movers=label_movers(old_f1, new_f1) if old_f1 else Movers(),
    )


def decide(evaluation: Evaluation, *, tolerance: float) -> Decision:
    """The promotion rule: holdout macro-F1 may fall by at most `tolerance`."""
    new = evaluation.holdout.new
    new_macro = (new.macro_f1 if new else None) or 0.0
    old = evaluation.holdout.old
    if old is None:
        return Decision(True, "first model of the task")
    old_macro = old.macro_f1 or 0.0
    where = evaluation.compared_on
    if new_macro >= old_macro - tolerance:
        return Decision(
            True,
            f"{where} macro-F1 {new_macro:.3f} vs {old_macro:.3f} (tolerance {tolerance:g})",
        )
    return Decision(
        False,
        f"{where} macro-F1 would fall from {old_macro:.3f} to {new_macro:.3f}, "
        f"more than the tolerance {tolerance:g}",
    )


def headline(decision: Decision, *, old_version: int | None, version: int) -> str:
    """`model v7 → v8 promoted`, `first model v1 promoted` or `kept v7; candidate v8 rejected`."""
    if not decision.promote:
        return f"kept v{old_version}; candidate v{version} rejected"
    if old_version:
        return f"model v{old_version} → v{version} promoted"
    return f"first model v{version} promoted"


def candidate_report(
    base: RetrainReport,
    candidate: TrainedCandidate,
    evaluation: Evaluation,
    decision: Decision,
    *,
    version: int,
    queue_resolved: int,
    finished_at: datetime,
) -> RetrainReport:
    """The report of a run that trained and measured a candidate stored as `version`."""
    return replace(
        base,
        status=PROMOTED if decision.promote else KEPT,
        headline=headline(decision, old_version=base.old_version, version=version),
        new_version=version,
        evaluation=candidate.evaluation,
        train_size=candidate.train_size,
        holdout_size=candidate.holdout_size,
        compared_on=evaluation.compared_on,
        holdout=evaluation.holdout,
        recent=evaluation.recent,
        movers=evaluation.movers,
        promoted=decision.promote,
        reason=decision.reason,
        queue_resolved=queue_resolved,
        finished_at=finished_at,
    )


# --- persist -------------------------------------------------------------------------------------


def save_candidate(
    session: Session,
    task: Task,
    candidate: TrainedCandidate,
    *,
    promote: bool,
    registry: ModelRegistry,
    now: datetime,
) -> ModelVersion:
    """Store the candidate as the task's next version: active if promoted, else rejected."""
    return store_model(
        session,
        task,
        candidate.classifier,
        registry=registry,
        status=ModelStatus.ACTIVE if promote else ModelStatus.REJECTED,
        train_size=candidate.train_size,
        metrics={
            **candidate.metrics,
            "evaluation": candidate.evaluation,
            "holdout_size": candidate.holdout_size,
            "trained_at": now.isoformat(),
        },
    )


# --- re-score ------------------------------------------------------------------------------------


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


# --- the job -------------------------------------------------------------------------------------


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
    progress: Progress | None = None,
) -> RetrainResult:
    """Run the retrain job for one task and store the run; see the module docstring.

    `progress` is called with each stage's name as it starts: gathering, training,
    evaluating, saving, re-scoring.
    """
    now = now or utcnow()
    claimed = _claim(sessions, task_name, trigger=trigger, scheduled_for=scheduled_for, now=now)
    if claimed is None:
        report = RetrainReport(
            task_name, CLAIMED, f"{task_name}: already retrained for this slot", started_at=now
        )
        return RetrainResult(task_name, CLAIMED, None, None, None, None, report)
    task_id, run_id = claimed
    try:
        return _run(
            sessions,
            task_id,
            run_id,
            registry=registry,
            settings=settings,
            force=force,
            now=now,
            progress=progress or _no_progress,
        )
    except Exception as exc:  # the job's boundary: every failure is recorded and reported
        logger.exception("retrain of %s failed", task_name)
        reason = (
            str(exc)
            if isinstance(exc, HitlError | TrainingError)
            else f"{type(exc).__name__}: {exc}"
        )
        failed = RetrainReport(
            task_name,
            FAILED,
            f"{task_name}: retrain failed: {reason}",
            started_at=now,
            finished_at=utcnow(),
        )
        with sessions.begin() as session:
            _record_run(session, run_id, failed, error=reason[:2000])
        raise RetrainFailed(f"retrain of {task_name!r} failed: {reason}") from exc


def _no_progress(stage: str) -> None:
    return None


def _run(
    sessions: sessionmaker[Session],
    task_id: int,
    run_id: int,
    *,
    registry: ModelRegistry,
    settings: Settings,
    force: bool,
    now: datetime,
    progress: Progress,
) -> RetrainResult:
    progress("gathering")
    with sessions.begin() as session:
        task = session.get_one(Task, task_id)
        gathered = gather(session, task, registry=registry, settings=settings, now=now)
    name, old_version = gathered.name, gathered.old_version
    base = RetrainReport(
        task=name,
        status=RunStatus.RUNNING,
        headline="",
        threshold=gathered.threshold,
        old_version=old_version,
        window_days=settings.report_window_days,
        new_labels=gathered.new_labels,
        started_at=now,
    )
    if should_skip(gathered, force=force):
        report = replace(
            base,
            status=SKIPPED,
            headline=f"{name}: no new answers since model v{old_version}; kept it",
            finished_at=utcnow(),
        )
        with sessions.begin() as session:
            _record_run(session, run_id, report, old=old_version, new=old_version)
        return RetrainResult(
            name, SKIPPED, old_version, old_version, run_id, gathered.channel, report
        )

    progress("training")
    try:
        candidate = train_candidate(
            gathered.data,
            labels=gathered.labels,
            featurizer=gathered.featurizer,
            min_per_label=settings.min_answers_per_label,
            holdout_share=settings.holdout_share,
        )
    except TrainingError as exc:
        if gathered.old_classifier is not None:
            raise
        report = replace(
            base, status=COLD, headline=f"{name}: no model yet: {exc}", finished_at=utcnow()
        )
        with sessions.begin() as session:
            _record_run(session, run_id, report)
        return RetrainResult(name, COLD, None, None, run_id, gathered.channel, report)

    progress("evaluating")
    evaluation = evaluate_models(
        candidate,
        gathered.old_classifier,
        old_metrics=gathered.old_metrics,
        labels=gathered.labels,
        traffic=gathered.traffic,
        threshold=gathered.threshold,
        days=settings.report_window_days,
    )
    decision = decide(evaluation, tolerance=settings.promotion_tolerance)
    if gathered.old_refused is not None:
        decision = Decision(
            True,
            f"the active model v{gathered.old_version} was refused ({gathered.old_refused}); "
            "the candidate replaces it",
        )

    progress("saving")
    with sessions.begin() as session:
        task = session.get_one(Task, task_id)
        row = save_candidate(
            session, task, candidate, promote=decision.promote, registry=registry, now=now
        )
        version, model_id = row.version, row.id
        resolved, updates = 0, list[MessageToUpdate]()
        if decision.promote:
            progress("re-scoring")
            resolved, updates = _rescore_queue(
                session, task, candidate.classifier, model_id=model_id, version=version, now=now
            )
        report = candidate_report(
            base,
            candidate,
            evaluation,
            decision,
            version=version,
            queue_resolved=resolved,
            finished_at=utcnow(),
        )
        # One transaction: the model, the queue it resolved and the run's report land together.
        _record_run(session, run_id, report, old=old_version, new=version)
    if decision.promote:
        # Serve the new model from the cache at once; the registry reloads by id anyway.
        with sessions.begin() as session:
            registry.load(session, model_id)
    return RetrainResult(
        name,
        report.status,
        version if decision.promote else old_version,
        old_version,
        run_id,
        gathered.channel,
        report,
        updates,
    )


# --- reading runs back ---------------------------------------------------------------------------


def latest_run(session: Session, task: Task, *, version: int | None = None) -> RetrainRun | None:
    """The newest finished run of a task with a report (for a model version, if given)."""
    query = select(RetrainRun).where(RetrainRun.task_id == task.id, RetrainRun.report.is_not(None))
    if version is not None:
        query = query.where(RetrainRun.new_version == version)
    return session.scalar(query.order_by(RetrainRun.id.desc()).limit(1))


def latest_report(
    session: Session, task: Task, *, version: int | None = None
) -> RetrainReport | None:
    """The newest stored report of a task (of the run that produced model v`version`, if given)."""
    run = latest_run(session, task, version=version)
    if run is None or run.report is None:
        return None
    return RetrainReport.from_json(run.report)


def routed_by_version(session: Session, task: Task) -> dict[int, tuple[int, int]]:
    """Per model version: items whose routing prediction it made, and how many it routed auto.

    The routing prediction is an item's first one (stored at submit); later ones, such as a
    re-score after a promotion, did not decide where the item went.
    """
    first = (
        select(func.min(Prediction.id))
        .join(Item, Item.id == Prediction.item_id)
        .where(Item.task_id == task.id)
        .group_by(Prediction.item_id)
    )
    rows = session.execute(
        select(
            ModelVersion.version,
            func.count(),
            func.sum(case((Prediction.route == Route.AUTO, 1), else_=0)),
        )
        .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .where(Prediction.id.in_(first))
        .group_by(ModelVersion.version)
    ).all()
    return {int(version): (int(routed), int(auto or 0)) for version, routed, auto in rows}


def version_history(session: Session, task: Task) -> list[VersionPoint]:
    """Per promoted run, oldest first: holdout figures and the share the version routed auto."""
    runs = session.scalars(
        select(RetrainRun)
        .where(
            RetrainRun.task_id == task.id,
            RetrainRun.status == PROMOTED,
            RetrainRun.new_version.is_not(None),
        )
        .order_by(RetrainRun.id)
    ).all()
    routed = routed_by_version(session, task)
    history = []
    for run in runs:
        report = RetrainReport.from_json(run.report or {})
        new = report.holdout.new if report.holdout and report.holdout.new else HoldoutMetrics()
        version = int(run.new_version or 0)
        items, auto = routed.get(version, (0, 0))
        history.append(
            VersionPoint(
                version=version,
                accuracy=new.accuracy,
                macro_f1=new.macro_f1,
                routed=items,
                auto_share=auto / items if items else None,
            )
        )
    return history
