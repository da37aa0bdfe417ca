"""Slack refusing the token or a channel: prompts wait (never `failed`), posting stops once,
is probed with backoff, and resumes by itself; only a malformed message fails its prompt.

The poster is stepped on a fake clock against the stand-in over real HTTP (see test_poster.py);
`fail_method` makes chat.postMessage answer `{"ok": false, "error": …}` like Slack does.
"""

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select

from bot import outbox
from bot import tasks as task_ops
from bot.services import Services
from bot.slack import blocks
from bot.slack.context import make_web_client
from bot.slack.messages import message_for, stats_view
from bot.slack.poster import Poster
from bot.states import PostingScope
from bot.stats import task_stats
from bot.storage.schema import Item, PostingBlock, ReviewPrompt
from tests.bot.slack.conftest import CHANNEL, start_bot, wait_for
from tests.bot.slack.test_poster import (
    SLOW_CHANNEL,
    TOKEN,
    FakeClock,
    Stepped,
    item_ids_in_order,
    statuses,
)
from tests.bot.slack.test_poster import stepped as stepped_poster  # noqa: F401  # a fixture

OTHER = SLOW_CHANNEL  # the second task's channel
TOKEN_ERRORS = ["invalid_auth", "token_revoked", "account_inactive", "not_authed"]
CHANNEL_ERRORS = [
    "missing_scope",
    "not_in_channel",
    "restricted_action",
    "is_archived",
    "channel_not_found",
]


@pytest.fixture
def stepped(stepped_poster: Stepped) -> Stepped:  # noqa: F811  # the imported fixture, requested
    """The poster of test_poster.py: on a fake clock, two tasks, two channels."""
    return stepped_poster


def posting(services: Services, task: str) -> dict[str, Any]:
    """`hitl stats`'s posting state of `task`."""
    with services.sessions.begin() as session:
        return task_stats(session, task_ops.get_task(session, task)).posting


def task_statuses(services: Services, channel: str) -> list[str]:
    """The prompt statuses of the task posting to `channel`, oldest first."""
    with services.sessions.begin() as session:
        task = "reviews" if channel == CHANNEL else "slow"
        task_id = task_ops.get_task(session, task).id
        return list(
            session.scalars(
                select(ReviewPrompt.status)
                .join(Item, Item.id == ReviewPrompt.item_id)
                .where(Item.task_id == task_id)
                .order_by(ReviewPrompt.id)
            )
        )


def posts_to(stepped: Stepped, channel: str) -> int:
    """How many chat.postMessage calls to `channel` the stand-in answered."""
    return sum(1 for c in stepped.slack.calls("chat.postMessage") if c.params["channel"] == channel)


def run_for(stepped: Stepped, seconds: float) -> None:
    """Step the poster until `seconds` have passed on the fake clock."""
    end = stepped.clock.seconds + seconds
    for _ in range(100_000):
        if stepped.clock.seconds >= end:
            return
        stepped.poster.step()
    raise AssertionError("the fake clock did not move on")


