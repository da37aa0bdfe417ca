"""The retrain report value: its stored JSON form, its text, and its chart."""

import json
from dataclasses import replace
from datetime import UTC, datetime

from bot.queries import LabelCounts
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
    format_report_text,
    render_chart,
)
from bot.states import RunStatus

STARTED = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def sample_report(**changes: object) -> RetrainReport:
    """A promoted run with every figure filled in."""
    report = RetrainReport(
        task="tickets <&>",
        status=RunStatus.PROMOTED,
        headline="model v7 → v8 promoted",
        threshold=0.8,
        old_version=7,
        new_version=8,
        window_days=7,
        new_labels=LabelCounts(slack=100, imported=20, spot_check=0, people=4),
        evaluation="holdout",
        train_size=1200,
        holdout_size=300,
        compared_on="holdout",
        holdout=Holdout(
            old=HoldoutMetrics(n=300, accuracy=0.81, macro_f1=0.78, log_loss=0.6, ece=0.05),
            new=HoldoutMetrics(
                n=300,
                accuracy=0.86,
                macro_f1=0.84,
                log_loss=0.5,
                ece=0.03,
                accuracy_ci=(0.82, 0.89),
                macro_f1_ci=(0.8, 0.87),
            ),
        ),
        recent=RecentTraffic(
            items=700,
            items_per_day=100.0,
            old=Traffic(0.71, 0.41, 41.0, (0,) * 19 + (700,)),
            new=Traffic(0.78, 0.55, 55.0, (0,) * 19 + (700,)),
            confidence_gain=0.07,
            histogram_edges=tuple(i / 20 for i in range(21)),
        ),
        movers=Movers(
            gains=(LabelMove("refund <b>" * 20, 0.5, 0.8),),
            losses=(LabelMove("bug", 0.9, 0.85),),
        ),
        comparison=Comparison(
            n=300,
            new_accuracy=0.86,
            old_accuracy=0.81,
            difference=(0.02, 0.08),
            new_only=25,
            old_only=10,
            p_value=0.017,
        ),
        target_precision=0.95,
        threshold_choice=ThresholdFigures(
            target_precision=0.95,
            threshold=0.8,
            precision_lower_bound=0.953,
            evidence=1200,
            reason="690 of 700 held-out answers above 0.800 were right; precision ≥ 0.953",
        ),
        auto_precision=LivePrecision(estimate=0.96, low=0.9, high=0.99, n=60),
        promoted=True,
        reason="holdout macro-F1 0.840 vs 0.780 (tolerance 0.005)",
        queue_resolved=12,
        started_at=STARTED,
        finished_at=STARTED.replace(minute=3),
    )
    return replace(report, **changes)  # type: ignore[arg-type]  # test overrides by name


def test_json_form_keeps_the_documented_key_layout() -> None:
    stored = json.loads(json.dumps(sample_report().to_json()))
    assert {
        "status",
        "headline",
        "task",
        "threshold",
        "old_version",
        "new_version",
        "new_answers",
        "answerers",
        "evaluation",
        "holdout_size",
        "train_size",
        "compared_on",
        "holdout",
        "recent",
        "movers",
        "promoted",
        "reason",
        "queue_resolved",
        "started_at",
        "finished_at",
        "window_days",
    } <= set(stored)
    assert stored["status"] == "promoted" and stored["new_answers"] == 120
    assert stored["answerers"] == 4
    assert stored["new_labels"] == {
        "slack": 100,
        "import": 20,
        "spot_check": 0,
        "total": 120,
        "people": 4,
    }
    assert stored["holdout"]["new"] == {
        "n": 300,
        "accuracy": 0.86,
        "macro_f1": 0.84,
        "log_loss": 0.5,
        "ece": 0.03,
        "accuracy_ci": [0.82, 0.89],
        "macro_f1_ci": [0.8, 0.87],
    }
    assert stored["comparison"] == {
        "n": 300,
        "new_accuracy": 0.86,
        "old_accuracy": 0.81,
        "difference": [0.02, 0.08],
        "new_only": 25,
        "old_only": 10,
        "p_value": 0.017,
    }
    assert stored["target_precision"] == 0.95
    assert stored["threshold_choice"]["threshold"] == 0.8
    assert stored["auto_precision"] == {"estimate": 0.96, "low": 0.9, "high": 0.99, "n": 60}
    assert set(stored["recent"]) == {
        "items",
        "items_per_day",
        "old",
        "new",
        "confidence_gain",
        "histogram_edges",
    }
    assert stored["recent"]["old"]["auto_share"] == 0.41
    assert stored["movers"]["losses"] == [
        {"label": "bug", "old": 0.9, "new": 0.85, "delta": 0.85 - 0.9}
    ]
    assert stored["started_at"] == "2026-11-24T02:00:00+00:00"


