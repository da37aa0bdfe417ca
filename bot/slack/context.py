"""What Slack listeners are handed: the services plus the Web API client."""

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry import RetryHandler
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.services import Services
from bot.slack.pacing import PacedWebClient, Pacer


@dataclass(frozen=True)
class SlackDeps:
    """Dependencies of every listener; built once in the composition root."""

    services: Services
    client: WebClient
    background: Executor


def make_web_client(
    token: str,
    *,
    base_url: str,
    timeout: float = 10,
    retries: bool = True,
    tier_scale: float | None = None,
) -> WebClient:
    """A Web API client that retries rate limits, 5xx answers and dropped connections.

    `retries=False` is for the poster, which schedules its own retries per channel: a client
    that slept through one channel's Retry-After would hold up every other channel.

    With `tier_scale` the client paces every call by its method's rate limit tier (Slack's rates
    times `tier_scale`; 1.0 for Slack itself), interactive calls first, and retries each 429
    after its Retry-After until it goes through (`bot.slack.pacing`).
    """
    paced = tier_scale is not None
    handlers: list[RetryHandler] = []
    if retries:
        handlers = [
            ConnectionErrorRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=3),
        ]
        if not paced:  # the pacer retries 429s itself, without holding its lock
            handlers.insert(1, RateLimitErrorRetryHandler(max_retry_count=3))
    options: dict[str, Any] = {
        "token": token,
        "base_url": base_url,
        # urllib takes fractional seconds; slack_sdk only annotates the timeout as int.
        "timeout": timeout,
        "retry_handlers": handlers,
    }
    if tier_scale is None:
        return WebClient(**options)
    return PacedWebClient(pacer=Pacer(scale=tier_scale), **options)


# Where the middleware in `bot.slack.listeners.register` puts the deps in Bolt's context.
DEPS_KEY = "hitl_deps"


def deps_of(context: Mapping[str, Any]) -> SlackDeps:
    """The bot's dependencies from a listener's Bolt context."""
    deps = context[DEPS_KEY]
    if not isinstance(deps, SlackDeps):
        raise TypeError("the Bolt context carries no SlackDeps; register listeners with register()")
    return deps
