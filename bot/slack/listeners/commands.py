"""The `/hitl` slash command: help, tasks, stats, threshold, spot-checks, votes, budget, retrain.

Changes are for admins (HITL_ADMINS); showing, previews and stats are for anyone.
"""

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, BoltContext, Respond
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bot import tasks as task_ops
from bot.errors import BadInputError, HitlError
from bot.posting_hours import PostingRules
from bot.queue import posted_today, set_daily_budget
from bot.reviewers import reviewer_report
from bot.routing import effective_threshold
from bot.slack import blocks, ids
from bot.slack.context import SlackDeps, deps_of
from bot.slack.messages import preview_view, reviewers_view, stats_view
from bot.stats import task_stats
from bot.storage.schema import Task, utcnow
from bot.training import latest_report, retrain_task
from bot.trust import (
    live_precision,
    preview,
    set_spot_check_rate,
    set_target_precision,
    set_votes_required,
)

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
                    threshold=stats.threshold,
                    active_model_version=stats.model_version,
                    queue_length=stats.review_queue,
                    target_precision=stats.target_precision,
                )
            )
    _reply(respond, blocks.tasks_blocks(summaries))


def stats_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl stats [task]`: the task's figures and the headline of its latest report.

    `/hitl stats reviewers [task]`: each reviewer's figures and the team's agreement.
    """
    with deps.services.sessions.begin() as session:
        if _wants_reviewers(session, args, team_id=deps.team_id):
            task = _pick_task(session, args[1] if len(args) > 1 else None, team_id=deps.team_id)
            message = blocks.reviewers_blocks(reviewers_view(reviewer_report(session, task)))
        else:
            task = _pick_task(session, args[0] if args else None, team_id=deps.team_id)
            view = stats_view(task_stats(session, task), last_report=_last_headline(session, task))
            message = blocks.stats_blocks(view)
    _reply(respond, message)


def _wants_reviewers(session: Session, args: list[str], *, team_id: str | None) -> bool:
    """`stats reviewers [task]`, unless `reviewers` alone is the name of a task."""
    if not args or args[0].lower() != ids.ARG_REVIEWERS:
        return False
    return len(args) > 1 or args[0] not in _task_names(session, team_id=team_id)


def threshold_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl threshold [task] [value | precision P | value preview | preview value]`.

    Show the threshold; (admins) set it, or a target precision, and tell the channel; or
    (anyone) preview what a threshold would do, changing nothing.
    """
    user = command["user_id"]
    with deps.services.sessions.begin() as session:
        names = _task_names(session, team_id=deps.team_id)
        name, action, value = _threshold_request(args, names)
        task = _pick_task(session, name, team_id=deps.team_id)
        if action == _SHOW:
            shown = blocks.threshold_shown_blocks(
                task.name,
                effective_threshold(task),
                target=task.target_precision,
                lower_bound=task.precision_lower_bound,
                reason=_evidence_reason(task),
            )
            _reply(respond, shown)
            return
        assert value is not None
        if action == ids.ARG_PREVIEW:
            result = preview(
                session,
                task,
                value,
                registry=deps.services.registry,
                days=deps.services.settings.report_window_days,
            )
            _reply(respond, blocks.preview_blocks(preview_view(result)))
            return
        _require_admin(deps, user, "change the threshold")
        task = task_ops.get_task(session, task.name, lock=True, team_id=deps.team_id)
        old = effective_threshold(task)
        if action == ids.ARG_PRECISION:
            choice = set_target_precision(session, task, value, actor=user)
            message = blocks.target_precision_blocks(
                task.name,
                choice.target,
                threshold=effective_threshold(task),
                lower_bound=choice.lower_bound,
                reason=choice.reason,
                user_id=user,
            )
            reply = message
        else:
            task_ops.set_threshold(session, task, value, actor=user)
            new = task.threshold
            before = f"{old:g}" if old is not None else "nothing automated"
            reply = blocks.ephemeral_text(f"Threshold of *{_name(task)}*: {before} → {new:g}.")
            message = blocks.threshold_changed_blocks(task.name, old, new=new, user_id=user)
        channel = task.channel
    _reply(respond, reply)
    if channel:
        try:
            deps.client.chat_postMessage(channel=channel, **message)
        except SlackApiError:
            logger.exception("could not announce the threshold change in %s", channel)


def spot_checks_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl spot-checks [task] [share]`: show, or (admins) set, the share of automatic
    answers also shown to a person (`2%` or 0.02)."""
    user = command["user_id"]
    with deps.services.sessions.begin() as session:
        name, value = _task_and_value(session, args, team_id=deps.team_id)
        task = _pick_task(session, name, team_id=deps.team_id)
        old: float | None = None
        if value is not None:
            _require_admin(deps, user, "change spot checks")
            task = task_ops.get_task(session, task.name, lock=True, team_id=deps.team_id)
            old = set_spot_check_rate(session, task, value, actor=user)
        message = blocks.spot_checks_blocks(
            task.name, task.spot_check_rate, old=old, live=live_precision(session, task)
        )
    _reply(respond, message)


