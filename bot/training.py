"""Retraining: the one job that `hitl retrain`, `/hitl retrain` and the nightly schedule run.

Per task: skip when nothing new was answered; keep a stable hash-chosen holdout out of
training; train a candidate on the rest; measure the candidate and the active model on the
same holdout and on recent traffic; promote only if holdout macro-F1 does not drop by more
than the tolerance; re-score the open review queue and re-rank what waits (`bot.queue`);
store the run with its report. Any failure
leaves the active model serving and is recorded as a failed run.
"""

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

from bot import outbox, webhooks
from bot.errors import HitlError
from bot.queries import LabelCounts, label_counts, recent_texts
from bot.queue import rerank as rerank_queue
from bot.registry import ModelRegistry, active_version, prune_models, store_model
from bot.report import (
    Comparison,
    Holdout,
    HoldoutMetrics,
    LabelMove,
    LivePrecision,
    Movers,
    RecentTraffic,
    RetrainReport,
    ThresholdFigures,
    Traffic,
    VersionPoint,
)
from bot.routing import AutoRule, effective_threshold
from bot.settings import Settings
from bot.states import AnswerKind, LabelSource, ModelStatus, Route, RunStatus
from bot.storage.bulk import insert_rows
from bot.storage.schema import (
    Answer,
    Item,
    ModelVersion,
    Prediction,
    RetrainRun,
    Task,
    utcnow,
)
from bot.tasks import get_task
from bot.trust import apply_choice, live_precision, raised_threshold
from bot.webhooks import Resolution
from model import ArtifactError, TextClassifier, TrainingError
from model.intervals import Interval, bootstrap_interval, mcnemar, paired_bootstrap_difference
from model.metrics import evaluate, per_label_f1_of
from model.trust import (
    MIN_ANSWERS_TO_AUTOMATE,
    FittedWithEvidence,
    calibration_counts,
    fit_with_evidence,
)

logger = logging.getLogger(__name__)

STALE_RUN = timedelta(hours=2)
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
    resolved_at: list[datetime | None] = field(default_factory=list)


@dataclass(frozen=True)
class TrainedCandidate:
    """A model refit on every answer, and its out-of-fold evidence (what judges it)."""

    fitted: FittedWithEvidence
    train_size: int
    evaluation: str  # how the evidence was made, e.g. "cross-fitted (5 folds)"
    metrics: dict[str, float]
    intervals: dict[str, Interval]  # bootstrap intervals of accuracy and macro-F1
    evidence_rows: list[int]  # positions in the LabelledData of the examples scored

    @property
    def classifier(self) -> TextClassifier:
        """The deployable model."""
        return self.fitted.classifier

    @property
    def probabilities(self) -> NDArray[np.float64]:
        """Out-of-fold probabilities of the evidence rows."""
        return self.fitted.evidence.probabilities

    @property
    def evidence_truth(self) -> list[str]:
        """The people's labels of the evidence rows."""
        return self.fitted.evidence.truth

    @property
    def holdout_size(self) -> int:
        """How many answers the figures were measured on."""
        return len(self.evidence_rows)


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
        select(Item.id, Item.text, Item.final_label, Item.resolved_at)
        .where(Item.task_id == task.id, Item.final_source == LabelSource.PERSON)
        .order_by(Item.id)
    ).all()
    known = set(task.labels)
    kept = [row for row in rows if row.final_label in known]
    return LabelledData(
        item_ids=[row.id for row in kept],
        texts=[row.text for row in kept],
        labels=[str(row.final_label) for row in kept],
        resolved_at=[row.resolved_at for row in kept],
    )


