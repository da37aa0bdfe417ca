"""`hitl queue` and `hitl task budget`, in-process on a SQLite file: the order and JSON shape of
the queue, imported answers taking items off it, budget changes and their input errors."""

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot import outbox
from bot.services import Services, build_services
from bot.settings import Settings
from bot.storage.schema import AuditLog, ReviewPrompt, utcnow
from tests.bot.conftest import Hitl
from tests.bot.slack.test_poster_queue import DIFFERENT, NEAR_DUPLICATES, mixed_reviews

CHANNEL = "C0QUEUE01"
KEYS = ["id", "item_id", "text", "predicted_label", "confidence", "priority"]


def ok(hitl: Hitl, *args: str) -> str:
    code, out, err = hitl(*args)
    assert code == 0, err
    return out


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> str:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def db(tmp_path: Path) -> Services:
    """The CLI's database, as another process (the bot) sees it."""
    return build_services(Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'cli.db'}"))


@pytest.fixture
def queued(hitl: Hitl, tmp_path: Path) -> list[str]:
    """A trained task with five items waiting (ids q-0…q-4); the first of them is posted."""
    ok(hitl, "task", "create", "reviews", "--labels", "positive,negative")
    ok(hitl, "task", "channel", "reviews", CHANNEL)
    ok(hitl, "threshold", "reviews", "0.99")
    train = write_csv(tmp_path / "train.csv", ["text", "label"], [list(r) for r in mixed_reviews()])
    ok(hitl, "import", "reviews", train)
    ok(hitl, "retrain", "reviews")
    texts = [*NEAR_DUPLICATES, DIFFERENT, "wonderful table, cold service"]
    ids = [f"q-{k}" for k in range(len(texts))]
    items = write_csv(
        tmp_path / "items.csv", ["id", "text"], [list(r) for r in zip(ids, texts, strict=True)]
    )
    routed = lines(ok(hitl, "submit", "reviews", items, "--json"))
    assert [r["route"] for r in routed] == ["review"] * len(texts)
    services = db(tmp_path)
    with services.sessions.begin() as session:
        prompt_id = session.scalar(select(ReviewPrompt.id).order_by(ReviewPrompt.id).limit(1))
        assert prompt_id is not None
        outbox.claim(session, prompt_id, now=utcnow())
        outbox.mark_posted(
            session, prompt_id, channel=CHANNEL, ts="1700000000.000100", now=utcnow()
        )
    services.engine.dispose()
    return ids


def test_queue_json_lists_posted_first_then_by_priority(hitl: Hitl, queued: list[str]) -> None:
    entries = lines(ok(hitl, "queue", "reviews", "--json"))
    assert all(list(entry) == KEYS for entry in entries)
    assert entries[0]["id"] == "q-0"  # already in the channel
    pending = entries[1:]
    assert sorted(e["id"] for e in pending) == sorted(queued[1:])
    priorities = [e["priority"] for e in pending]
    assert priorities == sorted(priorities, reverse=True)
    first = entries[0]
    assert first["text"] == NEAR_DUPLICATES[0] and isinstance(first["item_id"], int)
    assert first["predicted_label"] in ("positive", "negative")
    assert 0.5 <= first["confidence"] < 0.99
    assert lines(ok(hitl, "queue", "reviews", "--json", "--limit", "2")) == entries[:2]


def test_queue_table_says_what_is_posted_and_what_is_queued(hitl: Hitl, queued: list[str]) -> None:
    out = ok(hitl, "queue", "reviews", "--limit", "3")
    header, *rows, more = out.splitlines()
    assert header.split()[:4] == ["#", "id", "state", "priority"]
    assert "q-0" in rows[0] and "posted" in rows[0]
    assert all("queued" in row for row in rows[1:]) and len(rows) == 3
    assert more == "… and 2 more (--limit 0 shows all)"


def test_queue_of_an_unknown_task_is_one_line_and_fails(hitl: Hitl) -> None:
    code, out, err = hitl("queue", "nope")
    assert code != 0 and out == ""
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: no task named")


