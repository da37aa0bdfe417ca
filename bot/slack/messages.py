"""Turning stored items and stats into Block Kit messages (through the pure builders)."""

from datetime import datetime
from typing import Any

from bot import outbox
from bot.review import ItemView
from bot.slack import blocks
from bot.states import LabelSource
from bot.stats import TaskStats


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
    )


def message_for(view: ItemView) -> dict[str, Any]:
    """The message an item's prompt should show now: open, answered, or resolved by the model."""
    data = prompt_input(view)
    if view.final_source == LabelSource.PERSON and view.final_label and view.answered_by:
        assert view.answered_at is not None
        return blocks.answered_prompt(
            data, label=view.final_label, user_id=view.answered_by, answered_at=view.answered_at
        )
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
    )