def train_candidate(
    data: LabelledData,
    *,
    labels: Sequence[str],
    featurizer: str,
    min_to_automate: int = MIN_ANSWERS_TO_AUTOMATE,
    random_state: int = 0,
) -> TrainedCandidate:
    """Cross-fit for held-out evidence on every answer, then refit on all of them.

    Labels with too few answers are left out of the model (their items stay with people); a
    first model needs two labels with two answers each.
    """
    fitted = fit_with_evidence(
        data.texts,
        data.labels,
        labels=labels,
        featurizer=featurizer,
        random_state=random_state,
        min_to_automate=min_to_automate,
    )
    evidence = fitted.evidence
    metrics = evaluate(evidence.probabilities, labels, evidence.truth)
    intervals = holdout_intervals(evidence.probabilities, labels, evidence.truth)
    how = (
        f"cross-fitted ({fitted.folds} folds)"
        if fitted.folds > 1
        else f"held-out split of {len(evidence.truth)}"
    )
    return TrainedCandidate(
        fitted,
        len(data.labels),
        how,
        metrics,
        intervals,
        [int(i) for i in evidence.rows],
    )


def holdout_intervals(
    probabilities: NDArray[np.float64], labels: Sequence[str], truth: Sequence[str]
) -> dict[str, Interval]:
    """Bootstrap intervals of accuracy and macro-F1 over the same resampled answers."""
    n = len(truth)
    if n == 0:
        return {}
    position = {label: j for j, label in enumerate(labels)}
    true_codes = np.asarray([position[t] for t in truth], dtype=np.intp)
    predicted = probabilities.argmax(axis=1)
    right = predicted == true_codes
    width = len(labels)

    def accuracy(rows: NDArray[np.intp]) -> float:
        return float(right[rows].mean())

    def macro_f1(rows: NDArray[np.intp]) -> float:
        t, p = true_codes[rows], predicted[rows]
        hits = np.bincount(t[t == p], minlength=width)
        seen = np.bincount(t, minlength=width) + np.bincount(p, minlength=width)
        present = seen > 0
        return float((2 * hits[present] / seen[present]).mean())

    return {
        "accuracy": bootstrap_interval(accuracy, n=n, resamples=1000),
        "macro_f1": bootstrap_interval(macro_f1, n=n, resamples=300),
    }


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
    old_trained_at: datetime | None
    old_rule: AutoRule | None
    target_precision: float | None
    live: LivePrecision | None  # spot checks of the automatic answers
    new_labels: LabelCounts
    data: LabelledData
    traffic: list[str]

    @property
    def precision_alarm(self) -> bool:
        """Spot checks show the automatic answers below the target (the interval's top too)."""
        return (
            self.target_precision is not None
            and self.live is not None
            and self.live.n > 0
            and self.live.high < self.target_precision
        )


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
        old_trained_at=active.created_at if active else None,
        old_rule=AutoRule.of(task, active.metrics) if active else None,
        target_precision=task.target_precision,
        live=live_precision(session, task, now=now),
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
    """The candidate on its held-out evidence, and paired with the active model."""

    holdout: Holdout  # new: candidate on every evidence answer; old: active model on `comparison`
    compared_on: str  # "unseen answers" (paired), "none" (no active model or nothing unseen)
    comparison: Comparison | None
    recent: RecentTraffic
    movers: Movers


@dataclass(frozen=True)
class Decision:
    """Whether the candidate replaces the active model, and why."""

    promote: bool
    reason: str


# A paired difference this unlikely under "no difference" counts as the candidate being worse.
SIGNIFICANCE = 0.05


def traffic_figures(
    confidences: NDArray[np.float64], automatic: NDArray[np.bool_], *, days: int
) -> Traffic:
    """Mean confidence, share routed automatically, items per day and a histogram.

    Without traffic the mean and the share are None: nothing was routed, which is not 0 %.
    """
    n = len(confidences)
    histogram, _ = np.histogram(confidences, bins=_HISTOGRAM_EDGES)
    auto = float(automatic.mean()) if n else None
    return Traffic(
        mean_confidence=float(confidences.mean()) if n else None,
        auto_share=auto,
        auto_per_day=(auto or 0.0) * n / days,
        histogram=tuple(int(x) for x in histogram),
    )


