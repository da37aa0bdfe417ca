"""Clicks on review prompts: a label button or menu, Skip, Change and Override.

Every listener acks first, then does the work; whatever goes wrong, the person is told (a
click that could not be stored says so, and the prompt stays clickable). A click that leaves
an item waiting for more agreeing answers keeps its prompt open; a disagreement that needs the
admins, and spot checks that put the automatic answers below the target, are posted to the
channel once.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from slack_bolt import Ack, BoltContext
from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from bot.answers import get_item
from bot.errors import HitlError, NotFoundError
from bot.review import (
    ALREADY_LABELLED,
    NEEDS_MORE,
    STORED,
    ClickOutcome,
    ItemView,
    answer_click,
    item_view,
    may_change,
    skip_click,
)
from bot.routing import effective_threshold
from bot.slack import blocks, ids
from bot.slack.context import SlackDeps, deps_of
from bot.slack.listeners.shortcuts import origin_channel, tell_sender
from bot.slack.messages import message_for, prompt_input
from bot.states import AnswerSource, LabelSource
from bot.storage.schema import utcnow
from bot.trust import precision_alarm

logger = logging.getLogger(__name__)

DELETED_ITEM = "This item was deleted (or never existed); nothing was changed."


def on_label_button(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext
) -> None:
    """A label button: store the person's answer (the first answer resolves the item)."""
    ack()
    deps = deps_of(context)
    with telling_the_person(deps, body):
        if allowed(deps, body):
            choose(deps, body, str(action.get("value", "")))


def on_label_menu(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext
) -> None:
    """A label picked from an "Other label" menu: the same as a button."""
    ack()
    deps = deps_of(context)
    selected = action.get("selected_option") or {}
    with telling_the_person(deps, body):
        if allowed(deps, body):
            choose(deps, body, str(selected.get("value", "")))


def on_skip(ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext) -> None:
    """Skip: recorded, and the item stays open for someone else."""
    ack()
    deps = deps_of(context)
    with telling_the_person(deps, body):
        item_id = permitted_item(deps, body, action)
        if item_id is None:
            return
        with deps.services.sessions.begin() as session:
            check_origin(item_view(session, item_id), body)
            outcome = skip_click(session, item_id, body["user"]["id"])
        if outcome.status == ALREADY_LABELLED:
            tell(deps, body, already(outcome))
        else:
            tell(deps, body, "Skipped: the item stays open for someone else.")


def on_reopen(ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext) -> None:
    """Change (your own answer) or Override (the model's): the prompt opens again to re-answer."""
    ack()
    deps = deps_of(context)
    with telling_the_person(deps, body):
        reopen(deps, body, action)


def reopen(deps: SlackDeps, body: dict[str, Any], action: dict[str, Any]) -> None:
    """Show the change prompt to whoever may change the item's answer."""
    item_id = permitted_item(deps, body, action)
    if item_id is None:
        return
    user = body["user"]["id"]
    with deps.services.sessions.begin() as session:
        view = item_view(session, item_id)
        check_origin(view, body)
        held = may_change(session, item_id, user)
    if held is not None:
        tell(deps, body, f"{already(held)} Only {blocks.mention(held.by_user)} can change it.")
        return
    channel, ts = where(body)
    if not ts:
        return
    by_person = view.final_source == LabelSource.PERSON
    # An open spot check never names the model's answer, not even as the one being changed.
    hidden = view.spot_check and not by_person
    message = blocks.change_prompt(
        prompt_input(view),
        answered_by=view.answered_by if by_person else None,
        previous_label=None if hidden else view.final_label,
    )
    deps.client.chat_update(channel=channel, ts=ts, **message)


