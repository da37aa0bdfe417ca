"""Trust in automatic answers: spot checks, second opinions, votes, live precision, its alarm.

Storage behaviour runs on SQLite and PostgreSQL; the retrain that answers the alarm on SQLite.
"""

import random
from collections.abc import Sequence
from datetime import timedelta

import numpy as np
import pytest
from scipy.stats import binom
from sqlalchemy import func, select

from bot import tasks as task_ops
from bot.answers import AnswerOutcome, get_item, import_examples, record_answer
from bot.ingest import IncomingItem
from bot.queries import answer_history, item_details
from bot.registry import store_model
from bot.routing import AutoRule, Routed, effective_threshold, pick_spot_checks, submit
from bot.services import Services
from bot.states import AnswerSource, LabelSource, ModelStatus, PromptState, Route, RunStatus
from bot.stats import task_stats
from bot.storage.schema import Answer, AuditLog, Item, Prediction, ReviewPrompt, Task, utcnow
from bot.training import retrain_task
from bot.trust import (
    live_precision,
    parse_precision,
    parse_share,
    precision_alarm,
    raised_threshold,
    set_spot_check_rate,
    set_target_precision,
    set_votes_required,
)
from model import TextClassifier, train
from model.intervals import clopper_pearson

LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "cancel_transfer", "pin_blocked"]
Rows = list[tuple[str, str]]


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


@pytest.fixture(scope="module")
def classifier(banking77: Rows) -> TextClassifier:
    """One model of the five labels, trained once and stored as the active model of each test."""
    rows = bank_rows(banking77, per_label=40)
    return train([t for t, _ in rows], [lab for _, lab in rows], labels=LABELS)


def task_with_model(
    services: Services,
    classifier: TextClassifier,
    *,
    threshold: float = 0.01,
    spot_checks: float = 0.0,
) -> None:
    """Task `bank` with `classifier` active; threshold 0.01 answers every item automatically."""
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, "bank", LABELS, channel="C0BANK", threshold=threshold)
        set_spot_check_rate(session, task, spot_checks, actor="test")
        store_model(
            session,
            task,
            classifier,
            registry=services.registry,
            status=ModelStatus.ACTIVE,
            train_size=200,
            metrics={"auto_labels": list(LABELS)},
        )


def submit_texts(
    services: Services, texts: Sequence[str], *, rng: random.Random | None = None
) -> list[Routed]:
    with services.sessions.begin() as session:
        return submit(
            session,
            task_ops.get_task(session, "bank"),
            [IncomingItem(t) for t in texts],
            registry=services.registry,
            max_chars=10_000,
            rng=rng,
        )


def answer(
    services: Services,
    item_id: int,
    user: str,
    label: str,
    *,
    admins: frozenset[str] = frozenset(),
) -> AnswerOutcome:
    """One click, in its own transaction as a Slack listener stores it."""
    with services.sessions.begin() as session:
        item = get_item(session, item_id, lock=True)
        return record_answer(session, item, user, label=label, admins=admins)


def item_state(services: Services, item_id: int) -> tuple[str | None, str | None, bool]:
    """(final_label, final_source, resolved) of an item."""
    with services.sessions.begin() as session:
        item = get_item(session, item_id)
        return item.final_label, item.final_source, item.resolved_at is not None


def prompt_status(services: Services, item_id: int) -> str | None:
    with services.sessions.begin() as session:
        return session.scalar(select(ReviewPrompt.status).where(ReviewPrompt.item_id == item_id))


def other_label(label: str | None) -> str:
    return next(lab for lab in LABELS if lab != label)


# --- pure parts ----------------------------------------------------------------------------------


def test_effective_threshold_is_none_only_while_a_target_is_unsupported() -> None:
    manual = Task(name="t", labels=["a", "b"], threshold=0.7)
    waiting = Task(name="t", labels=["a", "b"], threshold=0.7, target_precision=0.95)
    supported = Task(
        name="t",
        labels=["a", "b"],
        threshold=0.83,
        target_precision=0.95,
        precision_lower_bound=0.951,
    )
    assert effective_threshold(manual) == 0.7
    assert effective_threshold(waiting) is None
    assert effective_threshold(supported) == 0.83
    assert AutoRule.of(waiting, {"auto_labels": ["a"]}) == AutoRule(None, frozenset({"a"}))


