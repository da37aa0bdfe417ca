"""The retrain job: evidence, counts, promotion rule, skips, failures, re-scoring, history."""

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from bot import tasks as task_ops
from bot.answers import import_examples, record_answer
from bot.ingest import IncomingItem
from bot.queries import LabelCounts
from bot.registry import ModelRegistry, active_version, versions
from bot.report import (
    Comparison,
    Holdout,
    HoldoutMetrics,
    Movers,
    RecentTraffic,
    format_report_text,
)
from bot.routing import AutoRule, submit
from bot.services import Services, model_key
from bot.states import RunStatus
from bot.storage.schema import Item, RetrainRun
from bot.training import (
    Decision,
    Evaluation,
    LabelledData,
    RetrainFailed,
    decide,
    evaluate_models,
    headline,
    label_movers,
    latest_report,
    load_labelled,
    retrain_task,
    traffic_figures,
    train_candidate,
    version_history,
)
from model import train
from model.features import DEFAULT_FEATURIZER
from model.metrics import evaluate
from model.trust import fit_with_evidence

LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "cancel_transfer", "pin_blocked"]


def bank_rows(banking77, *, per_label: int, seed: int = 0, skip: int = 0):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    rows = []
    for label in LABELS:
        texts = [t for t, lab in banking77 if lab == label]
        rng.shuffle(texts)
        rows += [(t, label) for t in texts[skip : skip + per_label]]
    rng.shuffle(rows)
    return rows


def setup_task(services: Services, rows, *, threshold: float = 0.7) -> None:  # type: ignore[no-untyped-def]
    with services.sessions.begin() as session:
        task = task_ops.create_task(session, "bank", LABELS, channel="C0BANK", threshold=threshold)
        import_examples(
            session, task, [IncomingItem(t, label=lab) for t, lab in rows], max_chars=10_000
        )


def add_answers(services: Services, rows) -> None:  # type: ignore[no-untyped-def]
    with services.sessions.begin() as session:
        import_examples(
            session,
            task_ops.get_task(session, "bank"),
            [IncomingItem(t, label=lab) for t, lab in rows],
            max_chars=10_000,
        )


def retrain(services: Services, **kwargs):  # type: ignore[no-untyped-def]
    return retrain_task(
        services.sessions, "bank", registry=services.registry, settings=services.settings, **kwargs
    )


def test_report_figures_match_an_independent_recomputation(sqlite_services, banking77) -> None:  # type: ignore[no-untyped-def]
    services = sqlite_services
    setup_task(services, bank_rows(banking77, per_label=40))
    first = retrain(services)
    assert first.status == "promoted" and first.version == 1
    traffic = [t for t, _ in bank_rows(banking77, per_label=20, seed=5, skip=150)]
    with services.sessions.begin() as session:
        submit(
            session,
            task_ops.get_task(session, "bank"),
            [IncomingItem(t) for t in traffic],
            registry=services.registry,
            max_chars=10_000,
        )
    add_answers(services, bank_rows(banking77, per_label=40, seed=1, skip=40))
    second = retrain(services)
    report = second.report
    assert second.status == RunStatus.PROMOTED and report.evaluation == "cross-fitted (5 folds)"
    assert report.new_labels == LabelCounts(slack=0, imported=200, spot_check=0, people=0)
    assert report.new_answers == 200 and report.answerers == 0

    # Recompute from the database with a fresh registry: the evidence, both models.
    registry = ModelRegistry(key=model_key(services.settings))
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        data = load_labelled(session, task)
        rows = {v.version: v for v in versions(session, task)}
        old = registry.load(session, rows[1].id)
        new = registry.load(session, rows[2].id)
        v1_trained = rows[1].created_at
        recent = list(session.scalars(select(Item.text).where(Item.source != "import")))
    fitted = fit_with_evidence(data.texts, data.labels, labels=LABELS)
    evidence = fitted.evidence
    assert report.new_version == 2 and report.holdout_size == len(data.labels) == 400
    assert report.holdout is not None and report.recent is not None
    expected = evaluate(evidence.probabilities, LABELS, evidence.truth)
    assert report.holdout.new is not None
    # liblinear's solver may differ in the last digits between two fits of the same data
    assert report.holdout.new.accuracy == pytest.approx(expected["accuracy"], abs=1e-4)
    assert report.holdout.new.macro_f1 == pytest.approx(expected["macro_f1"], abs=1e-4)
    assert report.holdout.new.ece == pytest.approx(expected["ece"], abs=1e-4)
    low, high = report.holdout.new.accuracy_ci or (2.0, -1.0)
    assert low <= expected["accuracy"] <= high and high - low < 0.2
    # The paired comparison: only the 200 answers v1 never trained on.
    unseen = [
        k
        for k, row in enumerate(evidence.rows)
        if (data.resolved_at[row] or v1_trained) > v1_trained
    ]
    assert len(unseen) == 200
    truth = [evidence.truth[k] for k in unseen]
    old_right = np.asarray(
        old.predict([data.texts[evidence.rows[k]] for k in unseen]).predicted, dtype=object
    ) == np.asarray(truth, dtype=object)
    new_right = np.asarray([evidence.predicted[k] for k in unseen], dtype=object) == np.asarray(
        truth, dtype=object
    )
    assert report.comparison is not None and report.comparison.n == 200
    assert report.comparison.old_accuracy == pytest.approx(old_right.mean())
    assert report.comparison.new_accuracy == pytest.approx(new_right.mean())
    assert report.comparison.new_only == int((new_right & ~old_right).sum())
    assert report.comparison.old_only == int((old_right & ~new_right).sum())
    assert report.holdout.old is not None and report.holdout.old.n == 200
    assert report.holdout.old.accuracy == pytest.approx(old_right.mean())
    for traffic_of, model in ((report.recent.old, old), (report.recent.new, new)):
        assert traffic_of is not None
        confidence = model.predict(recent).confidence
        assert traffic_of.mean_confidence == pytest.approx(confidence.mean())
        assert traffic_of.auto_share == pytest.approx((confidence >= 0.7).mean())
    assert report.new_accuracy == report.holdout.new.accuracy
    assert report.recent.old is not None and report.recent.new is not None
    gain = (report.recent.new.mean_confidence or 0) - (report.recent.old.mean_confidence or 0)
    assert report.recent.confidence_gain == pytest.approx(gain)
    assert report.recent.items == len(traffic)
    # the stored row holds the JSON form of the same report
    with services.sessions.begin() as session:
        stored = latest_report(session, task_ops.get_task(session, "bank"))
    assert stored == report