@contextmanager
def telling_the_person(deps: SlackDeps, body: dict[str, Any]) -> Iterator[None]:
    """Whatever fails after the ack, the person hears a short reason instead of silence."""
    try:
        yield
    except NotFoundError:
        # Its item was removed (`hitl task delete` or `purge`) after the message was posted;
        # only a forged click names an item that never existed.
        tell(deps, body, DELETED_ITEM)
    except HitlError as exc:
        tell(deps, body, f"Nothing was changed: {blocks.escape(str(exc))}")
    except (DBAPIError, PoolTimeout):
        logger.exception("a click could not be stored")
        tell(
            deps,
            body,
            ":warning: Not saved: the database is unavailable right now. "
            "Please click again in a minute.",
        )
    except SlackApiError:
        logger.exception("Slack refused an update after a click")
    except Exception:  # the listener's boundary: log it, and never leave the person waiting
        logger.exception("a click failed")
        tell(deps, body, ":warning: Something went wrong; nothing was changed. Please try again.")


def check_origin(view: ItemView, body: dict[str, Any]) -> None:
    """Refuse a click whose value names an item other than the one its message shows.

    Values are only numbers, so a forged (signed) click could name another task's item; the
    item's own prompt message must be the one that was clicked.
    """
    channel, ts = where(body)
    if view.channel != channel:
        raise HitlError("that button does not belong to this message")
    # A message Slack has shown but whose ts the poster has not written down yet (a click in
    # the moment after posting, or an answer that never came back) is checked by channel only.
    if view.message_ts is not None and view.message_ts != ts:
        raise HitlError("that button does not belong to this message")


def where(body: dict[str, Any]) -> tuple[str, str | None]:
    """The channel and message a click came from."""
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id", "")
    return str(channel), container.get("message_ts")


def tell(deps: SlackDeps, body: dict[str, Any], text: str) -> None:
    """An ephemeral reply to the person who clicked."""
    channel, _ = where(body)
    try:
        deps.client.chat_postEphemeral(channel=channel, user=body["user"]["id"], text=text)
    except SlackApiError:
        logger.exception("could not send an ephemeral reply")


def allowed(deps: SlackDeps, body: dict[str, Any]) -> bool:
    """Whether the person may answer (HITL_REVIEWERS); tells them when not."""
    reviewers = deps.services.settings.reviewer_ids
    if reviewers and body["user"]["id"] not in reviewers:
        tell(deps, body, "Only the task's reviewers can answer these prompts (HITL_REVIEWERS).")
        return False
    return True


def already(outcome: ClickOutcome) -> str:
    """Who holds the item's answer."""
    label = blocks.escape(str(outcome.label))
    return f"Already labelled *{label}* by {blocks.mention(outcome.by_user)}; nothing was changed."


def refresh(deps: SlackDeps, body: dict[str, Any], item_id: int) -> None:
    """Redraw the clicked message from what is stored now."""
    channel, ts = where(body)
    if not ts:
        return
    with deps.services.sessions.begin() as session:
        message = message_for(item_view(session, item_id))
    deps.client.chat_update(channel=channel, ts=ts, **message)


def permitted_item(deps: SlackDeps, body: dict[str, Any], action: dict[str, Any]) -> int | None:
    """The item a Skip/Change/Override click is about, if the person may act on it."""
    if not allowed(deps, body):
        return None
    try:
        return ids.decode_item(str(action.get("value", "")))
    except ValueError:
        logger.warning("ignored a click with an undecodable value")
        return None


def choose(deps: SlackDeps, body: dict[str, Any], value: str) -> None:
    """Store the label a button or menu value names, then redraw the message."""
    try:
        item_id, label_index = ids.decode_choice(value)
    except ValueError:
        logger.warning("ignored a click with an undecodable value")
        logger.debug("the undecodable value: %r", value[:100])
        return
    user = body["user"]["id"]
    admins = deps.services.settings.admin_ids
    now = utcnow()
    with deps.services.sessions.begin() as session:
        view = item_view(session, item_id)
        check_origin(view, body)
        if not 0 <= label_index < len(view.labels):
            raise HitlError("that label no longer exists; the message is out of date")
        outcome = answer_click(
            session, item_id, user, label=view.labels[label_index], now=now, admins=admins
        )
        # In the answer's transaction: the alarm is recorded exactly when the answer is.
        alarm = spot_check_alarm(session, view, outcome, now=now)
    if outcome.status in (STORED, NEEDS_MORE):
        source = AnswerSource.SPOT_CHECK if view.spot_check else AnswerSource.SLACK
        deps.services.metrics.answers.labels(source=source.value).inc()
    channel, ts = where(body)
    message = (channel, ts) if ts else None
    later(
        deps,
        lambda: show_outcome(deps, body, view, outcome, alarm, message),
        redraws=message,
    )


