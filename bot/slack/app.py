"""Building the Bolt app: verification, a roomy listener pool, listeners by Slack surface."""

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App, BoltResponse
from slack_bolt.oauth.oauth_settings import OAuthSettings

from bot.slack.context import SlackDeps
from bot.slack.listeners import register as register_listeners

logger = logging.getLogger(__name__)

# Every click and command runs its listener in this pool. Clicks are answered before it
# (`bot.server.ClickQueue`) and their Slack calls run elsewhere (`bot.slack.followups`), so a
# listener mostly waits on the database: more threads than the connection pool (30 on
# PostgreSQL) only made clicks time out waiting for a connection under load.
LISTENER_THREADS = 24


def listener_pool() -> ThreadPoolExecutor:
    """The thread pool Bolt runs listeners in."""
    return ThreadPoolExecutor(max_workers=LISTENER_THREADS, thread_name_prefix="hitl-listener")


def build_bolt_app(
    deps: SlackDeps,
    *,
    signing_secret: str,
    listeners: ThreadPoolExecutor | None = None,
    oauth: OAuthSettings | None = None,
) -> App:
    """A Bolt app wired to `deps`; requests are verified with `signing_secret`.

    With `oauth` the app serves many workspaces: each request is authorized with its
    workspace's installation, and `tokens_revoked` / `app_uninstalled` remove it.
    """
    if oauth is None:
        app = App(
            client=deps.client,
            signing_secret=signing_secret,
            # `hitl serve` calls auth.test itself, with a clear error
            token_verification_enabled=False,
            process_before_response=False,
            listener_executor=listeners or listener_pool(),
        )
    else:
        app = App(
            client=deps.client,  # token-less: Bolt gives each request its workspace's token
            signing_secret=signing_secret,
            oauth_settings=oauth,
            process_before_response=False,
            listener_executor=listeners or listener_pool(),
        )
        app.enable_token_revocation_listeners()

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> BoltResponse | None:
        logger.error("listener failed on a %s request", body.get("type", "unknown"), exc_info=error)
        return None

    register_listeners(app, deps)
    return app
