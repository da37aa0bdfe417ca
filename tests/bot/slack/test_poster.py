"""The outbox poster against a misbehaving Slack: rate limits, 5xx, an outage, a bad channel,
answers slower than the client's timeout.

Most tests step the poster on a fake clock (time moves only when the poster waits, and, unless a
test says otherwise, only once the sends in flight have finished), against the stand-in over real
HTTP with its own rate limit off: pacing and backoff are measured on the poster's clock, and a
minute of Slack trouble takes milliseconds. A client timeout of 0.3 s against answers held back
0.6 s stands in for Slack's 12 s against the client's 10 s. One test runs in real time against
the stand-in at Slack's real rate.
"""

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from slack_sdk import WebClient
from sqlalchemy import select

from bot import outbox
from bot import tasks as task_ops
from bot.demo.standin import SlackStandIn
from bot.ingest import IncomingItem
from bot.routing import submit
from bot.services import Services
from bot.slack.context import make_web_client
from bot.slack.messages import message_for
from bot.slack.poster import DUPLICATE_EVENT, DUPLICATE_TEXT, Poster, prompt_metadata
from bot.storage.schema import ReviewPrompt, utcnow
from tests.bot.slack.conftest import CHANNEL, Bot, start_bot, wait_for

TOKEN = "xoxb-poster-test"
SLOW_CHANNEL = "C0SLOW001"
CLIENT_TIMEOUT = 0.3
LATE = 0.6  # above the client's timeout: Slack stores the message, the client gives up


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
    # Whether the clock waits for the sends in flight before it moves on (deterministic timing).
    settle: bool = True

    def use_client_timeout(self, seconds: float) -> None:
        """Replace the poster with one whose client gives up after `seconds`."""
        self.poster = Poster(
            self.services.sessions,
            make_web_client(TOKEN, base_url=self.slack.api_url, timeout=seconds, retries=False),
            message_for,
            min_interval=1.0,
            clock=self.clock.monotonic,
            now=self.clock.now,
            wait=self.wait,
        )

    def run_until(self, done: Callable[[], bool], *, rounds: int = 1000) -> None:
        """Step the poster until `done()` (fail after `rounds`)."""
        for _ in range(rounds):
            if done():
                return
            self.poster.step()
        raise AssertionError(f"not done after {rounds} rounds: {statuses(self.services)}")

    def wait(self, seconds: float) -> None:
        """The poster's pause: let the sends finish (if settling), then move the clock on."""
        if self.settle:
            assert self.poster.wait_for_sends(10.0)
        self.clock.sleep(seconds)

    def submit(self, *texts: str, task_name: str = "reviews") -> None:
        """Queue items for review (no model yet: every one goes to a person)."""
        with self.services.sessions.begin() as session:
            task = task_ops.get_task(session, task_name)
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

    def run_until_all_posted(self, *, rounds: int = 1000) -> None:
        """Step the poster until every prompt is `posted` in the outbox."""
        for _ in range(rounds):
            if set(statuses(self.services)) == {"posted"}:
                return
            self.poster.step()
        raise AssertionError(f"prompts still {statuses(self.services)} after {rounds} rounds")


@pytest.fixture
def stepped(sqlite_services: Services) -> Iterator[Stepped]:
    """A poster paced at one message a second per channel, stepped by hand on a fake clock."""
    with sqlite_services.sessions.begin() as session:
        for name, channel in (("reviews", CHANNEL), ("slow", SLOW_CHANNEL)):
            task_ops.create_task(
                session, name, ["positive", "negative"], channel=channel, threshold=0.9
            )
    clock = FakeClock()
    waits: list[Callable[[float], None]] = []
    with SlackStandIn(TOKEN, rate_limit_per_channel=None) as slack:
        client = make_web_client(
            TOKEN, base_url=slack.api_url, timeout=CLIENT_TIMEOUT, retries=False
        )
        poster = Poster(
            sqlite_services.sessions,
            client,
            message_for,
            min_interval=1.0,
            clock=clock.monotonic,
            now=clock.now,
            wait=lambda seconds: waits[0](seconds),
        )
        stepped = Stepped(poster, clock, slack, sqlite_services)
        waits.append(stepped.wait)
        yield stepped
        stepped.poster.stop()


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


def prompts(services: Services) -> list[tuple[str, str | None, str | None]]:
    """(status, channel, message ts) of every prompt, oldest first."""
    with services.sessions.begin() as session:
        rows = session.execute(
            select(ReviewPrompt.status, ReviewPrompt.channel, ReviewPrompt.message_ts).order_by(
                ReviewPrompt.id
            )
        ).all()
        return [(str(r[0]), r[1], r[2]) for r in rows]


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
    # A refused connection never reached Slack: nothing to look for before sending again.
    assert poster.stats.unconfirmed == 0 and slack.calls("conversations.history") == []
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
    assert poster.wait_for_sends(5.0)
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
    # The outbox records a post once Slack's answer is in, a moment after Slack stored it.
    wait_for(lambda: [s for s in statuses(bot.runtime.services) if s == "posted"], len(texts))
    assert statuses(bot.runtime.services) == ["posted"] * len(texts)
    assert [c.ok for c in bot.slack.calls("chat.postMessage")].count(True) == len(texts)


