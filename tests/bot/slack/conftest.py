"""A running bot against the Slack stand-in, for end-to-end tests over real HTTP."""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.demo.simulator import SlackUser
from bot.demo.standin import SlackStandIn
from bot.demo.wiring import wire_bot
from bot.runtime import Runtime
from tests.conftest import TINY

CHANNEL = "C0REVIEW1"
ADMIN = "U0ADMIN01"


@dataclass
class Bot:
    """A running bot, its stand-in Slack, and helpers to act as Slack users."""

    runtime: Runtime
    slack: SlackStandIn
    secret: str
    api: httpx.Client

    def user(self, user_id: str, **kwargs: Any) -> SlackUser:
        """A simulated person who clicks and types commands."""
        return SlackUser(
            f"{self.runtime.url}/slack/events",
            self.secret,
            user_id=user_id,
            user_name=user_id.lower(),
            standin=self.slack,
            **kwargs,
        )

    def submit(self, *texts: str, task: str = "reviews") -> list[dict[str, Any]]:
        """Submit items through the HTTP API."""
        body = {"items": [{"text": t} for t in texts]}
        response = self.api.post(f"/api/tasks/{task}/items", json=body)
        response.raise_for_status()
        return list(response.json()["items"])

    def prompts(self, count: int, *, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until `count` messages are in the review channel."""
        return wait_for(lambda: self.slack.messages(CHANNEL), count, timeout=timeout)


def wait_for(fetch: Callable[[], list[Any]], count: int, *, timeout: float = 15.0) -> list[Any]:
    """Poll until `fetch()` returns at least `count` things; fail with what it saw."""
    deadline = time.monotonic() + timeout
    found = fetch()
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        found = fetch()
    assert len(found) >= count, f"waited {timeout}s for {count}, got {len(found)}: {found!r}"
    return found


def start_bot(tmp_path: Path, *, rate: float, trained: bool = True) -> Iterator[Bot]:
    """Stand-in, database, task, model and bot; stopped afterwards."""
    with (
        wire_bot(
            f"sqlite:///{tmp_path / 'bot.db'}",
            task="reviews",
            labels=["positive", "negative"],
            channel=CHANNEL,
            threshold=0.99,
            rate=rate,
            api_token="api-secret",
            seed=TINY if trained else (),
            admins=ADMIN,
            bot_token="xoxb-test",
        ) as wired,
        httpx.Client(
            base_url=wired.runtime.url, timeout=10, headers={"Authorization": "Bearer api-secret"}
        ) as api,
    ):
        yield Bot(runtime=wired.runtime, slack=wired.slack, secret=wired.secret, api=api)


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[Bot]:
    """A trained bot with a fast stand-in (50 messages a second per channel)."""
    yield from start_bot(tmp_path, rate=50.0)
