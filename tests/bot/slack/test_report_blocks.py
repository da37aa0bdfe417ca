"""The retrain report's message and chart: within Slack's limits, and showing the figures."""

import json
from typing import Any

from bot.report import format_report_text, render_chart
from bot.slack.report_blocks import report_blocks
from bot.slack.standin import validate_blocks


def sample_report(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "task": "tickets <&>",
        "status": "promoted",
        "headline": "model v7 → v8 promoted",
        "threshold": 0.8,
        "old_version": 7,
        "new_version": 8,
        "new_answers": 120,
        "answerers": 4,
        "window_days": 7,
        "holdout_size": 300,
        "evaluation": "holdout",
        "holdout": {
            "old": {"accuracy": 0.81, "macro_f1": 0.78, "ece": 0.05},
            "new": {"accuracy": 0.86, "macro_f1": 0.84, "ece": 0.03},
        },
        "recent": {
            "items": 700,
            "items_per_day": 100.0,
            "old": {
                "mean_confidence": 0.71,
                "auto_share": 0.41,
                "auto_per_day": 41.0,
                "histogram": [0] * 19 + [700],
            },
            "new": {
                "mean_confidence": 0.78,
                "auto_share": 0.55,
                "auto_per_day": 55.0,
                "histogram": [0] * 19 + [700],
            },
            "confidence_gain": 0.07,
            "histogram_edges": [i / 20 for i in range(21)],
        },
        "movers": {
            "gains": [{"label": "refund <b>" * 20, "old": 0.5, "new": 0.8, "delta": 0.3}],
            "losses": [{"label": "bug", "old": 0.9, "new": 0.85, "delta": -0.05}],
        },
        "queue_resolved": 12,
        "reason": "holdout macro-F1 0.840 vs 0.780 (tolerance 0.005)",
    }
    report.update(overrides)
    return report


def test_report_message_shows_the_figures_within_slack_limits() -> None:
    message = report_blocks(sample_report())
    assert validate_blocks(message["blocks"]) is None
    shown = json.dumps(message, ensure_ascii=False)
    for figure in (
        "model v7 → v8 promoted",
        "0.710 → 0.780",
        "+0.07",
        "41% → 55%",
        "81% → 86%",
        "holdout of 300",
        "12 waiting items",
    ):
        assert figure in shown, figure
    assert "tickets &lt;&amp;&gt;" in shown and "<b>" not in shown


def test_failed_and_skipped_reports_are_one_line() -> None:
    for status in ("failed", "skipped"):
        message = report_blocks({"task": "t", "status": status, "headline": f"t: {status}"})
        assert validate_blocks(message["blocks"]) is None
        assert len(message["blocks"]) == 2


def test_text_report_and_chart() -> None:
    text = format_report_text(sample_report())
    assert text.splitlines()[0] == "model v7 → v8 promoted"
    assert "confidence on 700 recent items (7 days): 0.710 → 0.780 (+0.070)" in text
    png = render_chart(
        sample_report(),
        [
            {"version": 7, "accuracy": 0.81, "auto_share": 0.41},
            {"version": 8, "accuracy": 0.86, "auto_share": 0.55},
        ],
    )
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
