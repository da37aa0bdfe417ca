"""Block Kit for the retrain report: pure functions of the stored report dict."""

from typing import Any

from bot.report import report_lines

_SECTION_LIMIT = 3000


def _section(text: str) -> dict[str, Any]:
    if len(text) > _SECTION_LIMIT:
        text = text[: _SECTION_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fields(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in pairs[:10]],
    }


def _arrow(old: float | None, new: float | None, *, pct: bool = False) -> str:
    def show(value: float | None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.0%}" if pct else f"{value:.3f}"

    return show(new) if old is None else f"{show(old)} → {show(new)}"


def report_blocks(report: dict[str, Any]) -> dict[str, Any]:
    """The report message: headline, what changed for the team, the evidence, the decision."""
    task = _escape(str(report.get("task", "")))
    headline = _escape(str(report.get("headline", "")))
    status = report.get("status")
    icon = {
        "promoted": ":rocket:",
        "kept": ":shield:",
        "skipped": ":zzz:",
        "cold": ":seedling:",
        "failed": ":x:",
    }.get(str(status), ":bar_chart:")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Retrain: {task}"[:150]}},
        _section(f"{icon} *{headline}*"),
    ]
    if status in ("skipped", "cold", "failed"):
        return {"text": f"{task}: {headline}"[:3000], "blocks": blocks}
    recent = report.get("recent") or {}
    old_t, new_t = recent.get("old") or {}, recent.get("new") or {}
    holdout = report.get("holdout") or {}
    old_h, new_h = holdout.get("old") or {}, holdout.get("new") or {}
    gain = recent.get("confidence_gain")
    size = report.get("holdout_size") or 0
    pairs = [
        ("New answers", f"{report.get('new_answers', 0)} from {report.get('answerers', 0)} people"),
        (
            f"Confidence ({recent.get('items', 0)} recent items)",
            _arrow(old_t.get("mean_confidence"), new_t.get("mean_confidence"))
            + (f"  ({gain:+.2f})" if gain is not None else ""),
        ),
        (
            f"Automatic at {float(report.get('threshold', 0)):g}",
            _arrow(old_t.get("auto_share"), new_t.get("auto_share"), pct=True)
            + f"\n≈ {new_t.get('auto_per_day', 0):.0f} of {recent.get('items_per_day', 0):.0f}"
            " items a day",
        ),
        (
            f"Accuracy ({f'holdout of {size}' if size else 'cross-validation'})",
            _arrow(old_h.get("accuracy"), new_h.get("accuracy"), pct=True),
        ),
        ("Macro-F1", _arrow(old_h.get("macro_f1"), new_h.get("macro_f1"))),
        ("Calibration error (ECE)", _arrow(old_h.get("ece"), new_h.get("ece"))),
    ]
    blocks.append(_fields(pairs))
    movers = report.get("movers") or {}
    mover_lines = []
    for kind, icon_ in (("gains", ":arrow_up:"), ("losses", ":arrow_down:")):
        for row in (movers.get(kind) or [])[:3]:
            mover_lines.append(
                f"{icon_} {_escape(str(row['label']))[:80]}: F1 {row['old']:.2f} → {row['new']:.2f}"
            )
    if mover_lines:
        blocks.append(_section("*Labels that moved most*\n" + "\n".join(mover_lines)))
    notes = []
    if report.get("queue_resolved"):
        notes.append(f"{report['queue_resolved']} waiting items were resolved by the new model.")
    if report.get("reason"):
        notes.append(f"Decision: {_escape(str(report['reason']))}.")
    if notes:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " ".join(notes)[:3000]}]}
        )
    text = "; ".join(report_lines(report)[:3])
    return {"text": _escape(text)[:3000], "blocks": blocks}