def test_auto_rule_needs_the_threshold_and_an_automatable_label() -> None:
    confidences = np.asarray([0.99, 0.99, 0.5, 0.2])
    predicted = ["a", "b", "a", None]
    rule = AutoRule(0.5, frozenset({"a"}))
    assert rule.mask_of(confidences, predicted).tolist() == [True, False, True, False]
    assert AutoRule(0.5).mask_of(confidences, predicted).tolist() == [True, True, True, False]
    assert AutoRule.nothing().mask_of(confidences, predicted).tolist() == [False] * 4


def test_shares_precisions_and_the_raised_threshold_parse_as_documented() -> None:
    assert parse_share("2%", what="share") == pytest.approx(0.02)
    assert parse_share("0", what="share") == 0.0
    assert parse_precision("95%") == pytest.approx(0.95)
    assert parse_precision(0.5) == 0.5
    assert raised_threshold(0.8) == 0.9
    assert raised_threshold(0.992) == 0.996


# --- spot checks ---------------------------------------------------------------------------------


def test_spot_checks_are_sampled_at_the_configured_rate_and_queued_for_people(
    services: Services, classifier: TextClassifier, banking77: Rows
) -> None:
    task_with_model(services, classifier, spot_checks=0.1)
    texts = [t for t, _ in banking77[:2000]]
    routed = submit_texts(services, texts, rng=random.Random(1))
    assert len(routed) == 2000 and all(r.route == Route.AUTO for r in routed)
    checked = [r for r in routed if r.spot_check]
    low, high = binom.ppf(0.0005, 2000, 0.1), binom.ppf(0.9995, 2000, 0.1)
    assert low <= len(checked) <= high
    assert all(r.as_dict()["spot_check"] is True for r in checked)
    # One draw per automatic answer, in order: the same seed picks the same items.
    drawn = pick_spot_checks([True] * 2000, rate=0.1, rng=random.Random(1))
    assert [r.spot_check for r in routed] == drawn
    with services.sessions.begin() as session:
        ids = [r.item_id for r in routed]
        prompts = dict(
            session.execute(
                select(ReviewPrompt.item_id, ReviewPrompt.status).where(
                    ReviewPrompt.item_id.in_(ids)
                )
            ).all()
        )
        items = {item.id: item for item in session.scalars(select(Item).where(Item.id.in_(ids)))}
        assert prompts == {r.item_id: PromptState.PENDING for r in checked}
        for r in routed:
            item = items[r.item_id]
            assert (item.route, item.final_source, item.final_label, item.spot_check) == (
                Route.AUTO,
                LabelSource.MODEL,
                r.label,
                r.spot_check,
            )


def test_no_spot_checks_at_rate_zero(
    sqlite_services: Services, classifier: TextClassifier, banking77: Rows
) -> None:
    services = sqlite_services
    task_with_model(services, classifier, spot_checks=0.0)
    routed = submit_texts(services, [t for t, _ in banking77[:300]], rng=random.Random(1))
    assert all(r.route == Route.AUTO for r in routed)
    assert not any(r.spot_check for r in routed)
    with services.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(ReviewPrompt)) == 0


def test_spot_check_contradicting_a_sure_model_needs_a_second_opinion_and_keeps_history(
    services: Services, classifier: TextClassifier, banking77: Rows
) -> None:
    task_with_model(services, classifier, spot_checks=1.0)
    routed = submit_texts(services, [t for t, _ in bank_rows(banking77, per_label=4, skip=40)])
    sure = [r for r in routed if r.spot_check and r.confidence >= 0.9]
    assert len(sure) >= 2
    doubted, confirmed = sure[0], sure[1]
    model_label, correction = doubted.label, other_label(doubted.label)

    first = answer(services, doubted.item_id, "U1", correction)
    assert (first.changed, first.second_opinion, first.escalated) == (True, True, False)
    assert first.final_label == model_label
    assert item_state(services, doubted.item_id) == (model_label, LabelSource.MODEL, True)
    with services.sessions.begin() as session:
        assert get_item(session, doubted.item_id).votes_required == 2
        stored = session.scalar(select(Answer).where(Answer.item_id == doubted.item_id))
        assert stored is not None and stored.source == AnswerSource.SPOT_CHECK
    assert prompt_status(services, doubted.item_id) == PromptState.PENDING

    second = answer(services, doubted.item_id, "U2", correction)
    assert (second.final_label, second.second_opinion, second.escalated) == (
        correction,
        False,
        False,
    )
    assert item_state(services, doubted.item_id) == (correction, LabelSource.PERSON, True)
    assert prompt_status(services, doubted.item_id) == PromptState.ANSWERED
    with services.sessions.begin() as session:
        history = answer_history(session, [doubted.item_id])[doubted.item_id]
        routing = session.scalar(
            select(Prediction.label)
            .where(Prediction.item_id == doubted.item_id)
            .order_by(Prediction.id)
            .limit(1)
        )
    assert [(a.label, a.user, a.source, a.current) for a in history] == [
        (correction, "U1", AnswerSource.SPOT_CHECK, True),
        (correction, "U2", AnswerSource.SPOT_CHECK, True),
    ]
    assert routing == model_label

    agreed = answer(services, confirmed.item_id, "U1", str(confirmed.label))
    assert (agreed.final_label, agreed.second_opinion) == (confirmed.label, False)
    assert item_state(services, confirmed.item_id) == (confirmed.label, LabelSource.PERSON, True)
    with services.sessions.begin() as session:
        assert get_item(session, confirmed.item_id).votes_required is None


