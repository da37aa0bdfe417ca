"""The nightly schedule: cron in the configured zone, catch-up after a restart, one run per slot."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.errors import BadInputError
from bot.scheduler import make_trigger, missed_slot, run_all_tasks
from bot.services import Services
from bot.storage.schema import RetrainRun
from tests.bot.test_training import bank_rows, setup_task


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
    with pytest.raises(BadInputError, match="not a cron expression"):
        make_trigger("every night", "UTC")
    with pytest.raises(BadInputError, match="not a time zone"):
        make_trigger("0 2 * * *", "Mars/Olympus")