def label_movers(
    labels: Sequence[str],
    truth: Sequence[str],
    old_predicted: Sequence[str],
    new_predicted: Sequence[str],
    *,
    limit: int = 3,
) -> Movers:
    """Labels whose F1 changed by more than their support can explain (paired McNemar test).

    Each label is judged on the answers where it is the truth or either model's guess; a move
    is listed only when the two models differ on those answers with p < SIGNIFICANCE.
    """
    truth_a = np.asarray(list(truth), dtype=object)
    old_a = np.asarray(list(old_predicted), dtype=object)
    new_a = np.asarray(list(new_predicted), dtype=object)
    old_f1 = per_label_f1_of(labels, truth, old_predicted)
    new_f1 = per_label_f1_of(labels, truth, new_predicted)
    carried = []
    for label in labels:
        involved = (truth_a == label) | (old_a == label) | (new_a == label)
        if not involved.any():
            continue
        right_new = (new_a[involved] == label) == (truth_a[involved] == label)
        right_old = (old_a[involved] == label) == (truth_a[involved] == label)
        if mcnemar(right_new, right_old).p_value < SIGNIFICANCE:
            carried.append(label)
    ordered = sorted(carried, key=lambda k: new_f1[k] - old_f1[k])

    def move(label: str) -> LabelMove:
        return LabelMove(label, old_f1[label], new_f1[label])

    gains = [move(k) for k in reversed(ordered) if new_f1[k] > old_f1[k]][:limit]
    losses = [move(k) for k in ordered if new_f1[k] < old_f1[k]][:limit]
    return Movers(tuple(gains), tuple(losses))


def _holdout_metrics(metrics: dict[str, float], intervals: dict[str, Interval]) -> HoldoutMetrics:
    base = HoldoutMetrics.from_json(metrics)
    accuracy, macro = intervals.get("accuracy"), intervals.get("macro_f1")
    return replace(
        base,
        accuracy_ci=(round(accuracy.low, 4), round(accuracy.high, 4)) if accuracy else None,
        macro_f1_ci=(round(macro.low, 4), round(macro.high, 4)) if macro else None,
    )


def unseen_rows(
    candidate: TrainedCandidate, data: LabelledData, *, old_trained_at: datetime | None
) -> list[int]:
    """Evidence rows answered after the active model was trained: it never saw them."""
    if old_trained_at is None:
        return []
    return [
        k
        for k, row in enumerate(candidate.evidence_rows)
        if (when := data.resolved_at[row] if row < len(data.resolved_at) else None) is not None
        and when > old_trained_at
    ]


