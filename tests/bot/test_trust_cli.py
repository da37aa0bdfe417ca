"""The trust commands of `hitl`, in-process on a SQLite file: precision mode end to end, the
what-if preview, spot checks, votes, model pins and reviewer figures, and their input errors."""

import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import func, select

from bot import cli
from bot import tasks as task_ops
from bot.answers import get_item, record_answer
from bot.registry import active_version
from bot.routing import effective_threshold
from bot.services import Services
from bot.states import LabelSource, PromptState, Route
from bot.storage.schema import AuditLog, Item, ReviewPrompt
from model.intervals import clopper_pearson
from model.trust import precision_above
from tests.bot.conftest import Hitl
from tests.conftest import TINY

LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "cancel_transfer", "pin_blocked"]
Rows = list[tuple[str, str]]


def ok_json(hitl: Hitl, *args: str) -> Any:
    """The JSON a command printed; the command must succeed."""
    code, out, err = hitl(*args)
    assert code == 0, err
    return json.loads(out)


def db() -> Services:
    """The services the in-process CLI opened (same database)."""
    return cli.services()


def bank_rows(banking77: Rows, *, per_label: int, seed: int = 0, skip: int = 0) -> Rows:
    """`per_label` rows of each of the five labels, after the first `skip` of each, shuffled."""
    rng = random.Random(seed)
    rows: Rows = []
    for label in LABELS:
        texts = [t for t, lab in banking77 if lab == label]
        rng.shuffle(texts)
        rows += [(t, label) for t in texts[skip : skip + per_label]]
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> str:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def labelled(tmp_path: Path, name: str, rows: Rows) -> str:
    return write_csv(tmp_path / name, ["text", "label"], [[t, lab] for t, lab in rows])


def unlabelled(tmp_path: Path, name: str, texts: list[str], *, prefix: str) -> str:
    rows = [[f"{prefix}{i}", t] for i, t in enumerate(texts)]
    return write_csv(tmp_path / name, ["id", "text"], rows)


def create_bank(hitl: Hitl, tmp_path: Path, labels: list[str] = LABELS) -> None:
    (tmp_path / "labels.txt").write_text("\n".join(labels), encoding="utf-8")
    code, _, err = hitl(
        "task",
        "create",
        "bank",
        "--labels-file",
        str(tmp_path / "labels.txt"),
        "--channel",
        "C0BANK1",
    )
    assert code == 0, err


def audit_count() -> int:
    with db().sessions.begin() as session:
        return int(session.scalar(select(func.count()).select_from(AuditLog)) or 0)


