"""The retrain report as plain text (CLI) and as a PNG chart (Slack); figures come from the run."""

import io
import itertools
from collections.abc import Sequence
from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _change(old: float | None, new: float | None, *, pct: bool = False) -> str:
    fmt = _pct if pct else _num
    if old is None:
        return fmt(new)
    return f"{fmt(old)} → {fmt(new)}"


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report's figures as short lines, in the order the Slack message shows them."""
    lines = [str(report.get("headline", report.get("status", "")))]
    status = report.get("status")
    if status in ("skipped", "cold", "failed"):
        return lines
    lines.append(
        f"new answers since the last model: {report.get('new_answers', 0)} "
        f"from {report.get('answerers', 0)} people"
    )
    recent = report.get("recent") or {}
    old_t, new_t = recent.get("old"), recent.get("new") or {}
    if recent.get("items"):
        gain = recent.get("confidence_gain")
        lines.append(
            f"confidence on {recent['items']} recent items ({report.get('window_days')} days): "
            + _change(
                old_t and old_t["mean_confidence"],
                new_t.get("mean_confidence"),
            )
            + (f" ({gain:+.3f})" if gain is not None else "")
        )
        lines.append(
            f"routed automatically at threshold {report.get('threshold'):g}: "
            + _change(old_t and old_t["auto_share"], new_t.get("auto_share"), pct=True)
            + f" (≈ {new_t.get('auto_per_day', 0):.0f} of {recent.get('items_per_day', 0):.0f}"
            " items a day)"
        )
    holdout = report.get("holdout") or {}
    old_h, new_h = holdout.get("old") or {}, holdout.get("new") or {}
    size = report.get("holdout_size") or 0
    where = f"holdout of {size}" if size else "cross-validation"
    lines.append(
        f"accuracy ({where}): {_change(old_h.get('accuracy'), new_h.get('accuracy'), pct=True)}; "
        f"macro-F1: {_change(old_h.get('macro_f1'), new_h.get('macro_f1'))}"
    )
    lines.append(f"calibration error (ECE): {_change(old_h.get('ece'), new_h.get('ece'))}")
    movers = report.get("movers") or {}
    for kind, word in (("gains", "up"), ("losses", "down")):
        rows = movers.get(kind) or []
        if rows:
            lines.append(
                f"labels {word}: "
                + ", ".join(f"{r['label']} {r['old']:.2f}→{r['new']:.2f}" for r in rows)
            )
    if report.get("queue_resolved"):
        lines.append(f"review queue items resolved by the new model: {report['queue_resolved']}")
    if report.get("reason"):
        lines.append(f"decision: {report['reason']}")
    return lines


def format_report_text(report: dict[str, Any]) -> str:
    """The whole report as text."""
    return "\n".join(report_lines(report))


def render_chart(report: dict[str, Any], history: Sequence[dict[str, Any]]) -> bytes:
    """PNG: confidence on recent traffic for both models, and accuracy/auto share per version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recent = report.get("recent") or {}
    edges = recent.get("histogram_edges") or [i / 20 for i in range(21)]
    centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    width = (edges[1] - edges[0]) * 0.45
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    old, new = recent.get("old"), recent.get("new")
    if old:
        left.bar(
            [c - width / 2 for c in centers],
            old["histogram"],
            width=width,
            label=f"v{report.get('old_version')}",
            color="#9aa5b1",
        )
    if new:
        left.bar(
            [c + width / 2 for c in centers],
            new["histogram"],
            width=width,
            label=f"v{report.get('new_version')}",
            color="#2f80ed",
        )
    threshold = float(report.get("threshold", 0.8))
    left.axvline(threshold, color="#d64545", linestyle="--", label=f"threshold {threshold:g}")
    left.set_title(f"Confidence on recent items ({recent.get('items', 0)})")
    left.set_xlabel("confidence")
    left.set_ylabel("items")
    left.legend(loc="upper left")
    versions = [h["version"] for h in history]
    if versions:
        right.plot(
            versions, [h.get("accuracy") for h in history], marker="o", label="holdout accuracy"
        )
        right.plot(
            versions, [h.get("auto_share") for h in history], marker="s", label="share automatic"
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
