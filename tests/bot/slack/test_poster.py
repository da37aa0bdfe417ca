"""The outbox poster against a misbehaving Slack: rate limits, 5xx, an outage, a bad channel.

Most tests step the poster on a fake clock (time moves only when the poster waits), against the
stand-in over real HTTP with its own rate limit off: pacing and backoff are measured on the
poster's clock, and a minute of Slack trouble takes milliseconds. One test runs in real time
against the stand-in at Slack's real rate.
"""

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot import tasks as task_ops
from bot.demo.standin import SlackStandIn
from bot.ingest import IncomingItem
from bot.routing import submit
from bot.services import Services
from bot.slack.context import make_web_client
from bot.slack.messages import message_for
from bot.slack.poster import Poster
from bot.storage.schema import ReviewPrompt, utcnow
from tests.bot.slack.conftest import CHANNEL, Bot, start_bot, wait_for

TOKEN = "xoxb-poster-test"


class FakeClock:
    """Time that passes only when the poster waits; scheduled actions run when it gets there."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._epoch = utcnow()
        self._scheduled: list[tuple[float, Callable[[], None]]] = []

    def monotonic(self) -> float:
        """Seconds since the start."""
        return self.seconds

    def now(self) -> datetime:
        """The same moment as a UTC datetime, for the outbox."""
        return self._epoch + timedelta(seconds=self.seconds)

    def sleep(self, seconds: float) -> None:
        """Move time on, running whatever was scheduled up to the new moment."""
        self.seconds += seconds
        due = [entry for entry in self._scheduled if entry[0] <= self.seconds]
        self._scheduled = [entry for entry in self._scheduled if entry[0] > self.seconds]
        for _, action in sorted(due, key=lambda entry: entry[0]):
            action()

    def at(self, moment: float, action: Callable[[], None]) -> None:
        """Run `action` once time reaches `moment`."""
        self._scheduled.append((moment, action))


@dataclass
class Stepped:
    """A poster on a fake clock, the stand-in it posts to, and the database behind it."""

    poster: Poster
    clock: FakeClock
    slack: SlackStandIn
    services: Services

    def submit(self, *texts: str) -> None:
        """Queue items for review (no model yet: every one goes to a person)."""
        with self.services.sessions.begin() as session:
            task = task_ops.get_task(session, "reviews")
            submit(
                session,
                task,
                [IncomingItem(text) for text in texts],
                registry=self.services.registry,
                max_chars=1000,
                now=self.clock.now(),
            )

    def run_until_posted(self, count: int, *, rounds: int = 1000) -> None:
        """Step the poster until `count` prompts are in the channel (fail after `rounds`)."""
        for _ in range(rounds):
            if len(self.slack.messages(CHANNEL)) >= count:
                return
            self.poster.step()
        have = len(self.slack.messages(CHANNEL))
        raise AssertionError(f"{have} of {count} prompts after {rounds} rounds")


@pytest.fixture
def stepped(sqlite_services: Services) -> Iterator[Stepped]:
    """A poster paced at one message a second per channel, stepped by hand on a fake clock."""
    with sqlite_services.sessions.begin() as session:
        task_ops.create_task(
            session, "reviews", ["positive", "negative"], channel=CHANNEL, threshold=0.9
        )
    clock = FakeClock()
    with SlackStandIn(TOKEN, rate_limit_per_channel=None) as slack:
        poster = Poster(
            sqlite_services.sessions,
            make_web_client(TOKEN, base_url=slack.api_url, retries=False),
            message_for,
            min_interval=1.0,
            clock=clock.monotonic,
            now=clock.now,
            wait=clock.sleep,
        )
        yield Stepped(poster, clock, slack, sqlite_services)


def item_ids_in_order(slack: SlackStandIn) -> list[str]:
    """The item texts of the prompts in the channel, in posting order."""
    found = []
    for message in slack.messages(CHANNEL):
        for block in message["blocks"]:
            text = block.get("text") or {}
            if text.get("type") == "plain_text" and text.get("text", "").startswith("item "):
                found.append(text["text"])
    return found


def statuses(services: Services) -> list[str]:
    with services.sessions.begin() as session:
        return list(session.scalars(select(ReviewPrompt.status).order_by(ReviewPrompt.id)))


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_rate_limit_storm_and_outage_deliver_every_prompt_once_in_order(stepped: Stepped) -> None:
    """Three 429s, then Slack unreachable for 30 s: every prompt arrives once, in order, paced."""
    slack, clock, poster = stepped.slack, stepped.clock, stepped.poster
    texts = [f"item {i:02d}" for i in range(6)]
    slack.rate_limit_storm(3, retry_after=1)
    stepped.submit(*texts[:3])
    stepped.run_until_posted(1)
    assert poster.stats.retry_delays == [1.0, 1.0, 1.0]  # Retry-After, each time
    slack.set_down(True)
    outage_ends = clock.seconds + 30
    clock.at(outage_ends, lambda: slack.set_down(False))
    stepped.submit(*texts[3:])
    stepped.run_until_posted(6)

    assert item_ids_in_order(slack) == texts
    assert statuses(stepped.services) == ["posted"] * 6
    assert [c.ok for c in slack.calls("chat.postMessage")].count(True) == 6
    assert poster.stats.rate_limited == 3
    # Connection refused for 30 s: the backoff doubles from 1 s, and the next try gets through.
    assert poster.stats.retry_delays[3:] == [1.0, 2.0, 4.0, 8.0, 16.0]
    times = poster.stats.post_times
    assert times[0] == 3.0 and all(t >= outage_ends for t in times[1:]), times
    assert all(gap >= 1.0 for gap in gaps(times)), gaps(times)
    assert clock.seconds >= 30


def test_backoff_doubles_up_to_a_minute_through_a_long_outage(stepped: Stepped) -> None:
    stepped.slack.set_down(True)
    stepped.clock.at(200, lambda: stepped.slack.set_down(False))
    stepped.submit("item 00")
    stepped.run_until_posted(1)
    assert stepped.poster.stats.retry_delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert stepped.poster.stats.post_times == [243.0]  # 1+2+4+8+16+32+60+60+60


def test_server_errors_are_retried_and_sending_keeps_slacks_pace(stepped: Stepped) -> None:
    stepped.slack.fail_next(2, status=503)
    texts = [f"item {i:02d}" for i in range(4)]
    stepped.submit(*texts)
    stepped.run_until_posted(4)
    assert item_ids_in_order(stepped.slack) == texts
    assert stepped.poster.stats.retry_delays == [1.0, 2.0]
    assert stepped.poster.stats.post_times == [3.0, 4.0, 5.0, 6.0]


def test_a_waiting_channel_sets_the_pause_and_an_idle_one_polls(stepped: Stepped) -> None:
    poster = stepped.poster
    assert poster.pause() == pytest.approx(0.05)  # nothing waits: poll at the tick
    stepped.submit("item 00", "item 01")
    assert poster.run_once() == 1
    assert poster.pause() == pytest.approx(1.0)  # the channel's next slot
    stepped.clock.sleep(0.7)
    assert poster.pause() == pytest.approx(0.3)


def test_real_time_storm_and_outage_at_slacks_rate(tmp_path: Path) -> None:
    """Over real HTTP at one message a second: a 429, an outage, then the rest, in order."""
    with contextmanager(start_bot)(tmp_path, rate=1.0, trained=False) as bot:
        poster = bot.runtime.poster
        texts = [f"item {i:02d}" for i in range(3)]
        bot.slack.rate_limit_storm(1)
        bot.submit(*texts)
        wait_for(lambda: bot.slack.messages(CHANNEL), 1, timeout=20)
        bot.slack.set_down(True)
        wait_for(lambda: [1] * poster.stats.errors, 1, timeout=20)  # it tried, and failed
        bot.slack.set_down(False)
        wait_for(lambda: bot.slack.messages(CHANNEL), 3, timeout=30)
        assert_delivered_once_in_order(bot, texts)
        assert poster.stats.retry_delays == [1.0, 1.0]  # Retry-After, then the first backoff
        assert bot.slack.rate_limited_count == 1  # only the storm: the pace never tripped it
        assert all(gap >= 0.99 for gap in gaps(poster.stats.post_times))


def assert_delivered_once_in_order(bot: Bot, texts: list[str]) -> None:
    assert item_ids_in_order(bot.slack) == texts
    assert statuses(bot.runtime.services) == ["posted"] * len(texts)
    assert [c.ok for c in bot.slack.calls("chat.postMessage")].count(True) == len(texts)


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