def votes_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl votes [task] [n]`: show, or (admins) set, how many agreeing answers resolve an
    item."""
    user = command["user_id"]
    with deps.services.sessions.begin() as session:
        name, value = _task_and_value(session, args, team_id=deps.team_id)
        task = _pick_task(session, name, team_id=deps.team_id)
        old: int | None = None
        if value is not None:
            _require_admin(deps, user, "change the votes")
            task = task_ops.get_task(session, task.name, lock=True, team_id=deps.team_id)
            old = set_votes_required(session, task, value, actor=user)
        message = blocks.votes_blocks(task.name, task.votes_required, old=old)
    _reply(respond, message)


def budget_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl budget [task] [n]`: show, or (admins) set, how many prompts a task posts a day
    (`none` removes the limit); a change is audited."""
    user = command["user_id"]
    hours = PostingRules.from_settings(deps.services.settings).hours
    with deps.services.sessions.begin() as session:
        name, value = _task_and_value(session, args, team_id=deps.team_id)
        task = _pick_task(session, name, team_id=deps.team_id)
        old: int | None = None
        if value is not None:
            _require_admin(deps, user, "change the daily budget")
            task = task_ops.get_task(session, task.name, lock=True, team_id=deps.team_id)
            old = set_daily_budget(session, task, value, actor=user)
        message = blocks.budget_blocks(
            task.name,
            task.daily_budget,
            posted_today=posted_today(session, task, hours=hours, now=utcnow()),
            old=old,
            changed=value is not None,
        )
    _reply(respond, message)


def retrain_command(
    deps: SlackDeps, args: list[str], command: dict[str, Any], respond: Respond
) -> None:
    """`/hitl retrain [task]` (admins): run the retrain job in the background; report follows."""
    user = command["user_id"]
    _require_admin(deps, user, "retrain")
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
    ids.CMD_SPOT_CHECKS: spot_checks_command,
    ids.CMD_VOTES: votes_command,
    ids.CMD_BUDGET: budget_command,
    ids.CMD_RETRAIN: retrain_command,
}

_SHOW = "show"
_SET = "set"


def _require_admin(deps: SlackDeps, user: str, what: str) -> None:
    if user not in deps.services.settings.admin_ids:
        raise BadInputError(f"only admins (HITL_ADMINS) can {what}")


def _name(task: Task) -> str:
    return blocks.escape(task.name)


def _task_names(session: Session, *, team_id: str | None) -> set[str]:
    return {task.name for task in task_ops.list_tasks(session, team_id=team_id)}


def _evidence_reason(task: Task) -> str | None:
    reason = (task.threshold_evidence or {}).get("reason")
    return str(reason) if reason else None


def _threshold_form(words: list[str]) -> tuple[str, str | None] | None:
    """(action, value) when `words` (after the task) are one of the threshold forms."""
    low = [word.lower() for word in words]
    if not words:
        return _SHOW, None
    if len(words) == 2 and low[0] in (ids.ARG_PRECISION, ids.ARG_PREVIEW):
        return low[0], words[1]
    if len(words) == 2 and low[1] == ids.ARG_PREVIEW:
        return ids.ARG_PREVIEW, words[0]
    if len(words) == 1 and low[0] not in (ids.ARG_PRECISION, ids.ARG_PREVIEW):
        return _SET, words[0]
    return None


def _threshold_request(args: list[str], names: set[str]) -> tuple[str | None, str, str | None]:
    """(task name or None, action, value) of `/hitl threshold` arguments.

    A first word that names a task is the task; otherwise the words must be one of the forms
    alone, or a task name (unknown: reported by name) followed by one.
    """
    if args and args[0] in names:
        form = _threshold_form(args[1:])
        if form is not None:
            return args[0], *form
    form = _threshold_form(args)
    if form is not None:
        return None, *form
    form = _threshold_form(args[1:]) if args else None
    if form is not None:
        return args[0], *form
    raise BadInputError(
        f"give `{ids.SLASH_COMMAND} {ids.CMD_THRESHOLD} [task] [value]`, "
        f"`… [task] {ids.ARG_PRECISION} 95%` or `… [task] 0.85 {ids.ARG_PREVIEW}`"
    )


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