def test_precision_mode_waits_for_evidence_then_automates_by_itself(
    hitl: Hitl, tmp_path: Path, banking77: Rows
) -> None:
    create_bank(hitl, tmp_path)
    code, _, err = hitl(
        "import", "bank", labelled(tmp_path, "first.csv", bank_rows(banking77, per_label=5))
    )
    assert code == 0, err
    state = ok_json(hitl, "threshold", "bank", "--precision", "0.95", "--json")
    assert (state["mode"], state["target_precision"], state["threshold"]) == (
        "precision",
        0.95,
        None,
    )
    assert state["automating"] is False

    first = ok_json(hitl, "retrain", "bank", "--json")
    assert (first["status"], first["version"]) == ("promoted", 1)
    report = first["report"]
    assert report["target_precision"] == 0.95 and report["threshold"] is None
    assert report["precision_lower_bound"] is None
    assert report["threshold_choice"]["threshold"] is None
    stats = ok_json(hitl, "stats", "bank", "--json")
    assert (stats["threshold"], stats["automating"], stats["target_precision"]) == (
        None,
        False,
        0.95,
    )
    assert stats["precision_lower_bound"] is None
    assert "not enough evidence" in stats["threshold_reason"]
    shown = ok_json(hitl, "threshold", "bank", "--json")
    assert shown["threshold"] is None and "not enough evidence" in shown["reason"]

    waiting = [t for t, _ in bank_rows(banking77, per_label=4, seed=1, skip=110)]
    code, out, err = hitl(
        "submit", "bank", unlabelled(tmp_path, "a.csv", waiting, prefix="a"), "--json"
    )
    assert code == 0, err
    routed = [json.loads(line) for line in out.splitlines()]
    assert len(routed) == 20
    assert all(r["route"] == "review" and r["model_version"] == 1 for r in routed)
    assert not any(r["spot_check"] for r in routed)
    with db().sessions.begin() as session:
        prompts = session.scalar(select(func.count()).select_from(ReviewPrompt))
    assert prompts == 20

    more = bank_rows(banking77, per_label=100, seed=0, skip=5)
    code, _, err = hitl("import", "bank", labelled(tmp_path, "more.csv", more))
    assert code == 0, err
    second = ok_json(hitl, "retrain", "bank", "--json")
    assert (second["status"], second["version"]) == ("promoted", 2)
    report = second["report"]
    chosen, bound = report["threshold_choice"]["threshold"], report["precision_lower_bound"]
    assert chosen is not None and bound is not None and bound >= 0.95
    assert report["threshold"] == chosen and report["target_precision"] == 0.95
    assert report["threshold_choice"]["raised_by_spot_checks"] is False
    with db().sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        assert (task.threshold, task.precision_lower_bound) == (chosen, bound)
        assert effective_threshold(task) == chosen
        assert task.threshold_evidence is not None
        assert task.threshold_evidence["threshold"] == chosen
        resolved = session.scalar(
            select(func.count())
            .select_from(Item)
            .where(Item.route == Route.REVIEW, Item.final_source == LabelSource.MODEL)
        )
    assert resolved is not None and report["queue_resolved"] == resolved
    stats = ok_json(hitl, "stats", "bank", "--json")
    assert (stats["threshold"], stats["automating"]) == (chosen, True)
    assert stats["precision_lower_bound"] == bound
    assert stats["review_queue"] == 20 - resolved

    fresh = [t for t, _ in bank_rows(banking77, per_label=3, seed=2, skip=110)]
    code, out, err = hitl(
        "submit", "bank", unlabelled(tmp_path, "b.csv", fresh, prefix="b"), "--json"
    )
    assert code == 0, err
    routed = [json.loads(line) for line in out.splitlines()]
    auto = [r for r in routed if r["route"] == "auto"]
    assert auto and all(r["confidence"] >= chosen for r in auto)
    assert all(r["confidence"] < chosen for r in routed if r["route"] == "review")


@pytest.fixture
def trained_bank(hitl: Hitl, tmp_path: Path, banking77: Rows) -> Rows:
    """Task `bank` (five labels and `top_up_failed` with two answers, too few to automate)
    with model v1; returns the imported rows."""
    create_bank(hitl, tmp_path, [*LABELS, "top_up_failed"])
    extra = [t for t, lab in banking77 if lab == "top_up_failed"][:2]
    rows = bank_rows(banking77, per_label=20) + [(t, "top_up_failed") for t in extra]
    code, _, err = hitl("import", "bank", labelled(tmp_path, "train.csv", rows))
    assert code == 0, err
    assert ok_json(hitl, "retrain", "bank", "--json")["version"] == 1
    return rows


