"""The retrain job: holdout, counts, promotion rule, skips, failures, re-scoring, history."""

import random

import numpy as np
import pytest
from sqlalchemy import select

from bot import tasks as task_ops
from bot.answers import import_examples, record_answer
from bot.ingest import IncomingItem
from bot.queries import LabelCounts
from bot.registry import ModelRegistry, active_version, versions
from bot.report import Holdout, HoldoutMetrics, Movers, RecentTraffic, format_report_text
from bot.routing import submit
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
    in_holdout,
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


def test_holdout_is_stable_and_about_the_share() -> None:
    ids = list(range(1, 5001))
    first = in_holdout(ids, share=0.2)
    assert np.array_equal(first, in_holdout(ids, share=0.2))
    assert 0.18 < first.mean() < 0.22
    # growing the data never moves an old item in or out of the holdout
    assert np.array_equal(in_holdout(ids + list(range(5001, 9001)), share=0.2)[:5000], first)


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
    assert second.status == RunStatus.PROMOTED and report.evaluation == "holdout"
    assert report.new_labels == LabelCounts(slack=0, imported=200, spot_check=0, people=0)
    assert report.new_answers == 200 and report.answerers == 0

    # Recompute from the database with a fresh registry: holdout items, both models.
    registry = ModelRegistry(key=model_key(services.settings))
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        data = load_labelled(session, task)
        rows = {v.version: v for v in versions(session, task)}
        old = registry.load(session, rows[1].id)
        new = registry.load(session, rows[2].id)
        recent = list(session.scalars(select(Item.text).where(Item.source != "import")))
    mask = in_holdout(data.item_ids, share=services.settings.holdout_share)
    held = [t for t, m in zip(data.texts, mask, strict=True) if m]
    truth = [lab for lab, m in zip(data.labels, mask, strict=True) if m]
    assert report.new_version == 2 and report.holdout_size == len(held)
    assert report.holdout is not None and report.recent is not None
    for measured, traffic_of, model in (
        (report.holdout.old, report.recent.old, old),
        (report.holdout.new, report.recent.new, new),
    ):
        assert measured is not None and traffic_of is not None
        expected = evaluate(model.predict(held).probabilities, LABELS, truth)
        assert measured.accuracy == pytest.approx(expected["accuracy"])
        assert measured.macro_f1 == pytest.approx(expected["macro_f1"])
        assert measured.ece == pytest.approx(expected["ece"])
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


def test_candidate_on_shuffled_labels_is_rejected_and_active_keeps_serving(
    sqlite_services: Services, banking77: list[tuple[str, str]]
) -> None:
    services = sqlite_services
    setup_task(services, bank_rows(banking77, per_label=60))
    assert retrain(services).version == 1
    noisy = bank_rows(banking77, per_label=300, seed=2, skip=60)
    shuffled = [lab for _, lab in noisy]
    random.Random(9).shuffle(shuffled)
    add_answers(services, [(t, lab) for (t, _), lab in zip(noisy, shuffled, strict=True)])
    result = retrain(services)
    assert result.status == "kept" and result.version == 1
    assert result.report.reason is not None and "would fall" in result.report.reason
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

    monkeypatch.setattr("bot.training.train", explode)
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


def test_traffic_figures_count_what_passes_the_threshold() -> None:
    figures = traffic_figures(np.array([0.2, 0.7, 0.75, 0.99]), threshold=0.7, days=2)
    assert figures.auto_share == 0.75 and figures.auto_per_day == 1.5
    assert figures.mean_confidence == pytest.approx(0.66)
    assert sum(figures.histogram) == 4 and figures.histogram[4] == 1 and figures.histogram[19] == 1
    empty = traffic_figures(np.zeros(0), threshold=0.7, days=7)
    assert (empty.auto_share, empty.mean_confidence, empty.auto_per_day) == (None, None, 0.0)


def test_label_movers_are_the_biggest_changes_in_order() -> None:
    old = {"a": 0.5, "b": 0.9, "c": 0.6, "d": 0.7}
    new = {"a": 0.9, "b": 0.6, "c": 0.7, "d": 0.7, "e": 0.3}
    movers = label_movers(old, new, limit=2)
    assert [(m.label, m.old, m.new) for m in movers.gains] == [("a", 0.5, 0.9), ("e", 0.0, 0.3)]
    assert [(m.label, m.old, m.new) for m in movers.losses] == [("b", 0.9, 0.6)]


def evaluation_with(old_f1: float | None, new_f1: float) -> Evaluation:
    return Evaluation(
        holdout=Holdout(
            old=None if old_f1 is None else HoldoutMetrics(macro_f1=old_f1),
            new=HoldoutMetrics(macro_f1=new_f1),
        ),
        compared_on="holdout" if old_f1 is not None else "none",
        recent=RecentTraffic(),
        movers=Movers(),
    )


def test_promotion_rule_allows_a_drop_up_to_the_tolerance_only() -> None:
    assert decide(evaluation_with(None, 0.1), tolerance=0.005) == Decision(
        True, "first model of the task"
    )
    assert decide(evaluation_with(0.800, 0.796), tolerance=0.005) == Decision(
        True, "holdout macro-F1 0.796 vs 0.800 (tolerance 0.005)"
    )
    assert decide(evaluation_with(0.800, 0.794), tolerance=0.005) == Decision(
        False,
        "holdout macro-F1 would fall from 0.800 to 0.794, more than the tolerance 0.005",
    )


def test_headlines_name_both_versions() -> None:
    assert headline(Decision(True, ""), old_version=7, version=8) == "model v7 → v8 promoted"
    assert headline(Decision(True, ""), old_version=None, version=1) == "first model v1 promoted"
    assert (
        headline(Decision(False, ""), old_version=7, version=8) == "kept v7; candidate v8 rejected"
    )


def test_evaluate_models_measures_both_on_the_same_holdout(banking77) -> None:  # type: ignore[no-untyped-def]
    rows = bank_rows(banking77, per_label=60)
    data = LabelledData(
        list(range(1, len(rows) + 1)), [t for t, _ in rows], [lab for _, lab in rows]
    )
    candidate = train_candidate(
        data, labels=LABELS, featurizer=DEFAULT_FEATURIZER, min_per_label=5, holdout_share=0.2
    )
    assert candidate.evaluation == "holdout"
    weak = train(
        [t for t, _ in rows[:40]], [lab for _, lab in rows[:40]], labels=LABELS, min_per_label=2
    )
    traffic = [t for t, _ in bank_rows(banking77, per_label=4, seed=3, skip=100)]
    evaluation = evaluate_models(
        candidate,
        weak,
        old_metrics={},
        labels=LABELS,
        traffic=traffic,
        threshold=0.5,
        days=10,
    )
    expected_old = evaluate(
        weak.predict(candidate.holdout_texts).probabilities, LABELS, candidate.holdout_truth
    )
    assert evaluation.compared_on == "holdout"
    assert evaluation.holdout.old == HoldoutMetrics.from_json(expected_old)
    assert evaluation.holdout.new == HoldoutMetrics.from_json(candidate.metrics)
    assert evaluation.recent.items == len(traffic) and evaluation.recent.items_per_day == 2.0
    new_confidence = candidate.classifier.predict(traffic).confidence
    assert evaluation.recent.new is not None
    assert evaluation.recent.new.auto_share == pytest.approx((new_confidence >= 0.5).mean())