def test_a_person_changing_a_spot_check_answer_keeps_the_old_one_as_history(
    sqlite_services: Services, classifier: TextClassifier, banking77: Rows
) -> None:
    services = sqlite_services
    task_with_model(services, classifier, spot_checks=1.0)
    routed = submit_texts(services, [t for t, _ in bank_rows(banking77, per_label=2, skip=40)])
    item = next(r for r in routed if r.spot_check)
    label = str(item.label)
    answer(services, item.item_id, "U1", label)
    assert item_state(services, item.item_id) == (label, LabelSource.PERSON, True)
    again = answer(services, item.item_id, "U1", label)
    assert again.changed is False  # a repeated click
    answer(services, item.item_id, "U1", other_label(label))
    with services.sessions.begin() as session:
        history = answer_history(session, [item.item_id])[item.item_id]
    assert [(a.label, a.current) for a in history] == [(label, False), (other_label(label), True)]


# --- votes ---------------------------------------------------------------------------------------


def test_two_votes_resolve_agreement_escalate_disagreement_once_and_admins_decide(
    services: Services,
) -> None:
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, "bank", ["a", "b", "c", "d"], threshold=0.9)
        assert set_votes_required(session, task, "2", actor="test") == 1
        routed = submit(
            session,
            task,
            [IncomingItem(f"text {i}", external_id=f"i{i}") for i in range(4)],
            registry=services.registry,
            max_chars=100,
        )
    agree, disagree, imported, early_admin = (r.item_id for r in routed)
    assert all(r.route == Route.REVIEW for r in routed)
    admins = frozenset({"ADMIN"})

    first = answer(services, agree, "U1", "a")
    assert (first.final_label, first.escalated) == (None, False)
    assert item_state(services, agree) == (None, None, False)
    second = answer(services, agree, "U2", "a")
    assert (second.final_label, second.escalated) == ("a", False)
    assert item_state(services, agree) == ("a", LabelSource.PERSON, True)

    answer(services, disagree, "U1", "a")
    split = answer(services, disagree, "U2", "b")
    assert (split.final_label, split.escalated) == (None, True)
    with services.sessions.begin() as session:
        assert get_item(session, disagree).escalated_at is not None
    third = answer(services, disagree, "U3", "c", admins=admins)
    assert (third.final_label, third.escalated) == (None, False)  # escalated once only
    decided = answer(services, disagree, "ADMIN", "d", admins=admins)
    assert (decided.final_label, decided.escalated) == ("d", False)
    assert item_state(services, disagree) == ("d", LabelSource.PERSON, True)

    answer(services, imported, "U1", "a")
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        import_examples(session, task, [IncomingItem("text 2", "i2", "b")], max_chars=100)
    assert item_state(services, imported) == ("b", LabelSource.PERSON, True)

    before = answer(services, early_admin, "ADMIN", "c", admins=admins)
    assert before.final_label is None  # an admin is one vote until the item is escalated


# --- live precision ------------------------------------------------------------------------------


