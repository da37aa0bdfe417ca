"""Pacing Web API calls by tier: bursts spread, clicks first, 429s retried; on a fake clock."""

import threading
from collections.abc import Callable, Iterator

import pytest
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.demo.standin import SlackStandIn
from bot.slack.context import make_web_client
from bot.slack.pacing import (
    PacedWebClient,
    Pacer,
    Priority,
    background,
    current_priority,
    per_minute,
)

TOKEN = "xoxb-pacing"
CHANNEL = "C0PACING1"
TIER_3 = 50.0  # chat.update, calls a minute


class FakeClock:
    """Time that moves only when someone sleeps; `on_sleep` runs after each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.on_sleep: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
            self.slept.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def slack(clock: FakeClock) -> Iterator[SlackStandIn]:
    """A stand-in holding Slack's real tiers on the same fake clock as the pacer."""
    with SlackStandIn(TOKEN, rate_limit_per_channel=None, tier_scale=1.0, clock=clock) as standin:
        yield standin


def paced_client(slack: SlackStandIn, pacer: Pacer) -> PacedWebClient:
    return PacedWebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[], pacer=pacer)


def post_prompts(client: PacedWebClient, count: int) -> list[str]:
    return [str(client.chat_postMessage(channel=CHANNEL, text=f"p{i}")["ts"]) for i in range(count)]


def test_a_burst_of_background_edits_is_spread_at_the_tier_rate(
    slack: SlackStandIn, clock: FakeClock
) -> None:
    """200 re-score edits: none refused, and no faster in the long run than Tier 3 allows."""
    client = paced_client(slack, Pacer(clock=clock, sleep=clock.sleep))
    (ts,) = post_prompts(client, 1)
    started = clock.now
    sent_at: list[float] = []
    with background():
        for number in range(200):
            client.chat_update(channel=CHANNEL, ts=ts, text=f"edit {number}")
            sent_at.append(clock.now)
    updates = slack.calls("chat.update")
    assert len(updates) == 200 and all(call.ok for call in updates)
    assert slack.rate_limited_count == 0
    assert slack.message(CHANNEL, ts)["text"] == "edit 199"
    # Slack's bucket holds a minute's calls and refills at 50 a minute; the pacer stays under.
    assert clock.now - started >= (200 - TIER_3) * 60 / TIER_3
    burst = sum(1 for at in sent_at if at == started)
    assert 1 <= burst < TIER_3
    steady = (sent_at[-1] - sent_at[burst]) / (len(sent_at) - 1 - burst)
    assert steady >= 60 / TIER_3  # seconds between edits once the burst is spent


@pytest.mark.parametrize("reserve", [0.0, 0.2])
def test_a_click_during_the_burst_goes_before_the_remaining_edits(
    slack: SlackStandIn, clock: FakeClock, reserve: float
) -> None:
    """With or without a reserve kept for clicks, the click's edit jumps the background queue."""
    client = paced_client(slack, Pacer(clock=clock, sleep=clock.sleep, reserve=reserve))
    background_ts, clicked_ts = post_prompts(client, 2)
    clicked: list[int] = []

    def click() -> None:
        assert current_priority() == Priority.INTERACTIVE  # a fresh thread: not background
        client.chat_update(channel=CHANNEL, ts=clicked_ts, text="answered")
        clicked.append(len(slack.calls("chat.update")))

    def first_sleep_clicks() -> None:
        if clicked or threading.current_thread() is not main:
            return
        person = threading.Thread(target=click)
        person.start()
        person.join(10)

    main = threading.current_thread()
    clock.on_sleep = first_sleep_clicks
    with background():
        for number in range(200):
            client.chat_update(channel=CHANNEL, ts=background_ts, text=f"edit {number}")
    calls = slack.calls("chat.update")
    assert len(calls) == 201 and all(call.ok for call in calls)
    position = [call.params["ts"] for call in calls].index(clicked_ts)
    assert clicked == [position + 1]
    assert position < 50  # within the first burst, not after the 200 background edits
    assert slack.message(CHANNEL, clicked_ts)["text"] == "answered"
    assert slack.rate_limited_count == 0


