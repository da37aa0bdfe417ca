"""The Slack calls that follow a click run off the listener threads: a slow `chat.update` no
longer holds the threads that acknowledge clicks, and queued redraws of one message merge."""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.slack import app as slack_app
from bot.slack.followups import Followups
from bot.storage.schema import Answer
from tests.bot.slack.conftest import CHANNEL, Bot, start_bot, wait_for


def test_queued_redraws_of_one_message_merge_into_the_last() -> None:
    followups = Followups(threads=1)
    release = threading.Event()
    drawn: list[str] = []
    message = ("C0ONE0001", "1.000001")

    def draw(name: str) -> None:
        if not followups.superseded(message):
            drawn.append(name)

    followups.submit(release.wait)  # holds the only thread: the three below queue up
    for name in ("first", "second", "third"):
        followups.submit(lambda name=name: draw(name), redraws=message)  # type: ignore[misc]
    followups.submit(lambda: drawn.append("other message"), redraws=("C0TWO0002", "2.000002"))
    release.set()
    assert followups.wait_idle(10)
    # Only the last queued redraw of the message ran; it reads what is stored when it runs.
    assert drawn == ["third", "other message"] and followups.completed == 5
    followups.stop(1.0)


def test_a_failing_follow_up_is_logged_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    followups = Followups(threads=1)
    ran: list[int] = []

    def fail() -> None:
        raise RuntimeError("Slack said no")

    followups.submit(fail)
    followups.submit(lambda: ran.append(1))
    assert followups.wait_idle(10)
    assert ran == [1] and "follow-up Slack call after a click failed" in caplog.text
    followups.stop(1.0)


def test_stop_gives_queued_follow_ups_its_budget_then_drops_the_rest() -> None:
    followups = Followups(threads=1)
    release = threading.Event()
    ran: list[int] = []
    followups.submit(release.wait)
    followups.submit(lambda: ran.append(1))
    followups.stop(0.05)  # the first is stuck: the budget runs out, the second is dropped
    release.set()
    assert not followups.wait_idle(0.5) or ran == []
    assert ran == []


@pytest.fixture
def narrow_bot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bot]:
    """A bot with two listener threads, so that a few clicks can fill them."""
    monkeypatch.setattr(slack_app, "LISTENER_THREADS", 2)
    yield from start_bot(tmp_path, rate=50.0)


def stored_answers(bot: Bot) -> list[Any]:
    with bot.runtime.services.sessions.begin() as session:
        return list(session.scalars(select(Answer.item_id).where(Answer.user_id != "import")))


def test_clicks_are_acknowledged_while_slack_redraws_slowly(narrow_bot: Bot) -> None:
    """Four clicks on two listener threads while every `chat.update` answers 3.5 s late (past
    Slack's 3 s ack window): each click is still acknowledged and stored. Redraws made on the
    listener threads held both for 3.5 s, and the last two clicks waited past the window."""
    bot = narrow_bot
    bot.submit("first", "second", "third", "fourth")
    messages = bot.prompts(4)
    bot.slack.delay_replies("chat.update", 3.5)
    results: list[Any] = [None] * 4

    def click(index: int, message: dict[str, Any]) -> None:
        button = next(
            element
            for block in message["blocks"]
            for element in block.get("elements") or []
            if element.get("type") == "button" and element["text"]["text"].startswith("positive")
        )
        results[index] = bot.user(f"U0CLICK0{index}").click_button(
            message, button["action_id"], value=button["value"], channel_id=CHANNEL
        )

    threads = [
        threading.Thread(target=click, args=(index, message))
        for index, message in enumerate(messages)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status for r in results] == [200] * 4, [(r.status, r.error) for r in results]
    assert all(r.attempts == 1 for r in results)  # none needed Slack's retry
    assert len(wait_for(lambda: stored_answers(bot), 4)) == 4
    bot.slack.delay_replies("chat.update", 0)
    followups = bot.runtime.deps.followups
    assert followups is not None and followups.wait_idle(15)
    assert len(bot.slack.calls("chat.update")) == 4  # every message redrawn in the end