def test_live_precision_counts_resolved_spot_checks_with_an_exact_interval(
    services: Services, classifier: TextClassifier, banking77: Rows
) -> None:
    task_with_model(services, classifier, spot_checks=1.0)
    routed = submit_texts(services, [t for t, _ in bank_rows(banking77, per_label=3, skip=40)])
    checks = [r for r in routed if r.spot_check]
    assert len(checks) == 15
    right, wrong, waiting = checks[:7], checks[7:10], checks[10]
    for r in right:
        answer(services, r.item_id, "U1", str(r.label))
    for r in wrong:
        answer(services, r.item_id, "U1", other_label(r.label))
        answer(services, r.item_id, "U2", other_label(r.label))
    # Contradicting a model this sure waits for a second opinion: it counts as wrong meanwhile,
    # so a pending correction never flatters the figure.
    assert waiting.confidence >= 0.9
    answer(services, waiting.item_id, "U1", other_label(waiting.label))

    expected = clopper_pearson(7, 11)
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        stats = task_stats(session, task)
    assert stats.auto_precision.n == 11
    assert stats.auto_precision.estimate == pytest.approx(7 / 11)
    assert (stats.auto_precision.low, stats.auto_precision.high) == pytest.approx(
        (expected.low, expected.high)
    )
    data = stats.as_dict()
    assert data["auto_precision"] == {
        "estimate": pytest.approx(7 / 11),
        "low": pytest.approx(expected.low),
        "high": pytest.approx(expected.high),
        "n": 11,
    }
    assert (data["target_precision"], data["threshold"], data["precision_lower_bound"]) == (
        None,
        0.01,
        None,
    )
    assert data["spot_check_rate"] == 1.0 and data["precision_alarm"] is False
    assert data["labels_by_source"]["spot_check"] == 7 + 2 * 3 + 1


def test_spot_checks_from_before_the_threshold_changed_do_not_count(
    sqlite_services: Services, classifier: TextClassifier, banking77: Rows
) -> None:
    services = sqlite_services
    task_with_model(services, classifier, spot_checks=1.0)
    routed = submit_texts(services, [t for t, _ in bank_rows(banking77, per_label=1, skip=40)])
    for r in routed:
        answer(services, r.item_id, "U1", str(r.label))
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        assert live_precision(session, task).n == 5
        task_ops.set_threshold(session, task, 0.02, actor="test")
        assert live_precision(session, task, now=utcnow() + timedelta(seconds=1)).n == 0


def spot_check_five_of_ten_right(services: Services, texts: Sequence[str]) -> None:
    """Submit `texts`; people confirm five spot checks and correct five (two agreeing each)."""
    checks = [r for r in submit_texts(services, texts) if r.spot_check]
    assert len(checks) >= 10 and all(r.route == Route.AUTO for r in checks)
    for r in checks[:5]:
        answer(services, r.item_id, "U1", str(r.label))
    for r in checks[5:10]:
        answer(services, r.item_id, "U1", other_label(r.label))
        answer(services, r.item_id, "U2", other_label(r.label))


def test_precision_alarm_fires_once_when_spot_checks_refute_the_target(
    services: Services, classifier: TextClassifier, banking77: Rows
) -> None:
    task_with_model(services, classifier, spot_checks=1.0)
    spot_check_five_of_ten_right(
        services, [t for t, _ in bank_rows(banking77, per_label=2, skip=40)]
    )
    now = utcnow()
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        assert precision_alarm(session, task, now=now) is None  # no target: nothing promised
        # A target the evidence had supported at this threshold (as a retrain leaves it).
        task.target_precision, task.precision_lower_bound = 0.99, 0.991
        assert task_stats(session, task).precision_alarm is True
        live = precision_alarm(session, task, now=now)
        assert live is not None and live.n == 10 and live.estimate == pytest.approx(0.5)
        assert (live.low, live.high) == pytest.approx(
            (clopper_pearson(5, 10).low, clopper_pearson(5, 10).high)
        )
        assert precision_alarm(session, task, now=now) is None
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        assert task.precision_alert_at is not None
        assert precision_alarm(session, task, now=now + timedelta(minutes=1)) is None
        alerts = session.scalars(
            select(AuditLog.new_value).where(AuditLog.field == "precision_alert")
        ).all()
    assert len(alerts) == 1 and "5 of 10 right" in str(alerts[0])


