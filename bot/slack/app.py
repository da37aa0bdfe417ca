"""Building the Bolt app: verification, a roomy listener pool, listeners by Slack surface."""

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App, BoltResponse

from bot.slack.context import SlackDeps
from bot.slack.listeners import register as register_listeners

logger = logging.getLogger(__name__)

# Every click and command runs its listener in this pool after ack(); it must be larger than
# the bursts we expect (20+ concurrent clicks) or acks would queue behind slow listeners.
LISTENER_THREADS = 64


def listener_pool() -> ThreadPoolExecutor:
    """The thread pool Bolt runs listeners in."""
    return ThreadPoolExecutor(max_workers=LISTENER_THREADS, thread_name_prefix="hitl-listener")


def build_bolt_app(
    deps: SlackDeps, *, signing_secret: str, listeners: ThreadPoolExecutor | None = None
) -> App:
    """A Bolt app wired to `deps`; requests are verified with `signing_secret`."""
    app = App(
        client=deps.client,
        signing_secret=signing_secret,
        token_verification_enabled=False,  # `hitl serve` calls auth.test itself, with a clear error
        process_before_response=False,
        listener_executor=listeners or listener_pool(),
    )

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> BoltResponse | None:
        logger.error("listener failed on a %s request", body.get("type", "unknown"), exc_info=error)
        return None

    register_listeners(app, deps)
    return app
