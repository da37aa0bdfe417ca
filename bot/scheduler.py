"""The nightly retrain (an APScheduler cron job, safe with several replicas on one database) and
the review queue's periodic re-rank (an interval job: ages move and answers leave gaps)."""

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot import tasks as task_ops
from bot.errors import BadInputError, HitlError
from bot.queue import RERANK_MINUTES, rerank_all
from bot.services import Services
from bot.states import RunStatus
from bot.storage.schema import utcnow
from bot.training import RetrainResult, retrain_task

logger = logging.getLogger(__name__)

JOB_ID = "hitl-nightly-retrain"
RERANK_JOB_ID = "hitl-queue-rerank"
# A bot restarted within this long after the scheduled time still runs that night's retrain.
MISFIRE_GRACE = timedelta(hours=6)

OnResult = Callable[[RetrainResult], None]
OnFailure = Callable[[str, str | None, str], None]


def make_trigger(cron: str, timezone: str) -> CronTrigger:
    """The cron trigger of `HITL_RETRAIN_CRON` in `HITL_TIMEZONE`, or a clear error."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInputError(
            f"HITL_TIMEZONE {timezone!r} is not a time zone, e.g. Europe/Berlin"
        ) from None
    try:
        return CronTrigger.from_crontab(cron, timezone=zone)
    except ValueError as exc:
        raise BadInputError(f"HITL_RETRAIN_CRON {cron!r} is not a cron expression: {exc}") from None


def missed_slot(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest scheduled time within the grace window before `now`, if any."""
    slot = trigger.get_next_fire_time(None, now - MISFIRE_GRACE)
    latest = None
    while slot is not None and slot <= now:
        latest = slot
        slot = trigger.get_next_fire_time(slot, slot + timedelta(seconds=1))
    return latest


def run_all_tasks(
    services: Services,
    *,
    scheduled_for: datetime,
    on_result: OnResult | None = None,
    on_failure: OnFailure | None = None,
) -> list[RetrainResult]:
    """Retrain every task for one scheduled slot; each task is claimed in the database."""
    with services.sessions.begin() as session:
        targets = [(t.name, t.channel) for t in task_ops.list_tasks(session)]
    results = []
    metrics = services.metrics
    for name, channel in targets:
        started = time.perf_counter()
        try:
            result = retrain_task(
                services.sessions,
                name,
                registry=services.registry,
                settings=services.settings,
                trigger="schedule",
                scheduled_for=scheduled_for,
            )
        except HitlError as exc:
            metrics.retrain_runs.labels(outcome=RunStatus.FAILED.value).inc()
            metrics.retrain_seconds.observe(time.perf_counter() - started)
            if on_failure is not None:
                on_failure(name, channel, str(exc))
            continue
        metrics.retrain_runs.labels(outcome=result.status.value).inc()
        if result.status != RunStatus.CLAIMED:  # another replica did the work
            metrics.retrain_seconds.observe(time.perf_counter() - started)
        results.append(result)
        if on_result is not None and result.status != RunStatus.CLAIMED:
            on_result(result)
    return results


class NightlyRetrain:
    """Owns the BackgroundScheduler of a serve process: the nightly retrain, and the re-rank of
    the review queues every `RERANK_MINUTES` (each replica's is harmless: it writes the same
    order)."""

    def __init__(
        self,
        services: Services,
        *,
        on_result: OnResult | None = None,
        on_failure: OnFailure | None = None,
    ) -> None:
        settings = services.settings
        self.services = services
        self.trigger = make_trigger(settings.retrain_cron, settings.timezone)
        self.on_result, self.on_failure = on_result, on_failure
        self.scheduler = BackgroundScheduler(timezone=ZoneInfo(settings.timezone))
        self.scheduler.add_job(
            self._fire,
            self.trigger,
            id=JOB_ID,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
        )
        self.scheduler.add_job(
            self._rerank,
            IntervalTrigger(minutes=RERANK_MINUTES),
            id=RERANK_JOB_ID,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
        )

    def _rerank(self) -> None:
        try:
            rerank_all(self.services.sessions, self.services.registry, now=utcnow())
        except Exception:  # the scheduler thread's boundary: log, the next run tries again
            logger.exception("re-ranking the review queues failed")

    def _fire(self, scheduled_for: datetime | None = None) -> None:
        slot = scheduled_for or self._current_slot()
        try:
            run_all_tasks(
                self.services,
                scheduled_for=slot,
                on_result=self.on_result,
                on_failure=self.on_failure,
            )
        except Exception:  # the scheduler thread's boundary: log, never die silently
            logger.exception("nightly retrain for %s failed", slot.isoformat())

    def _current_slot(self) -> datetime:
        slot = missed_slot(self.trigger, utcnow())
        return slot or utcnow().replace(microsecond=0)

    def start(self) -> None:
        """Start the scheduler; a slot missed while the bot was down is run now."""
        self.scheduler.start()
        missed = missed_slot(self.trigger, utcnow())
        if missed is not None:
            logger.info("catching up the retrain scheduled for %s", missed.isoformat())
            self.scheduler.add_job(
                self._fire,
                kwargs={"scheduled_for": missed},
                id=f"{JOB_ID}-catch-up",
                replace_existing=True,
            )

    def stop(self) -> None:
        """Stop without waiting for a running retrain."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
