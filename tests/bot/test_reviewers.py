"""Per-reviewer figures and team agreement from hand-made votes.

Run on SQLite and on PostgreSQL.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import event
from sqlalchemy.orm import Session

from bot import tasks as task_ops
from bot.reviewers import ReviewerFigures, reviewer_report
from bot.services import Services
from bot.states import IMPORT_USER, AnswerKind, AnswerSource, LabelSource, Route
from bot.storage.schema import Answer, Item, Prediction, Task
from model.intervals import krippendorff_alpha

LABELS = ["pos", "neg", "neu"]
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Vote:
    """A hand-made answer row."""

    user: str
    label: str | None
    kind: str = AnswerKind.LABEL
    source: AnswerSource = AnswerSource.SLACK
    current: bool = True
    at: datetime = T0


def _task(session: Session) -> Task:
    return task_ops.create_task(session, "reviews", LABELS, channel="C0123", threshold=0.9)


def _item(
    session: Session,
    task: Task,
    votes: list[Vote],
    *,
    final: str | None = None,
    final_source: str | None = None,
    spot_check: bool = False,
    predictions: tuple[str, ...] = (),
) -> int:
    """An item with these predictions (oldest first) and answers, stored as given."""
    item = Item(
        task_id=task.id,
        text="some text",
        source="api",
        submitted_at=T0,
        route=Route.AUTO if spot_check else Route.REVIEW,
        final_label=final,
        final_source=final_source,
        spot_check=spot_check,
    )
    session.add(item)
    session.flush()
    for label in predictions:
        session.add(Prediction(item_id=item.id, label=label, confidence=0.97, route=Route.AUTO))
        session.flush()  # ids in insertion order: the first prediction has the smallest id
    # Superseded rows first, as record_answer leaves them: the current one is the latest.
    for vote in sorted(votes, key=lambda v: v.current):
        session.add(
            Answer(
                item_id=item.id,
                user_id=vote.user,
                kind=vote.kind,
                source=vote.source,
                label=vote.label,
                created_at=vote.at,
                is_current=vote.current,
                superseded_at=None if vote.current else vote.at,
            )
        )
        session.flush()
    return item.id


def _by_user(reviewers: list[ReviewerFigures]) -> dict[str, ReviewerFigures]:
    return {figures.user: figures for figures in reviewers}


@contextmanager
def _statements(session: Session) -> Iterator[list[str]]:
    """The SQL statements the session's connection runs inside the block."""
    seen: list[str] = []
    engine = session.get_bind()

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_two_raters_give_cohens_kappa_as_sklearn_computes_it(services: Services) -> None:
    anna = ["pos", "pos", "pos", "pos", "neg", "neg", "neg", "neu", "neu", "pos"]
    bob = ["pos", "pos", "pos", "neg", "neg", "neg", "pos", "neu", "neg", "pos"]
    with services.sessions.begin() as session:
        task = _task(session)
        for a, b in zip(anna, bob, strict=True):
            _item(session, task, [Vote("U0ANNA", a), Vote("U0BOB", b)])
        # Carl labels an item nobody else did: no pair, so he is not a rater of the team.
        _item(session, task, [Vote("U0CARL", "neg")])
        report = reviewer_report(session, task)
    agreement = report.agreement
    assert (agreement.raters, agreement.items, agreement.measure) == (2, 10, "cohen_kappa")
    # 7 of 10 agree; chance agreement (5*5 + 3*4 + 2*1) / 100 = 0.39: kappa = 0.31 / 0.61.
    assert agreement.value == pytest.approx(31 / 61)
    assert agreement.value == pytest.approx(cohen_kappa_score(anna, bob))
    assert agreement.as_dict() == {
        "raters": 2,
        "items": 10,
        "measure": "cohen_kappa",
        "value": 0.5082,
    }


def test_three_raters_give_krippendorffs_alpha(services: Services) -> None:
    units = [
        {"U0ANNA": "pos", "U0BOB": "pos", "U0CARL": "pos"},
        {"U0ANNA": "pos", "U0BOB": "pos", "U0CARL": "neg"},
        {"U0ANNA": "neg", "U0BOB": "neg"},
        {"U0ANNA": "neg", "U0CARL": "pos"},
        {"U0BOB": "neg"},  # one value: not pairable, drops out
    ]
    with services.sessions.begin() as session:
        task = _task(session)
        for unit in units:
            _item(session, task, [Vote(user, label) for user, label in unit.items()])
        report = reviewer_report(session, task)
    agreement = report.agreement
    assert (agreement.raters, agreement.items, agreement.measure) == (3, 4, "krippendorff_alpha")
    # Coincidences: disagreeing pairs 4/2 (unit 2) + 2/1 (unit 4) = 4; values pos 6, neg 4,
    # n = 10, so expected disagreeing pairs 100 - 36 - 16 = 48: alpha = 1 - 9 * 4 / 48.
    assert agreement.value == pytest.approx(0.25)
    assert agreement.value == pytest.approx(
        krippendorff_alpha([list(unit.values()) for unit in units])
    )