def test_unknown_channel_keeps_the_prompt_for_later(tmp_path: Path) -> None:
    with contextmanager(start_bot)(tmp_path, rate=50.0, trained=False) as bot:
        bot.slack._allowed_channels = frozenset({"C0OTHER01"})  # the bot was never invited
        bot.submit("waiting")
        poster = bot.runtime.poster
        wait_for(lambda: [1] * poster.stats.blocked, 1)
        with bot.runtime.services.sessions.begin() as session:
            prompt = session.scalars(select(ReviewPrompt)).one()
            assert prompt.status == "pending" and "channel_not_found" in (prompt.last_error or "")
        assert bot.slack.messages(CHANNEL) == []
        assert poster.health()["channels"][CHANNEL]["reason"] == "channel_not_found"


def test_answers_slower_than_the_timeout_leave_one_message_per_prompt(stepped: Stepped) -> None:
    """Slack stores each prompt but answers after the client's timeout: found, not re-posted."""
    slack, poster = stepped.slack, stepped.poster
    texts = ["item 00", "item 01"]
    slack.delay_replies("chat.postMessage", LATE, count=3)
    stepped.submit(*texts)
    stepped.run_until_all_posted()

    messages = slack.messages(CHANNEL)
    assert item_ids_in_order(slack) == texts  # once each, in order
    assert prompts(stepped.services) == [("posted", CHANNEL, m["ts"]) for m in messages]
    assert [m["metadata"]["event_payload"]["prompt_id"] for m in messages] == [1, 2]
    assert len(slack.calls("chat.postMessage")) == 2  # each timed out once, and was found
    assert poster.stats.unconfirmed == 2 and poster.stats.found == 2
    assert poster.stats.posted == 0 and poster.stats.duplicates == 0
    lookups = slack.calls("conversations.history")
    assert [call.params["include_all_metadata"] for call in lookups] == ["1", "1"]
    assert all(float(call.params["oldest"]) < float(messages[0]["ts"]) for call in lookups)


def test_a_channel_whose_posts_time_out_does_not_hold_up_another(
    stepped: Stepped, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slow channel's send hangs; the other channel's prompts go out meanwhile, paced."""
    # The stepped clock runs ahead of real time while sends are in flight (each idle round moves
    # it by a tick): on a slow machine the hang would outlast the stale-claim age on that clock,
    # and the claim's release is another test's subject.
    monkeypatch.setattr(outbox, "STALE_CLAIM", timedelta(days=1))
    # Long enough that three paced posts elsewhere fit in while the slow one hangs, even on a
    # loaded machine (pacing runs on the stepped clock; only the hang is real time).
    stepped.use_client_timeout(5.0)
    slack, poster = stepped.slack, stepped.poster
    slack.delay_replies("chat.postMessage", 6.0, channel=SLOW_CHANNEL, count=1)
    stepped.submit("slow 00", task_name="slow")
    stepped.submit("item 00", "item 01", "item 02")
    stepped.settle = False
    began = time.monotonic()
    stepped.run_until(lambda: statuses(stepped.services)[1:] == ["posted"] * 3, rounds=100_000)
    assert time.monotonic() - began < 5.0, time.monotonic() - began
    # The slow channel's first send is still waiting for its answer.
    assert statuses(stepped.services) == ["sending", "posted", "posted", "posted"]
    assert poster.stats.errors == 0
    assert all(gap >= 1.0 for gap in gaps(poster.stats.post_times)), poster.stats.post_times

    stepped.settle = True
    stepped.run_until_all_posted()
    slow = slack.messages(SLOW_CHANNEL)
    assert len(slow) == 1 and poster.stats.found == 1
    assert prompts(stepped.services)[0] == ("posted", SLOW_CHANNEL, slow[0]["ts"])
    assert item_ids_in_order(slack) == ["item 00", "item 01", "item 02"]


def test_extra_copies_point_to_the_oldest_which_stays_the_prompt(stepped: Stepped) -> None:
    """A late second copy of a timed-out prompt is edited into a pointer, without buttons."""
    slack, poster = stepped.slack, stepped.poster
    slack.delay_replies("chat.postMessage", LATE, count=1)
    stepped.submit("item 00")
    poster.run_once()
    assert poster.wait_for_sends(5.0)
    assert statuses(stepped.services) == ["pending"]  # timed out, though Slack has it
    first = slack.messages(CHANNEL)[0]
    # Slack stores another copy of the same prompt (a second, also unanswered, send).
    WebClient(token=TOKEN, base_url=slack.api_url).chat_postMessage(
        channel=CHANNEL, text=first["text"], blocks=first["blocks"], metadata=first["metadata"]
    )
    stepped.run_until_all_posted()

    live, extra = slack.messages(CHANNEL)
    assert prompts(stepped.services) == [("posted", CHANNEL, live["ts"])]
    assert live["text"] == first["text"] and live["blocks"] == first["blocks"]
    assert extra["text"] == DUPLICATE_TEXT and "blocks" not in extra
    assert extra["metadata"] == prompt_metadata(1, 1, event_type=DUPLICATE_EVENT)
    assert poster.stats.found == 1 and poster.stats.duplicates == 1
    assert len(slack.calls("chat.postMessage")) == 2  # the poster's one, and the late copy
