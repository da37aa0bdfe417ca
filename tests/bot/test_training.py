"""The retrain job: holdout, promotion rule, skips, failures, queue re-scoring, claims."""

import random
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select

from bot import tasks as task_ops
from bot.answers import import_examples
from bot.ingest import IncomingItem
from bot.registry import ModelRegistry, active_version, versions
from bot.routing import submit
from bot.scheduler import make_trigger, missed_slot, run_all_tasks
from bot.services import Services
from bot.storage.schema import Item, RetrainRun
from bot.training import (
    RetrainFailed,
    in_holdout,
    load_labelled,
    retrain_task,
)
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
    assert report["evaluation"] == "holdout" and report["new_answers"] == 200

    # Recompute from the database with a fresh registry: holdout items, both models.
    registry = ModelRegistry()
    with services.sessions.begin() as session:
        task = task_ops.get_task(session, "bank")
        data = load_labelled(session, task)
        rows = {v.version: v for v in versions(session, task)}
        old = registry.load(session, rows[1].id)
        new = registry.load(session, rows[report["new_version"]].id)
        recent = list(session.scalars(select(Item.text).where(Item.source != "import")))
    mask = in_holdout(data.item_ids, share=services.settings.holdout_share)
    held = [t for t, m in zip(data.texts, mask, strict=True) if m]
    truth = [lab for lab, m in zip(data.labels, mask, strict=True) if m]
    assert report["holdout_size"] == len(held)
    for which, model in (("old", old), ("new", new)):
        expected = evaluate(model.predict(held).probabilities, LABELS, truth)
        assert report["holdout"][which]["accuracy"] == pytest.approx(expected["accuracy"])
        assert report["holdout"][which]["macro_f1"] == pytest.approx(expected["macro_f1"])
        assert report["holdout"][which]["ece"] == pytest.approx(expected["ece"])
        confidence = model.predict(recent).confidence
        assert report["recent"][which]["mean_confidence"] == pytest.approx(confidence.mean())
        assert report["recent"][which]["auto_share"] == pytest.approx((confidence >= 0.7).mean())
    gain = report["recent"]["new"]["mean_confidence"] - report["recent"]["old"]["mean_confidence"]
    assert report["recent"]["confidence_gain"] == pytest.approx(gain)
    assert report["recent"]["items"] == len(traffic)


def test_candidate_on_shuffled_labels_is_rejected_and_active_keeps_serving(
    sqlite_services, banking77
) -> None:  # type: ignore[no-untyped-def]
    services = sqlite_services
    setup_task(services, bank_rows(banking77, per_label=60))
    assert retrain(services).version == 1
    noisy = bank_rows(banking77, per_label=300, seed=2, skip=60)
    shuffled = [lab for _, lab in noisy]
    random.Random(9).shuffle(shuffled)
    add_answers(services, [(t, lab) for (t, _), lab in zip(noisy, shuffled, strict=True)])
    result = retrain(services)
    assert result.status == "kept" and result.version == 1
    assert "would fall" in result.report["reason"]
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
    assert result.status == "skipped" and "no new answers" in result.report["headline"]


def test_training_exception_leaves_everything_and_records_failure(
    sqlite_services, banking77, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
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
    assert result.report["queue_resolved"] == len(resolved) > 0


def test_two_schedulers_on_one_database_run_each_task_once(services: Services, banking77) -> None:  # type: ignore[no-untyped-def]
    setup_task(services, bank_rows(banking77, per_label=12))
    slot = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    outcomes: list[list[str]] = []

    def scheduler() -> None:
        outcomes.append([r.status for r in run_all_tasks(services, scheduled_for=slot)])

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(status for run in outcomes for status in run)
    assert statuses == ["claimed_elsewhere", "promoted"]
    with services.sessions.begin() as session:
        runs = session.scalars(select(RetrainRun)).all()
    assert len(runs) == 1 and runs[0].scheduled_for == slot


def test_cron_fires_at_the_configured_time_and_zone() -> None:
    trigger = make_trigger("0 2 * * *", "Europe/Berlin")
    before = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)  # 01:30 in Berlin
    fire = trigger.get_next_fire_time(None, before)
    assert fire is not None and fire.astimezone(UTC) == datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    # in summer Berlin is UTC+2
    summer = trigger.get_next_fire_time(None, datetime(2026, 7, 1, 12, 0, tzinfo=UTC))
    assert summer is not None and summer.astimezone(UTC) == datetime(2026, 7, 2, 0, 0, tzinfo=UTC)


def test_restart_after_the_slot_still_runs_that_night() -> None:
    trigger = make_trigger("0 2 * * *", "UTC")
    assert missed_slot(trigger, datetime(2026, 11, 24, 2, 30, tzinfo=UTC)) == datetime(
        2026, 11, 24, 2, 0, tzinfo=UTC
    )
    assert missed_slot(trigger, datetime(2026, 11, 24, 1, 59, tzinfo=UTC)) is None
    assert (
        missed_slot(trigger, datetime(2026, 11, 24, 2, 0, tzinfo=UTC) + timedelta(hours=7)) is None
    )


def test_bad_cron_and_zone_are_clear_errors() -> None:
    from bot.errors import BadInputError

    with pytest.raises(BadInputError, match="not a cron expression"):
        make_trigger("every night", "UTC")
    with pytest.raises(BadInputError, match="not a time zone"):
        make_trigger("0 2 * * *", "Mars/Olympus")