def test_agreement_with_final_labels_and_spot_checks_is_counted_per_person(
    services: Services,
) -> None:
    person, model = LabelSource.PERSON, LabelSource.MODEL
    with services.sessions.begin() as session:
        task = _task(session)
        # Resolved by people: Anna matches the final label on 2 of 3, Bob on 1 of 1.
        _item(
            session,
            task,
            [Vote("U0ANNA", "pos"), Vote("U0BOB", "pos")],
            final="pos",
            final_source=person,
        )
        _item(session, task, [Vote("U0ANNA", "neg")], final="neg", final_source=person)
        _item(session, task, [Vote("U0ANNA", "neu")], final="pos", final_source=person)
        # Not resolved by people: counted as answers, not in `resolved`.
        _item(session, task, [Vote("U0ANNA", "pos")])
        # Spot checks: the model's label is its first prediction, not a later re-score.
        _item(
            session,
            task,
            [Vote("U0ANNA", "pos")],
            final="pos",
            final_source=model,
            spot_check=True,
            predictions=("pos",),
        )
        _item(
            session,
            task,
            [Vote("U0ANNA", "neg", source=AnswerSource.SPOT_CHECK)],
            final="pos",
            predictions=("pos", "neg"),
            final_source=model,
            spot_check=True,
        )
        _item(
            session,
            task,
            [Vote("U0BOB", "neu", source=AnswerSource.SPOT_CHECK)],
            final="neu",
            predictions=("neu", "pos"),
            final_source=model,
            spot_check=True,
        )
        # No spot check: the model disagreeing with Bob here counts for nothing.
        _item(
            session,
            task,
            [Vote("U0BOB", "neg")],
            final="neg",
            predictions=("pos",),
            final_source=model,
        )
        report = reviewer_report(session, task)
    reviewers = _by_user(report.reviewers)
    anna, bob = reviewers["U0ANNA"], reviewers["U0BOB"]
    assert (anna.answers, anna.skips, anna.resolved, anna.agreed_final) == (6, 0, 3, 2)
    assert anna.agree_final == pytest.approx(2 / 3)
    assert (anna.spot_checks, anna.confirmed_model) == (2, 1)
    assert anna.agree_model_on_spot_checks == pytest.approx(0.5)
    assert (bob.answers, bob.resolved, bob.agree_final) == (3, 1, 1.0)
    assert (bob.spot_checks, bob.agree_model_on_spot_checks) == (1, 1.0)
    assert [r.user for r in report.reviewers] == ["U0ANNA", "U0BOB"]
    dumped = anna.as_dict()
    assert dumped["agree_final"] == 0.6667
    assert dumped["agree_model_on_spot_checks"] == 0.5
    low, high = dumped["agree_final_interval"]
    assert 0.0 < low < 2 / 3 < high < 1.0


def test_imports_and_skips_are_not_labels_of_anyone(services: Services) -> None:
    with services.sessions.begin() as session:
        task = _task(session)
        _item(
            session,
            task,
            [
                Vote("U0ANNA", "pos"),
                Vote(IMPORT_USER, "neg", source=AnswerSource.IMPORT),
                Vote("U0BOB", None, kind=AnswerKind.SKIP),
            ],
            final="pos",
            final_source=LabelSource.PERSON,
        )
        # A label imported under a person's id is still an import.
        _item(
            session,
            task,
            [Vote("U0ANNA", "neg"), Vote("U0CARL", "pos", source=AnswerSource.IMPORT)],
        )
        _item(session, task, [Vote("U0BOB", None, kind=AnswerKind.SKIP)])
        report = reviewer_report(session, task)
    reviewers = _by_user(report.reviewers)
    assert set(reviewers) == {"U0ANNA", "U0BOB"}
    assert (reviewers["U0ANNA"].answers, reviewers["U0ANNA"].skips) == (2, 0)
    assert (reviewers["U0BOB"].answers, reviewers["U0BOB"].skips) == (0, 2)
    assert (reviewers["U0BOB"].resolved, reviewers["U0BOB"].agree_final) == (0, None)
    assert reviewers["U0BOB"].as_dict()["agree_final_interval"] is None
    # Nobody else labelled Anna's items: imports and skips make no pair.
    assert report.agreement.as_dict() == {"raters": 0, "items": 0, "measure": None, "value": None}


