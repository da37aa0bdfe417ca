"""Turning stored items and stats into Block Kit messages (through the pure builders)."""

from datetime import datetime
from typing import Any

from bot import outbox
from bot.report import LivePrecision
from bot.review import ItemView
from bot.reviewers import ReviewerReport
from bot.slack import blocks
from bot.states import LabelSource
from bot.stats import TaskStats
from bot.trust import Preview
from model.intervals import clopper_pearson


def prompt_input(view: ItemView) -> blocks.PromptInput:
    """The builder's input for an item."""
    return blocks.PromptInput(
        task_name=view.task_name,
        item_id=view.item_id,
        external_id=view.external_id,
        text=view.text,
        labels=view.labels,
        ranked_labels=view.ranked_labels,
        guess=view.guess,
        confidence=view.confidence,
        model_version=view.model_version,
        spot_check=view.spot_check,
        votes_needed=view.votes_needed,
        answers_so_far=len(view.answers_so_far),
        escalated=view.escalated,
    )


def message_for(view: ItemView) -> dict[str, Any]:
    """The message an item's prompt should show now: open, answered, or resolved by the model.

    A spot check is resolved by the model from the start; its prompt stays open, without the
    model's answer, until people have decided it.
    """
    data = prompt_input(view)
    if view.final_source == LabelSource.PERSON and view.final_label and view.answered_by:
        assert view.answered_at is not None
        agreed = tuple(user for user, label in view.answers_so_far if label == view.final_label)
        return blocks.answered_prompt(
            data,
            label=view.final_label,
            user_id=view.answered_by,
            answered_at=view.answered_at,
            agreed_by=agreed,
        )
    if view.spot_check:
        return blocks.review_prompt(data)
    if view.final_source == LabelSource.MODEL and view.final_label and view.resolved_at:
        return blocks.answered_prompt(
            data, label=view.final_label, user_id="", answered_at=view.resolved_at, by_model=True
        )
    return blocks.review_prompt(data)


def stats_view(stats: TaskStats, *, last_report: str | None = None) -> blocks.StatsView:
    """The builder's input for a task's stats."""
    metrics = {
        key: float(value)
        for key, value in stats.model_metrics.items()
        if key in ("accuracy", "macro_f1", "ece", "holdout_size", "n")
        and isinstance(value, int | float)
    }
    return blocks.StatsView(
        task_name=stats.task,
        threshold=stats.threshold,
        items_today=stats.items_today,
        items_7d=stats.items_7d,
        auto_share_7d=stats.auto_share_7d,
        review_queue=stats.review_queue,
        answers_today=stats.answers_today,
        answers_7d=stats.answers_7d,
        labels_stored=stats.label_counts.total,
        labels_breakdown=stats.label_counts.breakdown(),
        median_answer_seconds=stats.median_answer_seconds,
        top_reviewers=tuple(stats.top_reviewers),
        model_version=stats.model_version,
        model_metrics=metrics,
        last_report_summary=last_report,
        posting_blocked=stats.posting.get("reason"),
        posting_since=datetime.fromisoformat(since)
        if (since := stats.posting.get("since"))
        else None,
        posting_hint=outbox.POSTING_HINTS.get(str(stats.posting.get("reason"))),
        prompts_failed=stats.prompts_failed,
        target_precision=stats.target_precision,
        precision_lower_bound=stats.precision_lower_bound,
        automating=stats.automating,
        threshold_reason=stats.threshold_reason,
        auto_precision=stats.auto_precision,
        spot_check_rate=stats.spot_check_rate,
        votes_required=stats.votes_required,
        precision_alarm=stats.precision_alarm,
    )


def preview_view(preview: Preview) -> blocks.PreviewView:
    """The builder's input for a threshold's what-if."""
    expected = LivePrecision.from_json(preview.auto_precision)
    return blocks.PreviewView(
        task_name=preview.task,
        threshold=preview.threshold,
        current_threshold=preview.current_threshold,
        model_version=preview.model_version,
        items=preview.items,
        days=preview.days,
        review_share=preview.review_share,
        review_per_day=preview.review_per_day,
        auto_per_day=preview.auto_per_day,
        auto_precision=expected,
    )


def reviewers_view(report: ReviewerReport) -> blocks.ReviewersView:
    """The builder's input for `/hitl stats reviewers`."""
    lines = []
    for r in report.reviewers:
        interval = clopper_pearson(r.agreed_final, r.resolved) if r.resolved else None
        lines.append(
            blocks.ReviewerLine(
                user=r.user,
                answers=r.answers,
                skips=r.skips,
                resolved=r.resolved,
                agreed_final=r.agreed_final,
                agree_final_interval=(interval.low, interval.high) if interval else None,
                spot_checks=r.spot_checks,
                confirmed_model=r.confirmed_model,
            )
        )
    agreement = report.agreement
    return blocks.ReviewersView(
        task_name=report.task,
        reviewers=tuple(lines),
        agreement_measure=agreement.measure,
        agreement_value=agreement.value,
        agreement_items=agreement.items,
        agreement_raters=agreement.raters,
    )
