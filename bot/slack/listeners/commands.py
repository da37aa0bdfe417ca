"""The `/hitl` slash command: help, tasks, stats, threshold, retrain."""

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, BoltContext, Respond
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bot import tasks as task_ops
from bot.errors import BadInputError, HitlError
from bot.slack import blocks, ids
from bot.slack.context import SlackDeps, deps_of
from bot.slack.messages import stats_view
from bot.stats import task_stats
from bot.storage.schema import Task
from bot.training import latest_report, retrain_task

logger = logging.getLogger(__name__)


def _pick_task(session: Session, name: str | None, *, team_id: str | None) -> Task:
    """The named task, or the only one when no name is given (of workspace `team_id`, if set)."""
    if name:
        return task_ops.get_task(session, name, team_id=team_id)
    found = task_ops.list_tasks(session, team_id=team_id)
    if len(found) == 1:
        return found[0]
    if not found:
        raise BadInputError("there are no tasks yet; create one with `hitl task create`")
    names = ", ".join(t.name for t in found[:20])
    raise BadInputError(
        f"several tasks exist ({names}); name one, e.g. `/hitl stats {found[0].name}`"
    )


def _reply(respond: Respond, payload: dict[str, Any]) -> None:
    respond(response_type="ephemeral", replace_original=False, **payload)


def _error(respond: Respond, message: str) -> None:
    _reply(respond, blocks.ephemeral_text(f":warning: {blocks.escape(message)}"))


def on_hitl_command(
    ack: Ack, command: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    """`/hitl WORD …`: dispatch to the subcommand; an unknown or empty word shows the help."""
    ack()
    deps = deps_of(context)
    words = str(command.get("text") or "").split()
    handler = SUBCOMMANDS.get(words[0].lower() if words else "", help_command)
    try:
        handler(deps, words[1:], command, respond)
    except HitlError as exc:
        _error(respond, str(exc))
    except DBAPIError:
        logger.exception("/hitl %s: the database failed", words[0] if words else "")
        _error(respond, "the database is unavailable right now; nothing was changed")
    except Exception:  # the listener's boundary: the person always hears back
        logger.exception("/hitl %s failed", words[0] if words else "")
        _error(respond, "something went wrong; nothing was changed. Please try again.")


def help_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl help`: the commands."""
    _reply(respond, blocks.help_blocks())


def tasks_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl tasks`: every task of the workspace with its channel, threshold, model, queue."""
    with deps.services.sessions.begin() as session:
        summaries = []
        for task in task_ops.list_tasks(session, team_id=deps.team_id):
            stats = task_stats(session, task)
            summaries.append(
                blocks.TaskSummary(
                    name=task.name,
                    labels_count=len(task.labels),
                    channel=task.channel,
                    threshold=task.threshold,
                    active_model_version=stats.model_version,
                    queue_length=stats.review_queue,
                )
            )
    _reply(respond, blocks.tasks_blocks(summaries))


def stats_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl stats [task]`: the task's figures and the headline of its latest report."""
    with deps.services.sessions.begin() as session:
        task = _pick_task(session, args[0] if args else None, team_id=deps.team_id)
        view = stats_view(task_stats(session, task), last_report=_last_headline(session, task))
    _reply(respond, blocks.stats_blocks(view))


def threshold_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl threshold [task] [value]`: show it, or (admins) change it and tell the channel."""
    user = command["user_id"]
    with deps.services.sessions.begin() as session:
        name, value = _task_and_value(session, args, team_id=deps.team_id)
        task = _pick_task(session, name, team_id=deps.team_id)
        if value is None:
            _reply(
                respond,
                blocks.ephemeral_text(f"Threshold of *{task.name}* is {task.threshold:g}."),
            )
            return
        if user not in deps.services.settings.admin_ids:
            raise BadInputError("only admins (HITL_ADMINS) can change the threshold")
        task = task_ops.get_task(session, task.name, lock=True, team_id=deps.team_id)
        old = task_ops.set_threshold(session, task, value, actor=user)
        new, channel, task_name = task.threshold, task.channel, task.name
    _reply(respond, blocks.ephemeral_text(f"Threshold of *{task_name}*: {old:g} → {new:g}."))
    if channel:
        try:
            deps.client.chat_postMessage(
                channel=channel,
                **blocks.threshold_changed_blocks(task_name, old, new=new, user_id=user),
            )
        except SlackApiError:
            logger.exception("could not announce the threshold change in %s", channel)


def retrain_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl retrain [task]` (admins): run the retrain job in the background; report follows."""
    user = command["user_id"]
    if user not in deps.services.settings.admin_ids:
        raise BadInputError("only admins (HITL_ADMINS) can retrain")
    with deps.services.sessions.begin() as session:
        task = _pick_task(session, args[0] if args else None, team_id=deps.team_id)
        name, channel = task.name, task.channel
    _reply(
        respond,
        blocks.ephemeral_text(
            f"Retraining *{name}*; the result follows in "
            + (f"<#{channel}>." if channel else "this reply.")
        ),
    )
    deps.background.submit(_retrain_and_report, deps, name, channel, respond)


Subcommand = Callable[[SlackDeps, list[str], dict[str, Any], Respond], None]

SUBCOMMANDS: dict[str, Subcommand] = {
    ids.CMD_HELP: help_command,
    ids.CMD_TASKS: tasks_command,
    ids.CMD_STATS: stats_command,
    ids.CMD_THRESHOLD: threshold_command,
    ids.CMD_RETRAIN: retrain_command,
}


def _last_headline(session: Session, task: Task) -> str | None:
    report = latest_report(session, task)
    return report.headline if report else None


def _task_and_value(
    session: Session, args: list[str], *, team_id: str | None
) -> tuple[str | None, str | None]:
    """`[task] [value]`: a lone word is the task when one has that name, else the value."""
    if len(args) >= 2:
        return args[0], args[1]
    if len(args) == 1:
        known = {task.name for task in task_ops.list_tasks(session, team_id=team_id)}
        return (args[0], None) if args[0] in known else (None, args[0])
    return None, None


def _retrain_and_report(deps: SlackDeps, name: str, channel: str | None, respond: Respond) -> None:
    from bot.slack.reporting import publish_failure, publish_result

    try:
        result = retrain_task(
            deps.services.sessions,
            name,
            registry=deps.services.registry,
            settings=deps.services.settings,
            trigger="slack",
            force=True,
        )
    except HitlError as exc:
        publish_failure(deps, name, channel, str(exc), respond=respond)
        return
    publish_result(deps, result, respond=respond)