def evaluate_models(
    candidate: TrainedCandidate,
    old_classifier: TextClassifier | None,
    *,
    data: LabelledData,
    old_trained_at: datetime | None,
    labels: Sequence[str],
    traffic: Sequence[str],
    old_route: AutoRule | None,
    new_route: AutoRule,
    days: int,
) -> Evaluation:
    """The candidate on its evidence; both models on unseen answers and on recent traffic."""
    new_metrics = _holdout_metrics(candidate.metrics, candidate.intervals)
    comparison, old_metrics, movers = None, None, Movers()
    compared_on = "none"
    rows = unseen_rows(candidate, data, old_trained_at=old_trained_at)
    if old_classifier is not None and rows:
        truth = [candidate.evidence_truth[k] for k in rows]
        texts = [data.texts[candidate.evidence_rows[k]] for k in rows]
        new_predicted = [candidate.fitted.evidence.predicted[k] for k in rows]
        old_prediction = old_classifier.predict(texts)
        truth_a = np.asarray(truth, dtype=object)
        right_new = np.asarray(new_predicted, dtype=object) == truth_a
        right_old = np.asarray(old_prediction.predicted, dtype=object) == truth_a
        test = mcnemar(right_new, right_old)
        difference = paired_bootstrap_difference(right_new, right_old)
        comparison = Comparison(
            n=len(rows),
            new_accuracy=float(right_new.mean()),
            old_accuracy=float(right_old.mean()),
            difference=(round(difference.low, 4), round(difference.high, 4)),
            new_only=test.new_only,
            old_only=test.old_only,
            p_value=test.p_value,
        )
        old_metrics = HoldoutMetrics.from_json(
            evaluate(old_prediction.probabilities, labels, truth)
        )
        movers = label_movers(labels, truth, old_prediction.predicted, new_predicted)
        compared_on = "unseen answers"

    texts = list(traffic)
    new_prediction = candidate.classifier.predict(texts) if texts else None
    new_traffic = traffic_figures(
        new_prediction.confidence if new_prediction else np.zeros(0),
        new_route.mask(new_prediction) if new_prediction else np.zeros(0, dtype=bool),
        days=days,
    )
    old_traffic = None
    if old_classifier is not None:
        old_prediction_t = old_classifier.predict(texts) if texts else None
        rule = old_route or AutoRule.nothing()
        old_traffic = traffic_figures(
            old_prediction_t.confidence if old_prediction_t else np.zeros(0),
            rule.mask(old_prediction_t) if old_prediction_t else np.zeros(0, dtype=bool),
            days=days,
        )
    gain = None
    if old_traffic is not None and old_traffic.mean_confidence is not None:
        gain = (new_traffic.mean_confidence or 0.0) - old_traffic.mean_confidence
    return Evaluation(
        holdout=Holdout(old=old_metrics, new=new_metrics),
        compared_on=compared_on,
        comparison=comparison,
        recent=RecentTraffic(
            items=len(texts),
            items_per_day=len(texts) / days,
            old=old_traffic,
            new=new_traffic,
            confidence_gain=gain,
            histogram_edges=tuple(float(x) for x in _HISTOGRAM_EDGES),
        ),
        movers=movers,
    )


def decide(evaluation: Evaluation, *, has_old: bool) -> Decision:
    """The promotion rule: keep the active model only when the candidate is measurably worse.

    Both are judged paired, on answers the active model never trained on (exact McNemar test
    on the answers only one of them got right).
    """
    if not has_old:
        return Decision(True, "first model of the task")
    c = evaluation.comparison
    if c is None or c.n == 0:
        return Decision(
            True,
            "no answer is new to the active model, so they cannot be compared fairly; "
            "the candidate learned from every answer",
        )
    figures = (
        f"on {c.n} answers the active model never saw: accuracy "
        f"{c.old_accuracy or 0:.1%} → {c.new_accuracy or 0:.1%}"
        + (
            f" (difference {c.difference[0]:+.1%} to {c.difference[1]:+.1%})"
            if c.difference
            else ""
        )
        + f", {c.new_only} vs {c.old_only} answers only one got right, p = {c.p_value:.2g}"
    )
    if c.old_only > c.new_only and c.p_value < SIGNIFICANCE:
        return Decision(False, f"the candidate is worse {figures}")
    return Decision(True, f"no worse {figures}")


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
    threshold: float | None,
    choice: ThresholdFigures | None,
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
        comparison=evaluation.comparison,
        threshold=threshold,
        threshold_choice=choice,
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
    evidence = candidate.fitted.evidence
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
            "auto_labels": list(candidate.fitted.auto_labels),
            # Out-of-fold evidence per confidence bin: what `--preview` estimates precision from.
            "calibration": calibration_counts(
                evidence.confidences[evidence.eligible], evidence.correct[evidence.eligible]
            ),
        },
    )


# --- re-score ------------------------------------------------------------------------------------