def test_json_round_trip_gives_the_same_report() -> None:
    report = sample_report()
    assert RetrainReport.from_json(json.loads(json.dumps(report.to_json()))) == report


def test_rows_of_older_versions_are_read_with_what_they_have() -> None:
    failed = RetrainReport.from_json({"headline": "t: retrain failed: boom", "status": "failed"})
    assert (failed.status, failed.headline, failed.holdout, failed.new_accuracy) == (
        RunStatus.FAILED,
        "t: retrain failed: boom",
        None,
        None,
    )
    old_row = {
        "status": "promoted",
        "headline": "model v1 → v2 promoted",
        "task": "t",
        "new_answers": 30,
        "answerers": 2,
        "holdout": {"old": None, "new": {"accuracy": 0.9, "holdout_size": 60}},
        "recent": {"items": 0, "old": None, "new": {"mean_confidence": 0.0, "auto_share": 0.0}},
    }
    report = RetrainReport.from_json(old_row)
    assert report.new_labels is None and (report.new_answers, report.answerers) == (30, 2)
    assert report.new_accuracy == 0.9
    assert report.recent is not None and report.recent.new is not None
    assert report.recent.new.histogram == ()
    assert "new answers since the last model: 30 from 2 people" in format_report_text(report)


def test_new_labels_are_counted_by_where_they_came_from() -> None:
    imported = sample_report(new_labels=LabelCounts(slack=0, imported=1000, spot_check=0, people=0))
    assert (
        "new labels since the last model: 1000 (0 from Slack by 0 people, 1000 imported)"
        in format_report_text(imported).splitlines()
    )
    mixed = sample_report(new_labels=LabelCounts(slack=5, imported=0, spot_check=2, people=3))
    assert (
        "new labels since the last model: 7 (5 from Slack by 3 people, 0 imported, 2 spot checks)"
        in format_report_text(mixed).splitlines()
    )


def test_text_report_shows_the_figures() -> None:
    lines = format_report_text(sample_report()).splitlines()
    assert lines[0] == "model v7 → v8 promoted"
    assert "confidence on 700 recent items (7 days): 0.710 → 0.780 (+0.070)" in lines
    assert "routed automatically at threshold 0.8: 41% → 55% (≈ 55 of 100 items a day)" in lines
    (accuracy,) = [line for line in lines if line.startswith("accuracy")]
    for figure in ("86%", "300", "82%", "89%", "0.840"):
        assert figure in accuracy, figure
    (paired,) = [line for line in lines if "300 answers" in line and "→" in line]
    assert "81% → 86%" in paired and "+2.0 to +8.0 points" in paired
    assert any("95.0%" in line and "0.8" in line for line in lines)  # target and threshold
    assert any("spot checks" in line and "96.0%" in line and "60" in line for line in lines)
    assert "review queue items resolved by the new model: 12" in lines


def test_skipped_report_is_its_headline() -> None:
    skipped = RetrainReport("t", RunStatus.SKIPPED, "t: no new answers since model v1; kept it")
    assert format_report_text(skipped) == "t: no new answers since model v1; kept it"


def test_new_accuracy_is_the_new_models_holdout_accuracy() -> None:
    assert sample_report().new_accuracy == 0.86


def test_chart_is_a_png_even_with_versions_that_routed_nothing() -> None:
    png = render_chart(
        sample_report(),
        [
            VersionPoint(7, accuracy=0.81, macro_f1=0.78, routed=500, auto_share=0.41),
            VersionPoint(8, accuracy=0.86, macro_f1=0.84, routed=0, auto_share=None),
        ],
    )
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
