"""`hitl prompts retry` and the posting lines of `hitl stats`, with the poster and the stand-in."""

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot import cli
from bot.demo.standin import SlackStandIn
from bot.services import build_services
from bot.settings import Settings
from bot.slack.context import make_web_client
from bot.slack.messages import message_for
from bot.slack.poster import Poster
from bot.storage.schema import AuditLog, ReviewPrompt

CHANNEL = "C0REVIEW1"
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def hitl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Run]:
    """Run `hitl ARGS...` in-process on a SQLite file; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("HITL_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    cli.services.cache_clear()

    def run(*args: str) -> tuple[int, str, str]:
        err = io.StringIO()
        code = cli.main(list(args), stderr=err)
        captured = capsys.readouterr()
        return code, captured.out, err.getvalue() + captured.err

    yield run
    cli.services.cache_clear()


def post_all(slack: SlackStandIn, tmp_path: Path, *, rounds: int = 200) -> Poster:
    """A poster (as `hitl serve` runs it) on the CLI's database, stepped until nothing is due."""
    services = build_services(
        Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'cli.db'}")
    )
    poster = Poster(
        services.sessions,
        make_web_client("xoxb-test", base_url=slack.api_url, retries=False),
        message_for,
        min_interval=0.0,
        wait=lambda seconds: None,
    )
    for _ in range(rounds):
        poster.run_once()
        assert poster.wait_for_sends(10.0)
        with services.sessions.begin() as session:
            waiting = session.scalars(
                select(ReviewPrompt.status).where(ReviewPrompt.status.in_(["pending", "sending"]))
            ).all()
        if not waiting:
            break
    services.engine.dispose()
    return poster


def prompt_statuses(tmp_path: Path) -> list[str]:
    services = build_services(
        Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'cli.db'}")
    )
    with services.sessions.begin() as session:
        found = list(session.scalars(select(ReviewPrompt.status).order_by(ReviewPrompt.id)))
    services.engine.dispose()
    return found


def test_retry_requeues_failed_prompts_which_are_then_posted(hitl: Run, tmp_path: Path) -> None:
    assert hitl("task", "create", "reviews", "--labels", "pos,neg", "--channel", CHANNEL)[0] == 0
    items = tmp_path / "items.csv"
    items.write_text("text\none\ntwo\nthree\n", encoding="utf-8")
    assert hitl("submit", "reviews", str(items))[0] == 0
    with SlackStandIn("xoxb-test", rate_limit_per_channel=None) as slack:
        slack.fail_method("chat.postMessage", "msg_too_long", count=2)
        post_all(slack, tmp_path)
        assert prompt_statuses(tmp_path) == ["failed", "failed", "posted"]
        code, out, _ = hitl("stats", "reviews")
        assert code == 0 and "posting: ok" in out
        assert "2 prompts refused by Slack as malformed" in out
        assert json.loads(hitl("stats", "reviews", "--json")[1])["prompts_failed"] == 2

        code, out, err = hitl("prompts", "retry", "reviews", "--json")
        assert (code, err) == (0, "")
        assert json.loads(out) == {"task": "reviews", "requeued": 2}
        assert prompt_statuses(tmp_path) == ["pending", "pending", "posted"]
        post_all(slack, tmp_path)
        assert prompt_statuses(tmp_path) == ["posted"] * 3
        texts = [m["text"] for m in slack.messages(CHANNEL)]
        assert len(texts) == 3 and "three" in texts[0] and "one" in texts[1] and "two" in texts[2]
    assert hitl("prompts", "retry", "reviews") == (0, "reviews: 0 failed prompts re-queued\n", "")
    services = build_services(
        Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'cli.db'}")
    )
    with services.sessions.begin() as session:
        audit = session.scalars(select(AuditLog).where(AuditLog.field == "prompts")).all()
        assert [(a.old_value, a.new_value) for a in audit] == [("2 failed", "2 pending")]
        assert audit[0].actor.startswith("cli")
    services.engine.dispose()


def test_retry_of_an_unknown_task_is_one_line_and_exit_2(hitl: Run) -> None:
    code, out, err = hitl("prompts", "retry", "nope")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "nope" in err


def test_stats_show_a_blocked_channel_from_another_process(hitl: Run, tmp_path: Path) -> None:
    """The poster stores the block; `hitl stats` (another process) reads it."""
    assert hitl("task", "create", "reviews", "--labels", "pos,neg", "--channel", CHANNEL)[0] == 0
    items = tmp_path / "items.csv"
    items.write_text("text\none\n", encoding="utf-8")
    assert hitl("submit", "reviews", str(items))[0] == 0
    with SlackStandIn("xoxb-test", rate_limit_per_channel=None) as slack:
        slack.fail_method("chat.postMessage", "not_in_channel")
        post_all(slack, tmp_path, rounds=3)
    assert prompt_statuses(tmp_path) == ["pending"]
    code, out, _ = hitl("stats", "reviews")
    assert code == 0 and "posting: blocked since" in out and "(not_in_channel)" in out
    assert "invite the bot" in out
    posting = json.loads(hitl("stats", "reviews", "--json")[1])["posting"]
    assert posting["state"] == "blocked" and posting["reason"] == "not_in_channel"
    assert set(posting) == {"state", "reason", "since"}
