"""The retrain report: a typed value, its stored JSON form, and its text and chart renderings.

`RetrainRun.report` holds `RetrainReport.to_json()`; `hitl report --json` and
`hitl retrain --json` print that form, so its key layout is kept stable (keys may be added).
`from_json` accepts rows written by older versions, which lack some keys.
"""

import io
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.queries import LabelCounts
from bot.states import AnswerSource, RunStatus

# Runs that end before any model is measured: their report is the headline alone.
HEADLINE_ONLY = frozenset({RunStatus.SKIPPED, RunStatus.COLD, RunStatus.FAILED, RunStatus.CLAIMED})

_DEFAULT_EDGES = tuple(i / 20 for i in range(21))


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _pair(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = _float(value[0]), _float(value[1])
        if low is not None and high is not None:
            return (low, high)
    return None


@dataclass(frozen=True)
class Comparison:
    """Candidate and active model, paired on answers the active model never trained on."""

    n: int
    new_accuracy: float | None
    old_accuracy: float | None
    difference: tuple[float, float] | None  # paired bootstrap 95 % interval of new - old
    new_only: int  # answers only the candidate got right
    old_only: int  # answers only the active model got right
    p_value: float  # exact McNemar test on those discordant answers

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Comparison":
        """From the stored `comparison` object."""
        return cls(
            n=_int(data.get("n")) or 0,
            new_accuracy=_float(data.get("new_accuracy")),
            old_accuracy=_float(data.get("old_accuracy")),
            difference=_pair(data.get("difference")),
            new_only=_int(data.get("new_only")) or 0,
            old_only=_int(data.get("old_only")) or 0,
            p_value=_float(data.get("p_value")) or 1.0,
        )

    def to_json(self) -> dict[str, Any]:
        """`{n, new_accuracy, old_accuracy, difference, new_only, old_only, p_value}`."""
        return {
            "n": self.n,
            "new_accuracy": self.new_accuracy,
            "old_accuracy": self.old_accuracy,
            "difference": list(self.difference) if self.difference else None,
            "new_only": self.new_only,
            "old_only": self.old_only,
            "p_value": self.p_value,
        }


@dataclass(frozen=True)
class ThresholdFigures:
    """The threshold the run chose for the task's target precision, and why."""

    target_precision: float
    threshold: float | None  # None: the evidence cannot support the target; nothing automated
    precision_lower_bound: float | None
    evidence: int
    reason: str
    raised_by_spot_checks: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ThresholdFigures":
        """From the stored `threshold_choice` object."""
        return cls(
            target_precision=_float(data.get("target_precision")) or 0.0,
            threshold=_float(data.get("threshold")),
            precision_lower_bound=_float(data.get("precision_lower_bound")),
            evidence=_int(data.get("evidence")) or 0,
            reason=str(data.get("reason") or ""),
            raised_by_spot_checks=bool(data.get("raised_by_spot_checks")),
        )

    def to_json(self) -> dict[str, Any]:
        """`{target_precision, threshold, precision_lower_bound, evidence, reason, …}`."""
        return {
            "target_precision": self.target_precision,
            "threshold": self.threshold,
            "precision_lower_bound": self.precision_lower_bound,
            "evidence": self.evidence,
            "reason": self.reason,
            "raised_by_spot_checks": self.raised_by_spot_checks,
        }


@dataclass(frozen=True)
class LivePrecision:
    """Precision of automatic answers measured by spot checks, with a 95 % exact interval."""

    estimate: float | None
    low: float
    high: float
    n: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LivePrecision":
        """From a stored `{estimate, low, high, n}` object."""
        high = _float(data.get("high"))
        return cls(
            estimate=_float(data.get("estimate")),
            low=_float(data.get("low")) or 0.0,
            high=1.0 if high is None else high,
            n=_int(data.get("n")) or 0,
        )

    def to_json(self) -> dict[str, Any]:
        """`{estimate, low, high, n}`."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n}


@dataclass(frozen=True)
class HoldoutMetrics:
    """One model measured on the holdout (or by cross-validation): `model.metrics.evaluate`."""

    n: int | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    log_loss: float | None = None
    ece: float | None = None
    mean_confidence: float | None = None
    # 95 % bootstrap intervals (low, high) over the same n answers.
    accuracy_ci: tuple[float, float] | None = None
    macro_f1_ci: tuple[float, float] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "HoldoutMetrics":
        """From `evaluate`'s dict or a stored report; unknown keys are ignored."""
        return cls(
            n=_int(data.get("n")),
            accuracy=_float(data.get("accuracy")),
            macro_f1=_float(data.get("macro_f1")),
            log_loss=_float(data.get("log_loss")),
            ece=_float(data.get("ece")),
            mean_confidence=_float(data.get("mean_confidence")),
            accuracy_ci=_pair(data.get("accuracy_ci")),
            macro_f1_ci=_pair(data.get("macro_f1_ci")),
        )

    def to_json(self) -> dict[str, Any]:
        """`{n, accuracy, macro_f1, log_loss, ece, mean_confidence, accuracy_ci, macro_f1_ci}`.

        Unknown figures are left out; an interval is `[low, high]`.
        """
        values = {
            "n": self.n,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "log_loss": self.log_loss,
            "ece": self.ece,
            "mean_confidence": self.mean_confidence,
            "accuracy_ci": list(self.accuracy_ci) if self.accuracy_ci else None,
            "macro_f1_ci": list(self.macro_f1_ci) if self.macro_f1_ci else None,
        }
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class Holdout:
    """Both models on the same holdout; `old` is None when there was no active model."""

    old: HoldoutMetrics | None = None
    new: HoldoutMetrics | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Holdout":
        """From the stored `holdout` object."""
        old, new = data.get("old"), data.get("new")
        return cls(
            old=HoldoutMetrics.from_json(old) if isinstance(old, Mapping) else None,
            new=HoldoutMetrics.from_json(new) if isinstance(new, Mapping) else None,
        )

    def to_json(self) -> dict[str, Any]:
        """`{old, new}`."""
        return {
            "old": self.old.to_json() if self.old else None,
            "new": self.new.to_json() if self.new else None,
        }


@dataclass(frozen=True)
class Traffic:
    """One model on recent traffic; shares are None when there was no traffic."""

    mean_confidence: float | None
    auto_share: float | None
    auto_per_day: float
    histogram: tuple[int, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Traffic":
        """From a stored `recent.old` / `recent.new` object."""
        return cls(
            mean_confidence=_float(data.get("mean_confidence")),
            auto_share=_float(data.get("auto_share")),
            auto_per_day=_float(data.get("auto_per_day")) or 0.0,
            histogram=tuple(int(x) for x in data.get("histogram") or ()),
        )

    def to_json(self) -> dict[str, Any]:
        """`{mean_confidence, auto_share, auto_per_day, histogram}`."""
        return {
            "mean_confidence": self.mean_confidence,
            "auto_share": self.auto_share,
            "auto_per_day": self.auto_per_day,
            "histogram": list(self.histogram),
        }


@dataclass(frozen=True)
class RecentTraffic:
    """Items of the report window, and both models on them."""

    items: int = 0
    items_per_day: float = 0.0
    old: Traffic | None = None
    new: Traffic | None = None
    confidence_gain: float | None = None
    histogram_edges: tuple[float, ...] = _DEFAULT_EDGES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RecentTraffic":
        """From the stored `recent` object."""
        old, new = data.get("old"), data.get("new")
        return cls(
            items=_int(data.get("items")) or 0,
            items_per_day=_float(data.get("items_per_day")) or 0.0,
            old=Traffic.from_json(old) if isinstance(old, Mapping) else None,
            new=Traffic.from_json(new) if isinstance(new, Mapping) else None,
            confidence_gain=_float(data.get("confidence_gain")),
            histogram_edges=tuple(float(x) for x in data.get("histogram_edges") or _DEFAULT_EDGES),
        )

    def to_json(self) -> dict[str, Any]:
        """`{items, items_per_day, old, new, confidence_gain, histogram_edges}`."""
        return {
            "items": self.items,
            "items_per_day": self.items_per_day,
            "old": self.old.to_json() if self.old else None,
            "new": self.new.to_json() if self.new else None,
            "confidence_gain": self.confidence_gain,
            "histogram_edges": list(self.histogram_edges),
        }


@dataclass(frozen=True)
class LabelMove:
    """One label's F1 under the old and the new model."""

    label: str
    old: float
    new: float

    @property
    def delta(self) -> float:
        """How much the F1 changed."""
        return self.new - self.old

    def to_json(self) -> dict[str, Any]:
        """`{label, old, new, delta}`."""
        return {"label": self.label, "old": self.old, "new": self.new, "delta": self.delta}


@dataclass(frozen=True)
class Movers:
    """The labels whose F1 rose or fell the most."""

    gains: tuple[LabelMove, ...] = ()
    losses: tuple[LabelMove, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Movers":
        """From the stored `movers` object."""

        def moves(rows: Any) -> tuple[LabelMove, ...]:
            return tuple(
                LabelMove(
                    str(r.get("label")), _float(r.get("old")) or 0.0, _float(r.get("new")) or 0.0
                )
                for r in rows or ()
                if isinstance(r, Mapping)
            )

        return cls(gains=moves(data.get("gains")), losses=moves(data.get("losses")))

    def to_json(self) -> dict[str, Any]:
        """`{gains, losses}`, each a list of `{label, old, new, delta}`."""
        return {
            "gains": [m.to_json() for m in self.gains],
            "losses": [m.to_json() for m in self.losses],
        }


def _counts_from_json(data: Mapping[str, Any]) -> LabelCounts:
    return LabelCounts(
        slack=_int(data.get(AnswerSource.SLACK.value)) or 0,
        imported=_int(data.get(AnswerSource.IMPORT.value)) or 0,
        spot_check=_int(data.get(AnswerSource.SPOT_CHECK.value)) or 0,
        people=_int(data.get("people")) or 0,
    )


@dataclass(frozen=True)
class RetrainReport:
    """What one retrain run found and decided: the figures behind every rendering of it."""

    task: str
    status: RunStatus
    headline: str
    threshold: float | None = None
    old_version: int | None = None
    new_version: int | None = None
    window_days: int | None = None
    # Labels stored since the active model was trained, each once under its source. None in
    # rows stored before the counts were split by source; those keep `legacy_answers`.
    new_labels: LabelCounts | None = None
    legacy_answers: tuple[int, int] | None = None  # (answers, people)
    evaluation: str | None = None  # "holdout" or "cross-validation"
    train_size: int | None = None
    holdout_size: int | None = None
    compared_on: str | None = None  # "holdout", "cross-validated" or "none"
    holdout: Holdout | None = None
    recent: RecentTraffic | None = None
    movers: Movers = field(default_factory=Movers)
    comparison: Comparison | None = None
    target_precision: float | None = None
    threshold_choice: ThresholdFigures | None = None
    auto_precision: LivePrecision | None = None  # spot checks of the automatic answers
    promoted: bool | None = None
    reason: str | None = None
    queue_resolved: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def new_answers(self) -> int:
        """Every label stored since the last model."""
        if self.new_labels is not None:
            return self.new_labels.total
        return self.legacy_answers[0] if self.legacy_answers else 0

    @property
    def answerers(self) -> int:
        """How many people gave those labels (imports are nobody)."""
        if self.new_labels is not None:
            return self.new_labels.people
        return self.legacy_answers[1] if self.legacy_answers else 0

    @property
    def new_accuracy(self) -> float | None:
        """Holdout (or cross-validated) accuracy of the new model."""
        if self.holdout is None or self.holdout.new is None:
            return None
        return self.holdout.new.accuracy

    @property
    def has_figures(self) -> bool:
        """False for runs that ended before measuring anything (skipped, cold, failed)."""
        return self.status not in HEADLINE_ONLY

    def to_json(self) -> dict[str, Any]:
        """The stored form (also what `--json` prints)."""
        return {
            "status": self.status.value,
            "headline": self.headline,
            "task": self.task,
            "threshold": self.threshold,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "new_answers": self.new_answers,
            "answerers": self.answerers,
            "new_labels": self.new_labels.as_dict() if self.new_labels else None,
            "evaluation": self.evaluation,
            "holdout_size": self.holdout_size,
            "train_size": self.train_size,
            "compared_on": self.compared_on,
            "holdout": self.holdout.to_json() if self.holdout else None,
            "recent": self.recent.to_json() if self.recent else None,
            "movers": self.movers.to_json(),
            "comparison": self.comparison.to_json() if self.comparison else None,
            "target_precision": self.target_precision,
            "precision_lower_bound": (
                self.threshold_choice.precision_lower_bound if self.threshold_choice else None
            ),
            "threshold_choice": self.threshold_choice.to_json() if self.threshold_choice else None,
            "auto_precision": self.auto_precision.to_json() if self.auto_precision else None,
            "promoted": self.promoted,
            "reason": self.reason,
            "queue_resolved": self.queue_resolved,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "window_days": self.window_days,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RetrainReport":
        """Read a stored report; keys missing in rows of older versions get neutral values."""
        try:
            status = RunStatus(str(data.get("status")))
        except ValueError:
            status = RunStatus.FAILED
        new_labels = data.get("new_labels")
        legacy = None
        if not isinstance(new_labels, Mapping):
            legacy = (_int(data.get("new_answers")) or 0, _int(data.get("answerers")) or 0)
        holdout, recent = data.get("holdout"), data.get("recent")
        promoted = data.get("promoted")
        comparison, choice = data.get("comparison"), data.get("threshold_choice")
        live = data.get("auto_precision")
        return cls(
            task=str(data.get("task") or ""),
            status=status,
            headline=str(data.get("headline") or status.value),
            threshold=_float(data.get("threshold")),
            old_version=_int(data.get("old_version")),
            new_version=_int(data.get("new_version")),
            window_days=_int(data.get("window_days")),
            new_labels=_counts_from_json(new_labels) if isinstance(new_labels, Mapping) else None,
            legacy_answers=legacy,
            evaluation=_str(data.get("evaluation")),
            train_size=_int(data.get("train_size")),
            holdout_size=_int(data.get("holdout_size")),
            compared_on=_str(data.get("compared_on")),
            holdout=Holdout.from_json(holdout) if isinstance(holdout, Mapping) else None,
            recent=RecentTraffic.from_json(recent) if isinstance(recent, Mapping) else None,
            movers=Movers.from_json(_mapping(data.get("movers"))),
            comparison=Comparison.from_json(comparison)
            if isinstance(comparison, Mapping)
            else None,
            target_precision=_float(data.get("target_precision")),
            threshold_choice=ThresholdFigures.from_json(choice)
            if isinstance(choice, Mapping)
            else None,
            auto_precision=LivePrecision.from_json(live) if isinstance(live, Mapping) else None,
            promoted=promoted if isinstance(promoted, bool) else None,
            reason=_str(data.get("reason")),
            queue_resolved=_int(data.get("queue_resolved")) or 0,
            started_at=_time(data.get("started_at")),
            finished_at=_time(data.get("finished_at")),
        )


@dataclass(frozen=True)
class VersionPoint:
    """One promoted model version: its holdout figures and what it actually routed."""

    version: int
    accuracy: float | None
    macro_f1: float | None
    routed: int  # items whose routing prediction came from this version
    auto_share: float | None  # share of those routed automatically; None if it routed none


# --- text ---------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _change(old: float | None, new: float | None, *, pct: bool = False) -> str:
    fmt = _pct if pct else _num
    if old is None:
        return fmt(new)
    return f"{fmt(old)} → {fmt(new)}"


def new_labels_line(report: RetrainReport) -> str:
    """How many labels arrived since the last model, and from where."""
    counts = report.new_labels
    if counts is None:
        return (
            f"new answers since the last model: {report.new_answers} from {report.answerers} people"
        )
    return f"new labels since the last model: {counts.total} ({counts.breakdown()})"


def report_lines(report: RetrainReport) -> list[str]:
    """The report's figures as short lines, in the order the Slack message shows them."""
    lines = [report.headline]
    if not report.has_figures:
        return lines
    lines.append(new_labels_line(report))
    recent = report.recent or RecentTraffic()
    old_t, new_t = recent.old, recent.new
    if recent.items and new_t is not None:
        gain = recent.confidence_gain
        lines.append(
            f"confidence on {recent.items} recent items ({report.window_days} days): "
            + _change(old_t.mean_confidence if old_t else None, new_t.mean_confidence)
            + (f" ({gain:+.3f})" if gain is not None else "")
        )
        lines.append(
            (
                f"routed automatically at threshold {report.threshold:g}: "
                if report.threshold is not None
                else "routed automatically (nothing automated yet): "
            )
            + _change(old_t.auto_share if old_t else None, new_t.auto_share, pct=True)
            + f" (≈ {new_t.auto_per_day:.0f} of {recent.items_per_day:.0f} items a day)"
        )
    holdout = report.holdout or Holdout()
    old_h, new_h = holdout.old or HoldoutMetrics(), holdout.new or HoldoutMetrics()
    lines.append(evidence_line(report, new_h))
    comparison = report.comparison
    if comparison is not None and comparison.n:
        lines.append(comparison_line(report, comparison))
    lines.extend(trust_lines(report))
    lines.append(f"calibration error (ECE): {_change(old_h.ece, new_h.ece)}")
    for moves, word in ((report.movers.gains, "up"), (report.movers.losses, "down")):
        if moves:
            lines.append(
                f"labels {word}: " + ", ".join(f"{m.label} {m.old:.2f}→{m.new:.2f}" for m in moves)
            )
    if report.queue_resolved:
        lines.append(f"review queue items resolved by the new model: {report.queue_resolved}")
    if report.reason:
        lines.append(f"decision: {report.reason}")
    return lines


def _interval(pair: tuple[float, float] | None, *, pct: bool = True) -> str:
    if pair is None:
        return ""
    if pct:
        return f" (95% interval {pair[0]:.0%}-{pair[1]:.0%})"
    return f" (95% interval {pair[0]:.3f}-{pair[1]:.3f})"


def evidence_line(report: RetrainReport, new: HoldoutMetrics) -> str:
    """The new model's accuracy on answers it never trained on, with intervals and n."""
    how = report.evaluation or "held out"
    n = new.n if new.n is not None else report.holdout_size
    return (
        f"accuracy ({how}, {n or 0} answers): {_pct(new.accuracy)}{_interval(new.accuracy_ci)}; "
        f"macro-F1 {_num(new.macro_f1)}{_interval(new.macro_f1_ci, pct=False)}"
    )


def comparison_line(report: RetrainReport, c: Comparison) -> str:
    """Both models paired on the answers the active model never saw."""
    spread = (
        f", difference {c.difference[0] * 100:+.1f} to {c.difference[1] * 100:+.1f} points"
        if c.difference
        else ""
    )
    return (
        f"v{report.old_version} vs the new model on {c.n} answers v{report.old_version} never "
        f"saw: accuracy {_pct(c.old_accuracy)} → {_pct(c.new_accuracy)}{spread} "
        f"(McNemar p = {c.p_value:.2g})"
    )


def trust_lines(report: RetrainReport) -> list[str]:
    """Target precision, the threshold chosen for it, and what spot checks measured."""
    lines = []
    choice = report.threshold_choice
    if report.target_precision is not None and choice is not None:
        if choice.threshold is None:
            lines.append(
                f"target precision {report.target_precision:.1%}: nothing automated yet "
                f"({choice.reason})"
            )
        else:
            raised = " (raised: spot checks fell short)" if choice.raised_by_spot_checks else ""
            lines.append(
                f"target precision {report.target_precision:.1%}: threshold "
                f"{choice.threshold:.4g}{raised}, precision ≥ "
                f"{_num(choice.precision_lower_bound)} on {choice.evidence} held-out answers"
            )
    live = report.auto_precision
    if live is not None and live.n and live.estimate is not None:
        lines.append(
            f"spot checks of automatic answers: {live.estimate:.1%} right "
            f"(95% interval {live.low:.1%}-{live.high:.1%}, n={live.n})"
        )
    return lines


def format_report_text(report: RetrainReport) -> str:
    """The whole report as text."""
    return "\n".join(report_lines(report))


# --- chart --------------------------------------------------------------------------------------


def render_chart(report: RetrainReport, history: Sequence[VersionPoint]) -> bytes:
    """PNG: confidence on recent traffic for both models, and accuracy/auto share per version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recent = report.recent or RecentTraffic()
    edges = recent.histogram_edges
    centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    width = (edges[1] - edges[0]) * 0.45
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    if recent.old is not None:
        left.bar(
            [c - width / 2 for c in centers],
            recent.old.histogram,
            width=width,
            label=f"v{report.old_version}",
            color="#9aa5b1",
        )
    if recent.new is not None:
        left.bar(
            [c + width / 2 for c in centers],
            recent.new.histogram,
            width=width,
            label=f"v{report.new_version}",
            color="#2f80ed",
        )
    threshold = report.threshold if report.threshold is not None else 0.8
    left.axvline(threshold, color="#d64545", linestyle="--", label=f"threshold {threshold:g}")
    left.set_title(f"Confidence on recent items ({recent.items})")
    left.set_xlabel("confidence")
    left.set_ylabel("items")
    left.legend(loc="upper left")
    versions = [point.version for point in history]
    if versions:
        # None becomes a gap in the line: a version that routed nothing has no share to show.
        nan = float("nan")
        right.plot(
            versions,
            [nan if p.accuracy is None else p.accuracy for p in history],
            marker="o",
            label="holdout accuracy",
        )
        right.plot(
            versions,
            [nan if p.auto_share is None else p.auto_share for p in history],
            marker="s",
            label="share routed automatically",
        )
        right.set_xticks(versions)
    right.set_ylim(0, 1.05)
    right.set_xlabel("model version")
    right.set_title("History")
    right.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
