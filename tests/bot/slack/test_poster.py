"""The outbox poster against a misbehaving Slack: rate limits, 5xx, an outage, a bad channel."""

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.slack.standin import SlackStandIn
from bot.storage.schema import ReviewPrompt
from tests.bot.slack.conftest import CHANNEL, Bot, start_bot, wait_for


@pytest.fixture
def slow_bot(tmp_path: Path) -> Iterator[Bot]:
    """A bot whose stand-in allows Slack's real rate: one message a second per channel."""
    yield from start_bot(tmp_path, rate=1.0, trained=False)


def item_ids_in_order(slack: SlackStandIn) -> list[str]:
    """The item texts of the prompts in the channel, in posting order."""
    found = []
    for message in slack.messages(CHANNEL):
        for block in message["blocks"]:
            text = block.get("text") or {}
            if text.get("type") == "plain_text" and text.get("text", "").startswith("item "):
                found.append(text["text"])
    return found


def statuses(bot: Bot) -> list[str]:
    with bot.runtime.services.sessions.begin() as session:
        return list(session.scalars(select(ReviewPrompt.status).order_by(ReviewPrompt.id)))


def test_rate_limit_storm_and_outage_deliver_every_prompt_once_in_order(slow_bot: Bot) -> None:
    bot = slow_bot
    texts = [f"item {i:02d}" for i in range(6)]
    bot.slack.rate_limit_storm(3)
    bot.submit(*texts[:3])
    wait_for(lambda: bot.slack.messages(CHANNEL), 1, timeout=20)
    bot.slack.set_down(True)
    bot.submit(*texts[3:])
    time.sleep(30)  # Slack is unreachable for half a minute
    assert len(bot.slack.messages(CHANNEL)) < 6
    bot.slack.set_down(False)
    wait_for(lambda: bot.slack.messages(CHANNEL), 6, timeout=120)
    time.sleep(1.5)
    assert item_ids_in_order(bot.slack) == texts
    assert statuses(bot) == ["posted"] * 6
    assert bot.runtime.poster.stats.rate_limited >= 3
    posted = [c for c in bot.slack.calls("chat.postMessage") if c.ok]
    assert len(posted) == 6


def test_server_errors_are_retried_and_sending_keeps_slacks_pace(slow_bot: Bot) -> None:
    bot = slow_bot
    bot.slack.fail_next(2, status=503)
    texts = [f"item {i:02d}" for i in range(4)]
    bot.submit(*texts)
    wait_for(lambda: bot.slack.messages(CHANNEL), 4, timeout=30)
    assert item_ids_in_order(bot.slack) == texts
    times = bot.runtime.poster.stats.post_times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.99 for gap in gaps), gaps
    assert bot.slack.rate_limited_count == 0


def test_unknown_channel_keeps_the_prompt_for_later(tmp_path: Path) -> None:
    with contextmanager(start_bot)(tmp_path, rate=50.0, trained=False) as bot:
        bot.slack._allowed_channels = frozenset({"C0OTHER01"})  # the bot was never invited
        bot.submit("waiting")
        poster = bot.runtime.poster
        wait_for(lambda: [1] * poster.stats.errors, 1)
        with bot.runtime.services.sessions.begin() as session:
            prompt = session.scalars(select(ReviewPrompt)).one()
            assert prompt.status == "pending" and "channel_not_found" in (prompt.last_error or "")
        assert bot.slack.messages(CHANNEL) == []