def test_the_retrain_after_a_precision_alarm_raises_the_threshold(
    sqlite_services: Services, banking77: Rows
) -> None:
    services = sqlite_services
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, "bank", LABELS, channel="C0BANK", threshold=0.8)
        import_examples(
            session,
            task,
            [IncomingItem(t, label=lab) for t, lab in bank_rows(banking77, per_label=105)],
            max_chars=10_000,
        )
        set_target_precision(session, task, 0.95, actor="test")
        set_spot_check_rate(session, task, 1.0, actor="test")
    first = retrain_task(
        services.sessions, "bank", registry=services.registry, settings=services.settings
    )
    assert first.status == RunStatus.PROMOTED
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        old = effective_threshold(task)
        assert old is not None and task.precision_lower_bound is not None
        assert task.precision_lower_bound >= 0.95
    spot_check_five_of_ten_right(
        services, [t for t, _ in bank_rows(banking77, per_label=3, skip=105)]
    )
    with services.sessions.begin() as session:
        assert task_stats(session, task_ops.get_task(session, "bank")).precision_alarm is True

    second = retrain_task(
        services.sessions, "bank", registry=services.registry, settings=services.settings
    )
    assert second.status == RunStatus.PROMOTED
    choice = second.report.threshold_choice
    assert choice is not None and choice.raised_by_spot_checks is True
    assert second.report.auto_precision is not None and second.report.auto_precision.n == 10
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        assert task.threshold >= raised_threshold(old)
        assert choice.threshold == task.threshold == effective_threshold(task)
        assert second.report.threshold == task.threshold
        assert task.precision_alert_at is None
        # The raised threshold is measured afresh.
        assert live_precision(session, task).n == 0


# --- who decided, and what a retrain may overrule -------------------------------------------------


def items_api(services: Services, key: str) -> dict[str, object]:
    with services.sessions.begin() as session:
        return item_details(session, task_ops.get_task(session, "bank"), key)


def votes_task(services: Services, votes: int) -> list[int]:
    """Task `bank` (labels a-d, no model) needing `votes` agreeing answers; two review items."""
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, "bank", ["a", "b", "c", "d"], threshold=0.9)
        set_votes_required(session, task, votes, actor="test")
        routed = submit(
            session,
            task,
            [IncomingItem(f"text {i}", external_id=f"i{i}") for i in range(2)],
            registry=services.registry,
            max_chars=100,
        )
    return [r.item_id for r in routed]


def test_the_items_api_names_the_admin_who_settled_a_disagreement(services: Services) -> None:
    item_id = votes_task(services, 3)[0]
    admins = frozenset({"ADMIN"})
    answer(services, item_id, "U1", "a")
    answer(services, item_id, "U2", "a")
    assert answer(services, item_id, "U3", "b").escalated is True
    assert answer(services, item_id, "ADMIN", "d", admins=admins).final_label == "d"
    details = items_api(services, "i0")
    assert (details["final_label"], details["label_source"]) == ("d", LabelSource.PERSON)
    assert details["answered_by"] == "ADMIN"


def test_the_items_api_names_the_import_that_decided_over_a_later_answer(
    sqlite_services: Services,
) -> None:
    services = sqlite_services
    item_id = votes_task(services, 1)[0]
    answer(services, item_id, "U1", "a")
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        import_examples(session, task, [IncomingItem("text 0", "i0", "b")], max_chars=100)
    answer(services, item_id, "U1", "c")  # an imported label decides at once: still b
    details = items_api(services, "i0")
    assert details["final_label"] == "b"
    assert details["answered_by"] == "import"


def test_a_retrain_does_not_overrule_an_answer_waiting_for_a_second_opinion(
    sqlite_services: Services, banking77: Rows
) -> None:
    services = sqlite_services
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, "bank", LABELS, channel="C0BANK", threshold=0.8)
        import_examples(
            session,
            task,
            [IncomingItem(t, label=lab) for t, lab in bank_rows(banking77, per_label=5)],
            max_chars=10_000,
        )
        set_target_precision(session, task, 0.95, actor="test")
    retrain_task(services.sessions, "bank", registry=services.registry, settings=services.settings)
    routed = submit_texts(services, [t for t, _ in bank_rows(banking77, per_label=2, skip=110)])
    assert all(r.route == Route.REVIEW for r in routed)  # nothing automated yet
    sure = max(routed, key=lambda r: r.confidence)
    assert sure.confidence >= 0.9
    doubt = answer(services, sure.item_id, "U1", other_label(sure.label))
    assert doubt.second_opinion and doubt.final_label is None
    with services.sessions.begin() as session:
        import_examples(
            session,
            task_ops.get_task(session, "bank"),
            [IncomingItem(t, label=lab) for t, lab in bank_rows(banking77, per_label=20, skip=5)],
            max_chars=10_000,
        )
    result = retrain_task(
        services.sessions, "bank", registry=services.registry, settings=services.settings
    )
    assert result.report.threshold is not None  # the task automates now
    assert result.report.queue_resolved > 0
    # The item still waits for a second person; the model does not decide it.
    assert item_state(services, sure.item_id) == (None, None, False)
    assert prompt_status(services, sure.item_id) == PromptState.PENDING
