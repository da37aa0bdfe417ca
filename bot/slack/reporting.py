"""Posting retrain results to Slack: the report, its chart, and the updated queue messages."""

import logging
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.report import format_report_text, render_chart
from bot.review import item_view
from bot.slack.blocks import escape, report_blocks
from bot.slack.context import SlackDeps
from bot.slack.messages import message_for
from bot.slack.pacing import background
from bot.states import RunStatus
from bot.tasks import get_task
from bot.training import RetrainResult, version_history

logger = logging.getLogger(__name__)

Respond = Callable[..., Any]


def publish_result(
    deps: SlackDeps, result: RetrainResult, *, respond: Respond | None = None
) -> None:
    """Post the report (and chart) to the task channel; update messages of resolved items.

    Every Web API call here is background work: a paced client (`bot.slack.pacing`) spreads the
    edits of re-scored prompts over chat.update's tier and lets the edits of clicks go first.
    """
    with background():
        _publish_result(deps, result, respond=respond)


def _publish_result(deps: SlackDeps, result: RetrainResult, *, respond: Respond | None) -> None:
    report = result.report
    if not result.channel:
        if respond is not None:
            respond(
                text=format_report_text(report), response_type="ephemeral", replace_original=False
            )
        return
    if result.status == RunStatus.SKIPPED and not deps.services.settings.report_skips:
        return
    client = workspace_client(deps, result.task)
    if client is None:
        return
    try:
        client.chat_postMessage(channel=result.channel, **report_blocks(report))
    except SlackApiError:
        logger.exception("could not post the report of %s", result.task)
        return
    if result.status in (RunStatus.PROMOTED, RunStatus.KEPT):
        with deps.services.sessions.begin() as session:
            history = version_history(session, get_task(session, result.task))
        try:
            client.files_upload_v2(
                channel=result.channel,
                content=render_chart(report, history),
                filename=f"{result.task}-v{report.new_version}.png",
                title=f"{result.task}: model v{report.new_version}",
            )
        except SlackApiError:
            logger.exception("could not upload the chart of %s", result.task)
    for update in result.updates:
        with deps.services.sessions.begin() as session:
            message = message_for(item_view(session, update.item_id))
        try:
            client.chat_update(channel=update.channel, ts=update.ts, **message)
        except SlackApiError:
            logger.exception("could not update the message of item %d", update.item_id)


def publish_failure(
    deps: SlackDeps, task: str, channel: str | None, reason: str, *, respond: Respond | None = None
) -> None:
    """Say in the channel (or to the person who asked) that a retrain failed and why."""
    text = f":x: {escape(reason)}"
    try:
        client = workspace_client(deps, task) if channel else None
        if channel and client is not None:
            with background():
                client.chat_postMessage(channel=channel, text=text)
        elif respond is not None:
            respond(text=text, response_type="ephemeral", replace_original=False)
    except SlackApiError:
        logger.exception("could not report the failed retrain of %s", task)


def workspace_client(deps: SlackDeps, task: str) -> WebClient | None:
    """The client with the bot token of the task's workspace (looked up in the installation
    store in multi-workspace mode); None, logged, when that workspace has no installation."""
    if deps.clients is None or not deps.clients.multi_workspace:
        return deps.client
    with deps.services.sessions.begin() as session:
        team_id = get_task(session, task).team_id
    client = deps.clients.for_team(team_id)
    if client is None:
        logger.warning("no report of %s: the app is not installed in workspace %s", task, team_id)
    return client
