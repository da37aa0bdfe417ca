"""Clicks on review prompts: a label button or menu, Skip, Change and Override."""

import logging
from typing import Any

from slack_bolt import Ack, App
from slack_sdk.errors import SlackApiError

from bot.errors import HitlError
from bot.review import (
    ALREADY_LABELLED,
    ClickOutcome,
    answer_click,
    item_view,
    may_change,
    skip_click,
)
from bot.slack import blocks, ids
from bot.slack.context import SlackDeps
from bot.slack.messages import message_for, prompt_input

logger = logging.getLogger(__name__)


def _where(body: dict[str, Any]) -> tuple[str, str | None]:
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id", "")
    return str(channel), container.get("message_ts")


def _tell(deps: SlackDeps, body: dict[str, Any], text: str) -> None:
    channel, _ = _where(body)
    try:
        deps.client.chat_postEphemeral(channel=channel, user=body["user"]["id"], text=text)
    except SlackApiError:
        logger.exception("could not send an ephemeral reply")


def _allowed(deps: SlackDeps, body: dict[str, Any]) -> bool:
    reviewers = deps.services.settings.reviewer_ids
    if reviewers and body["user"]["id"] not in reviewers:
        _tell(deps, body, "Only the task's reviewers can answer these prompts (HITL_REVIEWERS).")
        return False
    return True


def _already(outcome: ClickOutcome) -> str:
    return f"Already labelled *{outcome.label}* by <@{outcome.by_user}>; nothing was changed."


def _refresh(deps: SlackDeps, body: dict[str, Any], item_id: int) -> None:
    channel, ts = _where(body)
    if not ts:
        return
    with deps.services.sessions.begin() as session:
        message = message_for(item_view(session, item_id))
    deps.client.chat_update(channel=channel, ts=ts, **message)


def _permitted_item(deps: SlackDeps, body: dict[str, Any], action: dict[str, Any]) -> int | None:
    """The item a Skip/Change/Override click is about, if the person may act on it."""
    if not _allowed(deps, body):
        return None
    try:
        return ids.decode_item(str(action.get("value", "")))
    except ValueError:
        logger.warning("ignored a click with an undecodable value")
        return None


def _choose(deps: SlackDeps, body: dict[str, Any], value: str) -> None:
    try:
        item_id, label_index = ids.decode_choice(value)
    except ValueError:
        logger.warning("ignored a click with an undecodable value %r", value[:100])
        return
    user = body["user"]["id"]
    try:
        with deps.services.sessions.begin() as session:
            labels = item_view(session, item_id).labels
            if not 0 <= label_index < len(labels):
                raise HitlError("that label no longer exists; the message is out of date")
            outcome = answer_click(session, item_id, user, label=labels[label_index])
    except HitlError as exc:
        _tell(deps, body, f"Could not store that answer: {exc}")
        return
    if outcome.status == ALREADY_LABELLED:
        _tell(deps, body, _already(outcome))
    _refresh(deps, body, item_id)


def register(app: App, deps: SlackDeps) -> None:
    """Attach the review-prompt action listeners to `app`."""

    @app.action(ids.LABEL_ACTION_PATTERN)
    def label_button(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        if _allowed(deps, body):
            _choose(deps, body, str(action.get("value", "")))

    @app.action(ids.LABEL_MENU_PATTERN)
    def label_menu(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        selected = action.get("selected_option") or {}
        if _allowed(deps, body):
            _choose(deps, body, str(selected.get("value", "")))

    @app.action(ids.ACTION_SKIP)
    def skip(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        item_id = _permitted_item(deps, body, action)
        if item_id is None:
            return
        with deps.services.sessions.begin() as session:
            outcome = skip_click(session, item_id, body["user"]["id"])
        if outcome.status == ALREADY_LABELLED:
            _tell(deps, body, _already(outcome))
        else:
            _tell(deps, body, "Skipped: the item stays open for someone else.")

    @app.action(ids.ACTION_CHANGE)
    @app.action(ids.ACTION_OVERRIDE)
    def reopen(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        item_id = _permitted_item(deps, body, action)
        if item_id is None:
            return
        user = body["user"]["id"]
        with deps.services.sessions.begin() as session:
            held = may_change(session, item_id, user)
            view = item_view(session, item_id)
        if held is not None:
            _tell(deps, body, f"{_already(held)} Only <@{held.by_user}> can change it.")
            return
        channel, ts = _where(body)
        if ts:
            deps.client.chat_update(
                channel=channel, ts=ts, **blocks.review_prompt(prompt_input(view))
            )
