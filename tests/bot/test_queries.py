"""Who answered, when, and how many labels came from where: one rule for stats, API and export.

Run on SQLite and on PostgreSQL.
"""

import csv
import io
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot import tasks as task_ops
from bot.answers import get_item, import_examples, record_answer
from bot.export import export_rows, write_export
from bot.ingest import IncomingItem
from bot.queries import item_details, label_counts
from bot.routing import submit
from bot.services import Services
from bot.states import AnswerKind, AnswerSource
from bot.stats import task_stats
from bot.storage.db import make_engine, upgrade

LABELS = ["positive", "negative"]
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _task_with_items(services: Services, count: int) -> list[int]:
    """A task with `count` submitted items (ids e0, e1, …), all waiting for review."""
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, "reviews", LABELS, channel="C0123", threshold=0.9)
        routed = submit(
            session,
            task,
            [IncomingItem(f"text number {i}", external_id=f"e{i}") for i in range(count)],
            registry=services.registry,
            max_chars=100,
            now=T0,
        )
    return [r.item_id for r in routed]


def test_importing_labels_for_existing_items_counts_each_label_once(services: Services) -> None:
    _task_with_items(services, 12)
    rows = [
        IncomingItem(f"text number {i}", label=LABELS[i % 2], external_id=f"e{i}")
        for i in range(12)
    ]
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "reviews")
        import_examples(session, task, rows, max_chars=100)
        stats = task_stats(session, task)
        counts = label_counts(session, task)
    # Twelve labels, all from the import: nobody answered in Slack and no new items were made.
    assert counts.as_dict() == {"slack": 0, "import": 12, "spot_check": 0, "total": 12, "people": 0}
    assert stats.labels_by_source == counts.as_dict()
    assert (stats.imported, stats.answers, stats.items) == (12, 0, 12)


def test_slack_answers_count_once_per_person_and_skips_are_not_labels(services: Services) -> None:
    first, second, third = _task_with_items(services, 3)
    with services.sessions.begin() as session:
        record_answer(session, get_item(session, first), "U0ANNA", label="positive", now=T0)
        # Anna changes her mind: history keeps both, but she gave one label.
        record_answer(
            session, get_item(session, first), "U0ANNA", label="negative", now=T0 + timedelta(1)
        )
        record_answer(session, get_item(session, second), "U0BOB", label="positive", now=T0)
        record_answer(
            session, get_item(session, third), "U0BOB", label=None, kind=AnswerKind.SKIP, now=T0
        )
        record_answer(
            session,
            get_item(session, third),
            "U0CARL",
            label="negative",
            source=AnswerSource.SPOT_CHECK,
            now=T0,
        )
        task = task_ops.get_task(session, "reviews")
        counts = label_counts(session, task)
        since = label_counts(session, task, since=T0)
        stats = task_stats(session, task, now=T0 + timedelta(days=2))
    assert counts.as_dict() == {"slack": 2, "import": 0, "spot_check": 1, "total": 3, "people": 3}
    # Only Anna's changed answer was given after T0.
    assert since.as_dict() == {"slack": 1, "import": 0, "spot_check": 0, "total": 1, "people": 1}
    assert (stats.answers, stats.labels_by_source["total"]) == (2, 3)


def test_item_details_name_the_deciding_person_and_the_whole_history(services: Services) -> None:
    (item_id,) = _task_with_items(services, 1)
    with services.sessions.begin() as session:
        record_answer(session, get_item(session, item_id), "U0ANNA", label="positive", now=T0)
        later = T0 + timedelta(minutes=5)
        record_answer(session, get_item(session, item_id), "U0ANNA", label="negative", now=later)
        details = item_details(session, task_ops.get_task(session, "reviews"), "e0")
        by_internal_id = item_details(session, task_ops.get_task(session, "reviews"), f"#{item_id}")
    assert details == by_internal_id
    assert (details["status"], details["final_label"], details["label_source"]) == (
        "resolved",
        "negative",
        "person",
    )
    assert (details["answered_by"], details["answered_at"]) == ("U0ANNA", later.isoformat())
    assert [
        (a["label"], a["user"], a["at"], a["source"], a["current"]) for a in details["answers"]
    ] == [
        ("positive", "U0ANNA", T0.isoformat(), "slack", False),
        ("negative", "U0ANNA", later.isoformat(), "slack", True),
    ]


def test_an_open_item_has_no_decider_and_an_empty_history(services: Services) -> None:
    _task_with_items(services, 1)
    with services.sessions.begin() as session:
        details = item_details(session, task_ops.get_task(session, "reviews"), "e0")
    assert details["status"] == "waiting_for_review"
    assert (details["answered_by"], details["answered_at"], details["answers"]) == (None, None, [])


def test_export_csv_names_the_decider_and_jsonl_carries_the_history(services: Services) -> None:
    first, second = _task_with_items(services, 2)
    with services.sessions.begin() as session:
        record_answer(session, get_item(session, first), "U0ANNA", label="positive", now=T0)
        record_answer(
            session, get_item(session, second), "U0BOB", label=None, kind=AnswerKind.SKIP, now=T0
        )
        task = task_ops.get_task(session, "reviews")
        csv_out, jsonl_out = io.StringIO(), io.StringIO()
        write_export(export_rows(session, task), csv_out, fmt="csv")
        write_export(export_rows(session, task), jsonl_out, fmt="jsonl")
    rows = list(csv.DictReader(io.StringIO(csv_out.getvalue())))
    assert "answers" not in rows[0]
    assert [(r["id"], r["answered_by"], r["answered_at"]) for r in rows] == [
        ("e0", "U0ANNA", T0.isoformat()),
        ("e1", "", ""),
    ]
    lines = [json.loads(line) for line in jsonl_out.getvalue().splitlines()]
    assert [(line["answered_by"], len(line["answers"])) for line in lines] == [
        ("U0ANNA", 1),
        (None, 1),
    ]
    assert lines[1]["answers"][0] == {
        "label": None,
        "user": "U0BOB",
        "at": T0.isoformat(),
        "source": "slack",
        "kind": "skip",
        "current": True,
    }


def test_csv_export_neutralises_formulas_and_jsonl_keeps_them(services: Services) -> None:
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, "reviews", LABELS, threshold=0.9)
        submit(
            session,
            task,
            [
                IncomingItem('=HYPERLINK("http://x")', external_id="@id"),
                IncomingItem("-2+3", external_id="e2"),
                IncomingItem("plain text", external_id="+e3"),
            ],
            registry=services.registry,
            max_chars=100,
        )
        csv_out, jsonl_out = io.StringIO(), io.StringIO()
        write_export(export_rows(session, task), csv_out, fmt="csv")
        write_export(export_rows(session, task), jsonl_out, fmt="jsonl")
    rows = list(csv.DictReader(io.StringIO(csv_out.getvalue())))
    assert [(r["id"], r["text"]) for r in rows] == [
        ("'@id", '\'=HYPERLINK("http://x")'),
        ("e2", "'-2+3"),
        ("'+e3", "plain text"),
    ]
    lines = [json.loads(line) for line in jsonl_out.getvalue().splitlines()]
    assert [line["text"] for line in lines] == ['=HYPERLINK("http://x")', "-2+3", "plain text"]


def test_the_sqlite_file_is_private_to_its_owner(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'private.db'}")
    upgrade(engine)
    engine.dispose()
    assert stat.S_IMODE((tmp_path / "private.db").stat().st_mode) == 0o600