@pytest.mark.parametrize("error", TOKEN_ERRORS + CHANNEL_ERRORS)
def test_refused_token_or_channel_blocks_then_resumes_in_order(
    stepped: Stepped, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Prompts stay pending, stats and health say blocked (once in the log), probes back off,
    and once Slack takes posts again every prompt goes out in order and the state is ok."""
    caplog.set_level(logging.INFO, logger="bot.slack.poster")
    token_error = error in TOKEN_ERRORS
    slack, services = stepped.slack, stepped.services
    slack.fail_method("chat.postMessage", error, channel=None if token_error else CHANNEL)
    texts = [f"item {i:02d}" for i in range(3)]
    stepped.submit(*texts)
    stepped.submit("other 00", task_name="slow")

    run_for(stepped, 60.0)  # a minute of Slack refusing

    assert task_statuses(services, CHANNEL) == ["pending"] * 3
    assert "failed" not in statuses(services)
    blocked = posting(services, "reviews")
    assert blocked["state"] == "blocked" and blocked["reason"] == error
    assert blocked["since"] == stepped.clock._epoch.isoformat()
    health = stepped.poster.health()
    assert health["state"] == "blocked" and health["reason"] == error
    if token_error:
        # Nothing goes anywhere: the other channel waits too, and one probe tests the token.
        assert health["scope"] == "token" and health["channels"] == {}
        assert posting(services, "slow") == blocked
        assert task_statuses(services, OTHER) == ["pending"]
        assert len(slack.calls("chat.postMessage")) <= 3  # a first try per channel, one probe
    else:
        assert health["scope"] == "channel" and list(health["channels"]) == [CHANNEL]
        assert health["channels"][CHANNEL]["reason"] == error
        assert posting(services, "slow") == {"state": "ok"}
        assert task_statuses(services, OTHER) == ["posted"]  # the other channel kept posting
        assert posts_to(stepped, CHANNEL) <= 2  # the first try, one probe after 30 s
    assert slack.messages(CHANNEL) == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and error in errors[0].getMessage()  # said once, when it started

    tries = len(slack.calls("chat.postMessage"))
    run_for(stepped, 10 * 60.0)  # probes at 90, 210, 450 s: no tight loop
    assert len(slack.calls("chat.postMessage")) - tries <= 3

    slack.fail_method("chat.postMessage", None)  # the bot is invited, the token fixed…
    stepped.run_until_all_posted(rounds=3000)
    assert item_ids_in_order(slack) == texts
    assert statuses(services) == ["posted"] * 4
    assert posting(services, "reviews") == {"state": "ok"}
    assert stepped.poster.health() == {"state": "ok"}
    resumed = [r for r in caplog.records if "resumed" in r.getMessage()]
    assert len(resumed) == 1 and resumed[0].levelno == logging.INFO
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    with services.sessions.begin() as session:
        prompts = session.scalars(select(ReviewPrompt)).all()
        # The refusals were not the prompts' fault: they do not count as attempts.
        assert all(p.attempts == 1 for p in prompts), [p.attempts for p in prompts]


def test_probes_back_off_from_30_seconds_to_15_minutes(stepped: Stepped) -> None:
    stepped.slack.fail_method("chat.postMessage", "not_in_channel", channel=CHANNEL)
    stepped.submit("item 00")
    run_for(stepped, 2000.0)
    times = [c.at for c in stepped.slack.calls("chat.postMessage")]
    with stepped.services.sessions.begin() as session:
        (block,) = outbox.posting_blocks(session)
    # First try at 0, probes at 30, 90, 210, 450, 930 and 1830 s (then every 900 s): 7 in
    # 2,000 s. Stepping moves the clock at most a second at a time, so allow one either way.
    assert 6 <= len(times) <= 8, len(times)
    assert block.probes == len(times) - 1
    assert outbox.probe_interval(0) == 30 and outbox.probe_interval(10) == 900


def test_a_malformed_message_fails_only_that_prompt(stepped: Stepped) -> None:
    stepped.slack.fail_method("chat.postMessage", "invalid_blocks", count=1)
    stepped.submit("item 00", "item 01", "item 02")
    stepped.run_until(lambda: "pending" not in statuses(stepped.services))
    assert statuses(stepped.services) == ["failed", "posted", "posted"]
    assert item_ids_in_order(stepped.slack) == ["item 01", "item 02"]
    assert posting(stepped.services, "reviews") == {"state": "ok"}
    assert stepped.poster.health() == {"state": "ok"}
    with stepped.services.sessions.begin() as session:
        stats = task_stats(session, task_ops.get_task(session, "reviews"))
    assert stats.prompts_failed == 1


def test_a_new_token_that_auth_test_accepts_lifts_the_token_block(stepped: Stepped) -> None:
    """After a restart with a fixed token, the block goes at once, without waiting for a probe."""
    stepped.slack.fail_method("chat.postMessage", "token_revoked")
    stepped.submit("item 00")
    run_for(stepped, 5.0)
    assert posting(stepped.services, "reviews")["reason"] == "token_revoked"
    stepped.slack.fail_method("chat.postMessage", None)
    restarted = Poster(
        stepped.services.sessions,
        make_web_client(TOKEN, base_url=stepped.slack.api_url, retries=False),
        message_for,
        clock=stepped.clock.monotonic,
        now=stepped.clock.now,
        wait=stepped.wait,
    )
    assert restarted.resume_if_token_accepted()
    assert posting(stepped.services, "reviews") == {"state": "ok"}
    stepped.poster = restarted
    stepped.run_until_all_posted()  # before the first probe was due
    assert stepped.clock.seconds < 30


def test_a_token_still_refused_at_start_keeps_the_block(stepped: Stepped) -> None:
    stepped.slack.fail_method("chat.postMessage", "invalid_auth")
    stepped.submit("item 00")
    run_for(stepped, 5.0)
    wrong = Poster(
        stepped.services.sessions,
        make_web_client("xoxb-wrong", base_url=stepped.slack.api_url, retries=False),
        message_for,
    )
    assert not wrong.resume_if_token_accepted()
    assert posting(stepped.services, "reviews")["reason"] == "invalid_auth"


def test_stats_blocks_say_posting_stopped_and_what_to_do(stepped: Stepped) -> None:
    stepped.slack.fail_method("chat.postMessage", "not_in_channel", channel=CHANNEL)
    stepped.submit("item 00")
    run_for(stepped, 5.0)
    with stepped.services.sessions.begin() as session:
        view = stats_view(task_stats(session, task_ops.get_task(session, "reviews")))
    message = blocks.stats_blocks(view)
    shown = json.dumps(message)
    assert "Prompts are not posted" in shown and "not_in_channel" in shown
    assert "invite the bot" in shown
    assert "posting stopped (not_in_channel)" in message["text"]
    ok = blocks.stats_blocks(stats_view(task_stats_of(stepped.services, "slow")))
    assert "Prompts are not posted" not in json.dumps(ok)


def task_stats_of(services: Services, name: str) -> Any:
    with services.sessions.begin() as session:
        return task_stats(session, task_ops.get_task(session, name))


def test_healthz_and_slash_stats_report_the_block(tmp_path: Path) -> None:
    """The running bot: `/healthz` and `/hitl stats` say posting is blocked, then ok again."""
    with contextmanager(start_bot)(tmp_path, rate=50.0, trained=False) as bot:
        bot.slack.fail_method("chat.postMessage", "missing_scope", channel=CHANNEL)
        bot.submit("waiting")
        services = bot.runtime.services
        wait_for(lambda: [1] * bot.runtime.poster.stats.blocked, 1)
        health = httpx.get(f"{bot.runtime.url}/healthz", timeout=10).json()
        assert health["posting"]["state"] == "blocked"
        assert health["posting"]["reason"] == "missing_scope"
        assert list(health["posting"]["channels"]) == [CHANNEL]
        user = bot.user("U0GUS0001")
        result = user.slash_command("stats", channel_id=CHANNEL)
        assert result.response_url is not None
        url = result.response_url
        replies = json.dumps(wait_for(lambda: bot.slack.response_url_posts(url), 1))
        assert "Prompts are not posted" in replies and "missing_scope" in replies
        with services.sessions.begin() as session:
            assert session.scalars(select(ReviewPrompt.status)).all() == ["pending"]


def test_posting_blocks_are_shared_by_posters_on_either_database(services: Services) -> None:
    """Two posters (replicas) agree: the block is stored once, and only one takes each probe."""
    with services.sessions.begin() as session:
        session.execute(delete(PostingBlock))  # the shared PostgreSQL schema outlives tests
    clock = FakeClock()
    now = clock.now()
    try:
        with services.sessions.begin() as session:
            assert outbox.block_posting(
                session, PostingScope.CHANNEL, channel=CHANNEL, reason="not_in_channel", now=now
            )
            assert not outbox.block_posting(
                session, PostingScope.CHANNEL, channel=CHANNEL, reason="is_archived", now=now
            )
            (block,) = outbox.posting_blocks(session)
        assert block.reason == "is_archived" and block.since == now
        clock.sleep(30)
        with services.sessions.begin() as session:
            assert outbox.claim_probe(session, block, now=clock.now())
            assert not outbox.claim_probe(session, block, now=clock.now())  # a replica's try
            assert outbox.posting_state(session, CHANNEL)["reason"] == "is_archived"
            assert outbox.posting_state(session, OTHER) == {"state": "ok"}
            (later,) = outbox.posting_blocks(session)
        assert later.probes == 1 and later.since == now
        assert (later.next_probe_at - clock.now()).total_seconds() == 60  # the next one backs off
        with services.sessions.begin() as session:
            assert outbox.unblock_posting(session, PostingScope.CHANNEL, channel=CHANNEL)
            assert outbox.unblock_posting(session, PostingScope.CHANNEL, channel=CHANNEL) is None
            assert outbox.posting_blocks(session) == []
    finally:
        with services.sessions.begin() as session:
            session.execute(delete(PostingBlock))