def later(
    deps: SlackDeps, work: Callable[[], None], *, redraws: tuple[str, str] | None = None
) -> None:
    """Run the Slack calls that follow a click off the listener thread (`bot.slack.followups`),
    or at once when the deps have no follow-up threads (tests that run listeners inline)."""
    if deps.followups is None:
        work()
    else:
        deps.followups.submit(work, redraws=redraws)


def show_outcome(
    deps: SlackDeps,
    body: dict[str, Any],
    view: ItemView,
    outcome: ClickOutcome,
    alarm: tuple[str, dict[str, Any]] | None,
    message: tuple[str, str] | None,
) -> None:
    """What Slack shows after a stored click: the redrawn message, replies, notices."""
    item_id, user, admins = view.item_id, body["user"]["id"], deps.services.settings.admin_ids
    if outcome.status == ALREADY_LABELLED:
        tell(deps, body, already(outcome))
    # A later click on the same message, still queued, redraws it with this answer too.
    if message is not None and not (deps.followups and deps.followups.superseded(message)):
        refresh(deps, body, item_id)
    if outcome.status == NEEDS_MORE:
        agreeing = sum(1 for _, label in outcome.answers if label == outcome.label)
        note = blocks.votes_waiting_text(
            needed=outcome.votes_needed,
            agreeing=agreeing,
            second_opinion=outcome.second_opinion,
            escalated=outcome.escalated,
        )
        tell(deps, body, note)
    if outcome.escalated:
        escalation = blocks.escalation_blocks(
            prompt_input(view), answers=outcome.answers, admins=sorted(admins)
        )
        channel, ts = where(body)
        # In the prompt's thread, so the admins land on the prompt to answer it, and broadcast
        # so the channel sees it too.
        post(deps, channel, escalation, thread_ts=ts, what="the escalation")
    if alarm is not None:
        post(deps, alarm[0], alarm[1], what="the spot-check alarm")
    if outcome.status == STORED and view.requested_by:
        # The item came from Slack ("Send to hitl"): its sender wanted to hear the answer.
        notice = blocks.reviewer_answered_notice(
            view.task_name, label=str(outcome.label), user_id=user, text=view.text
        )
        tell_sender(deps, view.requested_by, notice, channel=origin_channel(view.external_id))


def spot_check_alarm(
    session: Session, view: ItemView, outcome: ClickOutcome, *, now: datetime
) -> tuple[str, dict[str, Any]] | None:
    """(channel, message) when this spot-check answer puts precision below the task's target."""
    if not view.spot_check or outcome.status != STORED:
        return None
    task = get_item(session, view.item_id).task
    live = precision_alarm(session, task, now=now)
    if live is None or task.target_precision is None or not task.channel:
        return None
    message = blocks.precision_alert_blocks(
        task.name, live, target=task.target_precision, threshold=effective_threshold(task)
    )
    return task.channel, message


def post(
    deps: SlackDeps,
    channel: str,
    message: dict[str, Any],
    *,
    what: str,
    thread_ts: str | None = None,
) -> None:
    """Post a message in a channel (in the thread of `thread_ts`, shown in the channel too);
    a refusal is only logged."""
    try:
        deps.client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            reply_broadcast=True if thread_ts else None,
            **message,
        )
    except SlackApiError:
        logger.exception("could not post %s in %s", what, channel)
