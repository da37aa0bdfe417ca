"""Bolt listeners, grouped by Slack surface, and the one place that registers them all.

Listeners are plain top-level functions, as in Slack's bolt-python sample apps, so each can be
called in a unit test with fakes. They find the bot's services in Bolt's `context` (put there
by one middleware) instead of closing over them, and call Slack with the client of the
request's workspace.
"""

from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltContext

from bot.slack import ids
from bot.slack.context import DEPS_KEY, SlackDeps
from bot.slack.listeners import actions, commands, events, shortcuts


def register(app: App, deps: SlackDeps) -> None:
    """Attach every listener of the bot to `app`."""

    @app.middleware
    def _provide_deps(
        context: BoltContext, body: dict[str, Any], next: Callable[[], Any]
    ) -> Any:  # Bolt injects by these names
        context[DEPS_KEY] = deps
        if deps.clients is not None:
            # Bolt's per-request client carries the workspace's bot token; the bot's own client
            # for that token keeps its retries and its pacing by method tier.
            context["client"] = deps.clients.for_token(context.bot_token or context.token)
        if deps.clients is not None and deps.clients.multi_workspace:
            events.pause_revoked_workspace(deps, body, team_id=context.team_id)
        return next()

    app.action(ids.LABEL_ACTION_PATTERN)(actions.on_label_button)
    app.action(ids.LABEL_MENU_PATTERN)(actions.on_label_menu)
    app.action(ids.ACTION_SKIP)(actions.on_skip)
    app.action(ids.ACTION_CHANGE)(actions.on_reopen)
    app.action(ids.ACTION_OVERRIDE)(actions.on_reopen)
    app.command(ids.SLASH_COMMAND)(commands.on_hitl_command)
    app.event("app_home_opened")(events.on_app_home_opened)
    app.shortcut(ids.SHORTCUT_SEND)(shortcuts.on_send_to_task)
    app.view(ids.VIEW_SEND)(shortcuts.on_send_submitted)