def test_superseded_answers_are_ignored(services: Services) -> None:
    with services.sessions.begin() as session:
        task = _task(session)
        for label in ["pos", "neg", "pos", "neg"]:
            _item(
                session,
                task,
                [
                    Vote("U0ANNA", label),
                    # Bob first agreed with Anna, then changed to "neu" everywhere.
                    Vote("U0BOB", label, current=False),
                    Vote("U0BOB", "neu"),
                    # Carl has only a superseded answer: history, not a vote.
                    Vote("U0CARL", label, current=False),
                ],
                final=label,
                final_source=LabelSource.PERSON,
            )
        report = reviewer_report(session, task)
    reviewers = _by_user(report.reviewers)
    assert set(reviewers) == {"U0ANNA", "U0BOB"}
    assert (reviewers["U0BOB"].answers, reviewers["U0BOB"].agree_final) == (4, 0.0)
    # Bob's current answers are all "neu": no agreement beyond chance (kappa 0), only two raters.
    assert (report.agreement.raters, report.agreement.items) == (2, 4)
    assert report.agreement.value == pytest.approx(0.0)


def test_no_shared_items_gives_no_measure(services: Services) -> None:
    with services.sessions.begin() as session:
        task = _task(session)
        _item(session, task, [Vote("U0ANNA", "pos")])
        _item(session, task, [Vote("U0BOB", "neg")])
        report = reviewer_report(session, task)
    assert report.agreement.measure is None
    assert report.agreement.value is None
    assert (report.agreement.raters, report.agreement.items) == (0, 0)
    assert [(r.user, r.answers) for r in report.reviewers] == [("U0ANNA", 1), ("U0BOB", 1)]


def test_same_label_throughout_gives_kappa_measure_without_value(services: Services) -> None:
    with services.sessions.begin() as session:
        task = _task(session)
        for _ in range(3):
            _item(session, task, [Vote("U0ANNA", "pos"), Vote("U0BOB", "pos")])
        report = reviewer_report(session, task)
    assert report.agreement.as_dict() == {
        "raters": 2,
        "items": 3,
        "measure": "cohen_kappa",
        "value": None,
    }


def test_since_keeps_only_answers_given_after_it(services: Services) -> None:
    later = T0 + timedelta(days=2)
    with services.sessions.begin() as session:
        task = _task(session)
        _item(session, task, [Vote("U0ANNA", "pos"), Vote("U0BOB", "neg", at=later)])
        _item(session, task, [Vote("U0ANNA", "neg", at=later), Vote("U0BOB", "neg", at=later)])
        report = reviewer_report(session, task, since=T0 + timedelta(days=1))
    assert [(r.user, r.answers) for r in report.reviewers] == [("U0BOB", 2), ("U0ANNA", 1)]
    assert (report.agreement.raters, report.agreement.items) == (2, 1)


def test_other_tasks_do_not_count(services: Services) -> None:
    with services.sessions.begin() as session:
        task = _task(session)
        other = task_ops.create_task(session, "other", LABELS, threshold=0.9)
        _item(session, task, [Vote("U0ANNA", "pos")])
        _item(session, other, [Vote("U0ANNA", "neg"), Vote("U0BOB", "neg")])
        report = reviewer_report(session, task)
    assert [(r.user, r.answers) for r in report.reviewers] == [("U0ANNA", 1)]
    assert report.agreement.items == 0


def test_query_count_does_not_grow_with_items(services: Services) -> None:
    with services.sessions.begin() as session:
        task = _task(session)
        for i in range(40):
            _item(
                session,
                task,
                [Vote("U0ANNA", LABELS[i % 3]), Vote("U0BOB", LABELS[i % 2])],
                final=LABELS[i % 3],
                final_source=LabelSource.PERSON if i % 2 else LabelSource.MODEL,
                spot_check=i % 4 == 0,
                predictions=(LABELS[i % 3],),
            )
        with _statements(session) as statements:
            report = reviewer_report(session, task)
    assert len(statements) == 2
    assert report.agreement.items == 40
    assert report.as_dict()["task"] == "reviews"
    assert [r["user"] for r in report.as_dict()["reviewers"]] == ["U0ANNA", "U0BOB"]