def test_preview_counts_what_would_go_to_people_and_changes_nothing(
    hitl: Hitl, trained_bank: Rows, tmp_path: Path, banking77: Rows
) -> None:
    known = {t for t, _ in trained_bank}
    others = [t for t, lab in banking77 if lab not in LABELS and t not in known][:40]
    traffic = [t for t, _ in bank_rows(banking77, per_label=8, skip=20)] + others
    code, _, err = hitl("submit", "bank", unlabelled(tmp_path, "t.csv", traffic, prefix="t"))
    assert code == 0, err
    before = ok_json(hitl, "threshold", "bank", "--json")
    audits = audit_count()

    preview = ok_json(hitl, "threshold", "bank", "0.5", "--preview", "--json")

    assert set(preview) == {
        "task",
        "threshold",
        "current_threshold",
        "model_version",
        "items",
        "days",
        "review_share",
        "review_per_day",
        "auto_share",
        "auto_per_day",
        "auto_precision",
    }
    svc = db()
    with svc.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        loaded = svc.registry.active(session, task)
        assert loaded is not None
        texts = list(session.scalars(select(Item.text).where(Item.source == "cli")))
        row = active_version(session, task)
        assert row is not None
        calibration = row.metrics["calibration"]
    scores = loaded.classifier.predict(texts)
    automatable = np.asarray([p in LABELS for p in scores.predicted])
    review = int((~((scores.confidence >= 0.5) & automatable)).sum())
    days = svc.settings.report_window_days
    assert (preview["items"], preview["days"], preview["model_version"]) == (len(texts), days, 1)
    assert (preview["threshold"], preview["current_threshold"]) == (0.5, 0.8)
    assert preview["review_share"] == pytest.approx(review / len(texts))
    assert 0 < preview["review_share"] < 1
    assert preview["review_per_day"] == pytest.approx(
        round(len(texts) * preview["review_share"] / days, 2)
    )
    assert preview["auto_per_day"] == pytest.approx(round((len(texts) - review) / days, 2))
    estimate = preview["auto_precision"]
    assert estimate["low"] <= estimate["estimate"] <= estimate["high"] and estimate["n"] > 0
    assert estimate == clopper_pearson(*precision_above(calibration, 0.5)).as_dict()

    assert ok_json(hitl, "threshold", "bank", "--json") == before
    assert audit_count() == audits
    code, out, err = hitl("threshold", "bank", "0.5", "--preview")
    assert code == 0 and "nothing was changed" in out
    assert ok_json(hitl, "threshold", "bank", "--json") == before