def test_a_429_pauses_the_method_and_the_edit_lands_after_retry_after(
    slack: SlackStandIn, clock: FakeClock
) -> None:
    """A pacer that thinks Slack is ten times as fast meets a 429; the call is not lost."""
    client = paced_client(slack, Pacer(clock=clock, sleep=clock.sleep, scale=10.0))
    (ts,) = post_prompts(client, 1)
    for number in range(51):  # the stand-in's bucket holds 50
        client.chat_update(channel=CHANNEL, ts=ts, text=f"edit {number}")
    calls = slack.calls("chat.update")
    assert [call.status for call in calls] == [200] * 50 + [429, 200]
    assert slack.rate_limited_count == 1
    assert slack.message(CHANNEL, ts)["text"] == "edit 50"
    assert sum(clock.slept) >= 2.0  # Retry-After: 2 (1.2 s of refill, rounded up)


def test_pause_holds_back_every_caller_of_the_method(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    pacer.pause("chat.update", 30)
    pacer.acquire("chat.update")
    assert clock.now == pytest.approx(1030.0 + 60 / (TIER_3 * 0.9))
    pacer.acquire("views.publish")  # another method is not paused
    assert clock.now == pytest.approx(1030.0 + 60 / (TIER_3 * 0.9))


def test_post_message_is_paced_per_channel(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    pacer.acquire("chat.postMessage", channel="C1")
    pacer.acquire("chat.postMessage", channel="C2")
    assert clock.slept == []
    pacer.acquire("chat.postMessage", channel="C1")
    assert sum(clock.slept) == pytest.approx(60 / (60 * 0.9))


def test_tiers_of_the_methods_the_bot_calls() -> None:
    assert per_minute("chat.update") == 50
    assert per_minute("conversations.history") == 50
    assert per_minute("chat.postEphemeral") == 100
    assert per_minute("views.publish") == 100
    assert per_minute("auth.test") == 100
    assert per_minute("files.getUploadURLExternal") == 100
    assert per_minute("files.completeUploadExternal") == 100
    assert per_minute("chat.postMessage") == 60  # per channel
    assert per_minute("some.newMethod") == 20  # Tier 2, the documented default


def test_background_is_a_context_that_ends_with_its_block() -> None:
    assert current_priority() == Priority.INTERACTIVE
    with background():
        assert current_priority() == Priority.BACKGROUND
    assert current_priority() == Priority.INTERACTIVE


def test_make_web_client_paces_when_given_a_tier_scale() -> None:
    paced = make_web_client(TOKEN, base_url="http://127.0.0.1:9/api/", tier_scale=2.0)
    assert isinstance(paced, PacedWebClient)
    assert paced.pacer.rate("chat.update") == pytest.approx(TIER_3 * 2 * 0.9)
    # The pacer retries 429s itself; the SDK's handler would sleep through them unpaced.
    assert not any(isinstance(h, RateLimitErrorRetryHandler) for h in paced.retry_handlers)
    plain = make_web_client(TOKEN, base_url="http://127.0.0.1:9/api/")
    assert not isinstance(plain, PacedWebClient)
    assert any(isinstance(h, RateLimitErrorRetryHandler) for h in plain.retry_handlers)


def test_unpaced_methods_go_straight_out(slack: SlackStandIn, clock: FakeClock) -> None:
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    client = PacedWebClient(
        token=TOKEN,
        base_url=slack.api_url,
        retry_handlers=[],
        pacer=pacer,
        unpaced=("chat.postMessage",),
    )
    post_prompts(client, 3)
    assert clock.slept == [] and pacer.waiting("chat.postMessage", channel=CHANNEL) == 0
