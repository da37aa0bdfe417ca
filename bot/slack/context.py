"""What Slack listeners are handed: the services plus the Web API client."""

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.services import Services


@dataclass(frozen=True)
class SlackDeps:
    """Dependencies of every listener; built once in the composition root."""

    services: Services
    client: WebClient
    background: Executor


def make_web_client(
    token: str, *, base_url: str, timeout: float = 10, retries: bool = True
) -> WebClient:
    """A Web API client that retries rate limits, 5xx answers and dropped connections.

    `retries=False` is for the poster, which schedules its own retries per channel: a client
    that slept through one channel's Retry-After would hold up every other channel.
    """
    handlers = (
        [
            ConnectionErrorRetryHandler(max_retry_count=3),
            RateLimitErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=3),
        ]
        if retries
        else []
    )
    return WebClient(
        token=token,
        base_url=base_url,
        # urllib takes fractional seconds; slack_sdk only annotates the timeout as int.
        timeout=timeout,  # type: ignore[arg-type]
        retry_handlers=handlers,
    )


# Where the middleware in `bot.slack.listeners.register` puts the deps in Bolt's context.
DEPS_KEY = "hitl_deps"


def deps_of(context: Mapping[str, Any]) -> SlackDeps:
    """The bot's dependencies from a listener's Bolt context."""
    deps = context[DEPS_KEY]
    if not isinstance(deps, SlackDeps):
        raise TypeError("the Bolt context carries no SlackDeps; register listeners with register()")
    return deps