def test_preview_without_a_model_is_a_one_line_error(hitl: Hitl) -> None:
    hitl("task", "create", "empty", "--labels", "a,b")
    code, out, err = hitl("threshold", "empty", "0.5", "--preview", "--json")
    assert (code, out) == (2, "")
    assert err.startswith("error: task 'empty' has no model yet") and err.count("\n") == 1
    assert "Traceback" not in err
    code, _, err = hitl("threshold", "empty", "--preview")
    assert code == 2 and "needs a threshold to try" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["threshold", "t", "--precision", "abc"], "target precision 'abc' is not a number"),
        (["threshold", "t", "--precision", "1.0"], "out of range"),
        (["threshold", "t", "--precision", "0.4"], "out of range"),
        (["threshold", "t", "--precision", "nan"], "out of range"),
        (["threshold", "t", "0.9", "--precision", "0.95"], "either a threshold or --precision"),
        (["task", "spot-checks", "t", "2.5"], "out of range"),
        (["task", "spot-checks", "t", "150%"], "out of range"),
        (["task", "spot-checks", "t", "often"], "is not a number"),
        (["task", "votes", "t", "0"], "between 1 and 10"),
        (["task", "votes", "t", "11"], "between 1 and 10"),
        (["task", "votes", "t", "two"], "not a whole number"),
    ],
)
def test_bad_trust_settings_are_one_line_errors_and_change_nothing(
    hitl: Hitl, args: list[str], message: str
) -> None:
    hitl("task", "create", "t", "--labels", "a,b", "--threshold", "0.7")
    before = (
        ok_json(hitl, "threshold", "t", "--json"),
        ok_json(hitl, "task", "spot-checks", "t", "--json"),
        ok_json(hitl, "task", "votes", "t", "--json"),
    )
    audits = audit_count()
    code, out, err = hitl(*args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    after = (
        ok_json(hitl, "threshold", "t", "--json"),
        ok_json(hitl, "task", "spot-checks", "t", "--json"),
        ok_json(hitl, "task", "votes", "t", "--json"),
    )
    assert after == before and audit_count() == audits


def test_a_threshold_value_after_precision_mode_goes_back_to_manual(hitl: Hitl) -> None:
    hitl("task", "create", "t", "--labels", "a,b", "--threshold", "0.7")
    state = ok_json(hitl, "threshold", "t", "--precision", "95%", "--json")
    assert (state["mode"], state["target_precision"], state["automating"]) == (
        "precision",
        0.95,
        False,
    )
    code, out, _ = hitl("threshold", "t")
    assert code == 0 and "target precision 95.0%: nothing is automated yet" in out

    state = ok_json(hitl, "threshold", "t", "0.8", "--json")
    assert state["mode"] == "manual" and state["target_precision"] is None
    assert (state["threshold"], state["old_threshold"], state["automating"]) == (0.8, 0.7, True)
    assert state["precision_lower_bound"] is None
    assert ok_json(hitl, "threshold", "t", "--json") == {
        "task": "t",
        **{k: v for k, v in state.items() if k not in ("task", "old_threshold")},
    }
    code, out, _ = hitl("threshold", "t")
    assert (code, out) == (0, "0.8\n")
    with db().sessions.begin() as session:
        changes = session.execute(
            select(AuditLog.field, AuditLog.old_value, AuditLog.new_value)
            .where(AuditLog.field.in_(["target_precision", "threshold"]))
            .order_by(AuditLog.id)
        ).all()
    assert [tuple(c) for c in changes] == [
        ("target_precision", "None", "0.95"),
        ("target_precision", "0.95", "None"),
        ("threshold", "0.7", "0.8"),
    ]


def test_spot_checks_and_votes_are_set_and_shown_as_json(hitl: Hitl) -> None:
    hitl("task", "create", "t", "--labels", "a,b")
    set_to = ok_json(hitl, "task", "spot-checks", "t", "0.05", "--json")
    assert set_to == {
        "task": "t",
        "spot_check_rate": 0.05,
        "auto_precision": {"estimate": None, "low": 0.0, "high": 1.0, "n": 0},
    }
    assert ok_json(hitl, "task", "spot-checks", "t", "2%", "--json")["spot_check_rate"] == 0.02
    assert hitl("task", "spot-checks", "t") == (0, "0.02\n", "")
    assert ok_json(hitl, "task", "votes", "t", "2", "--json") == {"task": "t", "votes_required": 2}
    assert hitl("task", "votes", "t") == (0, "2\n", "")
    code, out, _ = hitl("task", "votes", "t", "3")
    assert (code, out) == (0, "t: votes required 2 → 3\n")


def test_submit_json_marks_spot_checked_automatic_answers(
    hitl: Hitl, trained_bank: Rows, tmp_path: Path, banking77: Rows
) -> None:
    ok_json(hitl, "threshold", "bank", "0.01", "--json")
    ok_json(hitl, "task", "spot-checks", "bank", "1", "--json")
    texts = [t for t, _ in bank_rows(banking77, per_label=2, skip=20)]
    code, out, err = hitl(
        "submit", "bank", unlabelled(tmp_path, "s.csv", texts, prefix="s"), "--json"
    )
    assert code == 0, err
    routed = [json.loads(line) for line in out.splitlines()]
    checked = [r for r in routed if r["route"] == "auto"]
    assert len(checked) >= 8  # every automatable prediction
    assert all(r["spot_check"] is True for r in checked)
    assert all(r["spot_check"] is False for r in routed if r["route"] == "review")
    with db().sessions.begin() as session:
        prompts = dict(session.execute(select(ReviewPrompt.item_id, ReviewPrompt.status)).all())
        for r in checked:
            item = get_item(session, r["item_id"])
            assert (item.final_label, item.final_source) == (r["label"], LabelSource.MODEL)
    assert {r["item_id"]: PromptState.PENDING for r in routed} == prompts

    ok_json(hitl, "task", "spot-checks", "bank", "0", "--json")
    code, out, _ = hitl(
        "submit", "bank", unlabelled(tmp_path, "u.csv", texts, prefix="u"), "--json"
    )
    again = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and not any(r["spot_check"] for r in again)
    assert {r["route"] for r in again} == {r["route"] for r in routed}


def test_models_pin_and_unpin_show_in_json(hitl: Hitl, tmp_path: Path) -> None:
    hitl("task", "create", "bank", "--labels", "positive,negative")
    code, _, err = hitl("import", "bank", labelled(tmp_path, "tiny.csv", TINY))
    assert code == 0, err
    assert ok_json(hitl, "task", "models", "bank", "--json") == []
    ok_json(hitl, "retrain", "bank", "--json")
    pinned = ok_json(hitl, "task", "models", "bank", "--pin", "1", "--json")
    assert [(m["version"], m["status"], m["pinned"], m["pruned"]) for m in pinned] == [
        (1, "active", True, False)
    ]
    unpinned = ok_json(hitl, "task", "models", "bank", "--unpin", "1", "--json")
    assert [m["pinned"] for m in unpinned] == [False]
    code, out, err = hitl("task", "models", "bank", "--pin", "9")
    assert code == 2 and out == "" and "no model v9" in err and err.count("\n") == 1


def test_stats_reviewers_json_gives_each_reviewer_and_the_team_agreement(
    hitl: Hitl, tmp_path: Path
) -> None:
    hitl("task", "create", "t", "--labels", "a,b")
    texts = [f"item number {i}" for i in range(4)]
    code, _, err = hitl("submit", "t", unlabelled(tmp_path, "r.csv", texts, prefix="r"))
    assert code == 0, err
    anna, bob = ["a", "a", "b", "b"], ["a", "b", "b", "b"]
    with db().sessions.begin() as session:
        ids = list(session.scalars(select(Item.id).order_by(Item.id)))
        for item_id, first, second in zip(ids, anna, bob, strict=True):
            item = get_item(session, item_id)
            record_answer(session, item, "UANNA", label=first)
            record_answer(session, item, "UBOB", label=second)

    team = ok_json(hitl, "stats", "t", "--reviewers", "--json")

    assert set(team) == {"task", "reviewers", "agreement"} and team["task"] == "t"
    figures = {r["user"]: r for r in team["reviewers"]}
    assert set(figures) == {"UANNA", "UBOB"}
    # A tie goes to the latest answer: Bob's label is final on every item.
    assert (figures["UBOB"]["answers"], figures["UBOB"]["agree_final"]) == (4, 1.0)
    assert (figures["UANNA"]["resolved"], figures["UANNA"]["agree_final"]) == (4, 0.75)
    assert figures["UANNA"]["spot_checks"] == 0
    agreement = team["agreement"]
    assert (agreement["measure"], agreement["raters"], agreement["items"]) == (
        "cohen_kappa",
        2,
        4,
    )
    assert agreement["value"] == pytest.approx(cohen_kappa_score(anna, bob), abs=1e-4)
    code, out, _ = hitl("stats", "t", "--reviewers")
    assert code == 0 and "Cohen's kappa" in out and "UANNA: 4 answers" in out


def test_submit_summary_in_precision_mode_names_no_unused_threshold(
    hitl: Hitl, tmp_path: Path, banking77: Rows
) -> None:
    create_bank(hitl, tmp_path)
    hitl("import", "bank", labelled(tmp_path, "first.csv", bank_rows(banking77, per_label=5)))
    ok_json(hitl, "threshold", "bank", "--precision", "0.95", "--json")
    ok_json(hitl, "retrain", "bank", "--json")
    texts = [t for t, _ in bank_rows(banking77, per_label=1, skip=110)]
    code, out, _ = hitl("submit", "bank", unlabelled(tmp_path, "a.csv", texts, prefix="a"))
    assert code == 0 and "0 auto (0%), 5 review" in out
    assert "threshold 0.8" not in out and "target precision 95" in out