def test_candidate_measurably_worse_is_rejected_and_active_keeps_serving(
    sqlite_services: Services, banking77: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = sqlite_services
    setup_task(services, bank_rows(banking77, per_label=60))
    assert retrain(services).version == 1
    add_answers(services, bank_rows(banking77, per_label=60, seed=2, skip=60))
    real = fit_with_evidence

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        # A candidate whose held-out guesses are shuffled: clearly worse on the unseen answers.
        fitted = real(*args, **kwargs)
        guesses = list(fitted.evidence.predicted)
        random.Random(9).shuffle(guesses)
        return replace(fitted, evidence=replace(fitted.evidence, predicted=guesses))

    monkeypatch.setattr("bot.training.fit_with_evidence", broken)
    result = retrain(services)
    assert result.status == "kept" and result.version == 1
    assert result.report.reason is not None and "candidate is worse" in result.report.reason
    assert result.report.comparison is not None and result.report.comparison.p_value < 0.05
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        active = active_version(session, task)
        statuses = [(v.version, v.status) for v in versions(session, task)]
    assert active is not None and active.version == 1
    assert statuses == [(1, "active"), (2, "rejected")]


def test_no_new_answers_is_a_skip(sqlite_services, banking77) -> None:  # type: ignore[no-untyped-def]
    services = sqlite_services
    setup_task(services, bank_rows(banking77, per_label=20))
    retrain(services)
    result = retrain(services)
    assert result.status == "skipped" and "no new answers" in result.report.headline


def test_training_exception_leaves_everything_and_records_failure(
    sqlite_services: Services, banking77: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = sqlite_services
    setup_task(services, bank_rows(banking77, per_label=20))
    retrain(services)
    add_answers(services, bank_rows(banking77, per_label=5, seed=3, skip=100))

    def explode(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError("out of memory while fitting")

    monkeypatch.setattr("bot.training.fit_with_evidence", explode)
    with pytest.raises(RetrainFailed, match="MemoryError: out of memory while fitting"):
        retrain(services)
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        assert [(v.version, v.status) for v in versions(session, task)] == [(1, "active")]
        runs = session.scalars(select(RetrainRun).order_by(RetrainRun.id)).all()
    assert [r.status for r in runs] == ["promoted", "failed"]
    assert "out of memory" in (runs[1].error or "") and runs[1].finished_at is not None


def test_first_model_resolves_confident_queue_items(sqlite_services, banking77) -> None:  # type: ignore[no-untyped-def]
    services = sqlite_services
    with services.sessions.begin() as session:
        task_ops.create_task(session, "bank", LABELS, channel="C0BANK", threshold=0.5)
    queued = [t for t, _ in bank_rows(banking77, per_label=6, seed=0, skip=60)]
    with services.sessions.begin() as session:
        cold = submit(
            session,
            task_ops.get_task(session, "bank"),
            [IncomingItem(t) for t in queued],
            registry=services.registry,
            max_chars=10_000,
        )
    assert all(r.route == "review" for r in cold)
    add_answers(services, bank_rows(banking77, per_label=40))
    result = retrain(services)
    assert result.status == "promoted"
    with services.sessions.begin() as session:
        resolved = session.scalars(
            select(Item).where(Item.source == "api", Item.final_source == "model")
        ).all()
    assert result.report.queue_resolved == len(resolved) > 0


# --- the stages of a run ------------------------------------------------------------------------


def test_progress_names_each_stage_as_it_starts(sqlite_services, banking77) -> None:  # type: ignore[no-untyped-def]
    services = sqlite_services
    setup_task(services, bank_rows(banking77, per_label=20))
    stages: list[str] = []
    assert retrain(services, progress=stages.append).status == RunStatus.PROMOTED
    assert stages == ["gathering", "training", "evaluating", "saving", "re-scoring"]
    stages.clear()
    assert retrain(services, progress=stages.append).status == RunStatus.SKIPPED
    assert stages == ["gathering"]


def test_first_report_without_traffic_has_no_automatic_share(sqlite_services, banking77) -> None:  # type: ignore[no-untyped-def]
    services = sqlite_services
    setup_task(services, bank_rows(banking77, per_label=20))
    report = retrain(services).report
    assert report.recent is not None and report.recent.new is not None
    assert report.recent.items == 0
    assert (report.recent.new.auto_share, report.recent.new.mean_confidence) == (None, None)
    assert report.recent.old is None and report.recent.confidence_gain is None


def test_labels_are_counted_by_source_and_history_shows_what_each_version_routed(
    services: Services, banking77: list[tuple[str, str]]
) -> None:
    setup_task(services, bank_rows(banking77, per_label=40), threshold=0.9)
    assert retrain(services).version == 1
    traffic = bank_rows(banking77, per_label=15, seed=5, skip=90)
    assert len(traffic) == 75
    with services.sessions.begin() as session:
        routed = submit(
            session,
            task_ops.get_task(session, "bank"),
            [IncomingItem(t, external_id=f"t{i}") for i, (t, _) in enumerate(traffic)],
            registry=services.registry,
            max_chars=10_000,
        )
    v1_auto = sum(r.route == "auto" for r in routed)
    assert 0 < v1_auto < len(routed)
    # A person labels 2 waiting items in Slack; an import labels 50 items that already exist.
    waiting = [i for i, r in enumerate(routed) if r.route == "review"][:2]
    assert len(waiting) == 2
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        for i in waiting:
            item = session.scalars(select(Item).where(Item.external_id == f"t{i}")).one()
            record_answer(session, item, "U0ANNA001", label=traffic[i][1])
        imported = [
            IncomingItem(t, external_id=f"t{i}", label=lab)
            for i, (t, lab) in enumerate(traffic)
            if i not in waiting
        ][:50]
        assert len(imported) == 50
        import_examples(session, task, imported, max_chars=10_000)
    add_answers(services, bank_rows(banking77, per_label=40, seed=1, skip=40))  # 200 new items
    result = retrain(services)
    assert result.status == RunStatus.PROMOTED and result.version == 2, result.report.reason
    assert result.report.new_labels == LabelCounts(slack=2, imported=250, spot_check=0, people=1)
    assert (
        "new labels since the last model: 252 (2 from Slack by 1 people, 250 imported)"
        in format_report_text(result.report).splitlines()
    )
    with services.sessions.begin() as session:
        history = version_history(session, task_ops.get_task(session, "bank"))
    assert [(p.version, p.routed, p.auto_share) for p in history] == [
        (1, len(routed), v1_auto / len(routed)),
        (2, 0, None),  # re-scoring the queue is not routing: v2 has routed nothing yet
    ]
    assert history[1].accuracy == result.report.new_accuracy


# --- evaluate and decide, without a database ------------------------------------------------------


def test_traffic_figures_count_what_the_rule_automates() -> None:
    confidences = np.array([0.2, 0.7, 0.75, 0.99])
    figures = traffic_figures(confidences, confidences >= 0.7, days=2)
    assert figures.auto_share == 0.75 and figures.auto_per_day == 1.5
    assert figures.mean_confidence == pytest.approx(0.66)
    assert sum(figures.histogram) == 4 and figures.histogram[4] == 1 and figures.histogram[19] == 1
    empty = traffic_figures(np.zeros(0), np.zeros(0, dtype=bool), days=7)
    assert (empty.auto_share, empty.mean_confidence, empty.auto_per_day) == (None, None, 0.0)


def test_label_movers_list_only_moves_their_support_carries() -> None:
    # "a": the new model fixes 30 answers (significant); "b": it fixes 2 of 4 (could be luck).
    truth = ["a"] * 40 + ["b"] * 4 + ["c"] * 40
    old = ["c"] * 30 + ["a"] * 10 + ["c", "c", "b", "b"] + ["c"] * 40
    new = ["a"] * 40 + ["b", "b", "b", "b"] + ["c"] * 40
    movers = label_movers(["a", "b", "c"], truth, old, new)
    assert [m.label for m in movers.gains] == ["a", "c"]
    gain = movers.gains[0]
    assert gain.old == pytest.approx(2 * 10 / (40 + 10)) and gain.new == 1.0
    assert movers.losses == ()
    assert label_movers(["a", "b", "c"], truth, new, new) == Movers()


def evaluation_with(comparison: Comparison | None) -> Evaluation:
    return Evaluation(
        holdout=Holdout(new=HoldoutMetrics(macro_f1=0.8)),
        compared_on="unseen answers" if comparison else "none",
        comparison=comparison,
        recent=RecentTraffic(),
        movers=Movers(),
    )


def test_promotion_rule_rejects_only_a_measurably_worse_candidate() -> None:
    assert decide(evaluation_with(None), has_old=False) == Decision(True, "first model of the task")
    assert decide(evaluation_with(None), has_old=True).promote
    slightly_worse = Comparison(200, 0.80, 0.81, (-0.04, 0.02), 10, 12, 0.83)
    decision = decide(evaluation_with(slightly_worse), has_old=True)
    assert decision.promote and decision.reason.startswith("no worse on 200 answers")
    much_worse = Comparison(200, 0.70, 0.80, (-0.15, -0.05), 5, 25, 0.0003)
    decision = decide(evaluation_with(much_worse), has_old=True)
    assert not decision.promote
    assert decision.reason == (
        "the candidate is worse on 200 answers the active model never saw: accuracy "
        "80.0% → 70.0% (difference -15.0% to -5.0%), 5 vs 25 answers only one got right, "
        "p = 0.0003"
    )


def test_headlines_name_both_versions() -> None:
    assert headline(Decision(True, ""), old_version=7, version=8) == "model v7 → v8 promoted"
    assert headline(Decision(True, ""), old_version=None, version=1) == "first model v1 promoted"
    assert (
        headline(Decision(False, ""), old_version=7, version=8) == "kept v7; candidate v8 rejected"
    )


def test_evaluate_models_pairs_both_on_answers_the_old_model_never_saw(banking77) -> None:  # type: ignore[no-untyped-def]
    rows = bank_rows(banking77, per_label=60)
    trained_at = datetime(2026, 1, 1, tzinfo=UTC)
    resolved: list[datetime | None] = [
        trained_at + timedelta(minutes=1 if i % 3 == 0 else -1) for i in range(len(rows))
    ]
    data = LabelledData(
        list(range(1, len(rows) + 1)), [t for t, _ in rows], [lab for _, lab in rows], resolved
    )
    candidate = train_candidate(data, labels=LABELS, featurizer=DEFAULT_FEATURIZER)
    assert candidate.evaluation == "cross-fitted (5 folds)" and candidate.holdout_size == 300
    weak = train(
        [t for t, _ in rows[:40]], [lab for _, lab in rows[:40]], labels=LABELS, min_per_label=2
    )
    traffic = [t for t, _ in bank_rows(banking77, per_label=4, seed=3, skip=100)]
    evaluation = evaluate_models(
        candidate,
        weak,
        data=data,
        old_trained_at=trained_at,
        labels=LABELS,
        traffic=traffic,
        old_route=AutoRule(0.5),
        new_route=AutoRule(0.5, frozenset(LABELS)),
        days=10,
    )
    unseen = [k for k, row in enumerate(candidate.evidence_rows) if row % 3 == 0]
    texts = [data.texts[candidate.evidence_rows[k]] for k in unseen]
    truth = [candidate.evidence_truth[k] for k in unseen]
    expected_old = evaluate(weak.predict(texts).probabilities, LABELS, truth)
    assert evaluation.compared_on == "unseen answers"
    assert evaluation.comparison is not None and evaluation.comparison.n == len(unseen) == 100
    assert evaluation.holdout.old == HoldoutMetrics.from_json(expected_old)
    assert evaluation.holdout.new is not None
    assert evaluation.holdout.new.accuracy == pytest.approx(candidate.metrics["accuracy"])
    assert evaluation.recent.items == len(traffic) and evaluation.recent.items_per_day == 2.0
    new_confidence = candidate.classifier.predict(traffic).confidence
    assert evaluation.recent.new is not None
    assert evaluation.recent.new.auto_share == pytest.approx((new_confidence >= 0.5).mean())