def test_imported_answers_take_items_off_the_queue(
    hitl: Hitl, queued: list[str], tmp_path: Path
) -> None:
    """Answers imported for q-0 (posted) and q-3 (queued) remove both, as clicks would: the
    queued prompt is not sent any more, the posted message is redrawn by the bot."""
    before = lines(ok(hitl, "queue", "reviews", "--json"))
    texts = {e["id"]: e["text"] for e in before}
    answers = write_csv(
        tmp_path / "answers.csv",
        ["id", "text", "label"],
        [["q-0", texts["q-0"], "negative"], ["q-3", texts["q-3"], "positive"]],
    )
    ok(hitl, "import", "reviews", answers)
    after = lines(ok(hitl, "queue", "reviews", "--json"))
    assert [e["id"] for e in after] == [e["id"] for e in before if e["id"] not in ("q-0", "q-3")]
    services = db(tmp_path)
    with services.sessions.begin() as session:
        rows = session.execute(
            select(ReviewPrompt.item_id, ReviewPrompt.status, ReviewPrompt.redraw_at).order_by(
                ReviewPrompt.id
            )
        ).all()
    services.engine.dispose()
    states = [(status, redraw is not None) for _, status, redraw in rows]
    # q-0: posted, its message to be redrawn; q-3: answered before it was sent.
    assert states[0] == ("posted", True) and states[3] == ("answered", False)
    assert all(state == ("pending", False) for k, state in enumerate(states) if k not in (0, 3))


def test_budget_show_set_clear_and_audit(hitl: Hitl, tmp_path: Path) -> None:
    ok(hitl, "task", "create", "reviews", "--labels", "positive,negative")
    assert ok(hitl, "task", "budget", "reviews") == "none (0 posted today)\n"
    assert ok(hitl, "task", "budget", "reviews", "50") == "reviews: daily budget none → 50 a day\n"
    shown = json.loads(ok(hitl, "task", "budget", "reviews", "--json"))
    assert shown == {"task": "reviews", "daily_budget": 50, "posted_today": 0}
    cleared = json.loads(ok(hitl, "task", "budget", "reviews", "unlimited", "--json"))
    assert cleared["daily_budget"] is None
    services = db(tmp_path)
    with services.sessions.begin() as session:
        trail = session.execute(
            select(AuditLog.field, AuditLog.old_value, AuditLog.new_value).where(
                AuditLog.field == "daily_budget"
            )
        ).all()
    services.engine.dispose()
    assert [tuple(row) for row in trail] == [
        ("daily_budget", "None", "50"),
        ("daily_budget", "50", "None"),
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "budget 'abc' is not a whole number"),
        ("-1", "budget must be 1 to 100,000 prompts a day; got -1"),
        ("0", "budget must be 1 to 100,000 prompts a day; got 0"),
        ("2.5", "is not a whole number"),
    ],
)
def test_a_bad_budget_says_what_to_give_and_changes_nothing(
    hitl: Hitl, tmp_path: Path, value: str, message: str
) -> None:
    ok(hitl, "task", "create", "reviews", "--labels", "positive,negative")
    ok(hitl, "task", "budget", "reviews", "20")
    code, out, err = hitl("task", "budget", "reviews", value)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
    assert json.loads(ok(hitl, "task", "budget", "reviews", "--json"))["daily_budget"] == 20
    services = db(tmp_path)
    with services.sessions.begin() as session:
        audited = session.scalars(select(AuditLog.id).where(AuditLog.field == "daily_budget"))
        assert len(audited.all()) == 1
    services.engine.dispose()


def test_bad_posting_settings_stop_the_cli_with_one_line(
    hitl: Hitl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HITL_QUIET_HOURS", "25-3")
    code, _, err = hitl("task", "list")
    assert code == 2 and "HITL_QUIET_HOURS '25-3': hours must be 0-23" in err
    monkeypatch.setenv("HITL_QUIET_HOURS", "22-7")
    monkeypatch.setenv("HITL_TIMEZONE", "Europe/Atlantis")
    code, _, err = hitl("task", "list")
    assert code == 2 and "HITL_TIMEZONE 'Europe/Atlantis' is not an IANA time zone" in err