def _rescore_queue(
    session: Session,
    task: Task,
    classifier: TextClassifier,
    *,
    rule: AutoRule,
    model_id: int,
    version: int,
    now: datetime,
) -> tuple[int, list[MessageToUpdate]]:
    """Resolve open review items the new model is now sure about; returns messages to update."""
    # Items a person already answered (waiting for a second opinion or an admin) stay theirs.
    answered = (
        select(Answer.id)
        .where(
            Answer.item_id == Item.id,
            Answer.is_current.is_(True),
            Answer.kind == AnswerKind.LABEL,
        )
        .exists()
    )
    open_items = session.execute(
        select(Item.id, Item.text, Item.external_id).where(
            Item.task_id == task.id,
            Item.route == Route.REVIEW,
            Item.final_source.is_(None),
            ~answered,
        )
    ).all()
    if not open_items:
        return 0, []
    prediction = classifier.predict([row.text for row in open_items])
    sure = [int(i) for i in np.flatnonzero(rule.mask(prediction))]
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
    resolved: list[Resolution] = []
    for i in sure:
        changed = session.execute(  # type: ignore[attr-defined]  # an UPDATE's CursorResult
            update(Item)
            .where(Item.id == int(open_items[i].id), Item.final_source.is_(None), ~answered)
            .values(
                final_label=prediction.predicted[i], final_source=LabelSource.MODEL, resolved_at=now
            )
        ).rowcount
        if changed:  # not answered in the meantime
            resolved.append(
                Resolution.by_model(
                    int(open_items[i].id),
                    open_items[i].external_id,
                    route=Route.REVIEW,
                    label=prediction.predicted[i],
                    confidence=float(prediction.confidence[i]),
                    model_version=version,
                    at=now,
                )
            )
    webhooks.record_resolutions(session, task, resolved, now=now)
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
        target_precision=gathered.target_precision,
        auto_precision=gathered.live,
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
            min_to_automate=settings.min_answers_per_label,
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
    choice, raised_to = None, None
    new_rule = AutoRule(gathered.threshold, frozenset(candidate.fitted.auto_labels))
    if gathered.target_precision is not None:
        choice = candidate.fitted.choose(gathered.target_precision)
        threshold = choice.threshold
        if threshold is not None and gathered.precision_alarm:
            # Spot checks refuted the promise: never stay as low as the threshold they judged.
            raised_to = max(threshold, raised_threshold(gathered.threshold))
            threshold = raised_to
        new_rule = new_rule.with_threshold(threshold)
    evaluation = evaluate_models(
        candidate,
        gathered.old_classifier,
        data=gathered.data,
        old_trained_at=gathered.old_trained_at,
        labels=gathered.labels,
        traffic=gathered.traffic,
        old_route=gathered.old_rule,
        new_route=new_rule,
        days=settings.report_window_days,
    )
    decision = decide(evaluation, has_old=gathered.old_version is not None)
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
        figures = None
        if decision.promote and choice is not None:
            apply_choice(task, choice, now=now, raised_to=raised_to)
            figures = ThresholdFigures.from_json(task.threshold_evidence or {})
        if decision.promote:
            progress("re-scoring")
            resolved, updates = _rescore_queue(
                session,
                task,
                candidate.classifier,
                rule=new_rule,
                model_id=model_id,
                version=version,
                now=now,
            )
        # What is left of the queue is asked in the order the serving model finds most useful.
        serving = candidate.classifier if decision.promote else gathered.old_classifier
        rerank_queue(session, task, serving, now=now)
        prune_models(session, task, keep=settings.keep_models, now=now)
        report = candidate_report(
            base,
            candidate,
            evaluation,
            decision,
            version=version,
            queue_resolved=resolved,
            finished_at=utcnow(),
            threshold=effective_threshold(task),
            choice=figures,
        )
        # One transaction: the model, the queue it resolved and the run's report land together.
        _record_run(session, run_id, report, old=old_version, new=version)
    if decision.promote:
        # Serve the new model at once, and trust it: should its row later fail its checks (a
        # forged artifact), this process keeps serving it.
        with sessions.begin() as session:
            registry.active(session, get_task(session, name), load=True)
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
