"""Prometheus metrics of one process: counters it keeps, and gauges read from the database when
`/metrics` is scraped.

Every `Metrics` has its own `CollectorRegistry`, never the global one: two apps in one process
(tests, the demo) count apart. Each replica exports its own counters; the database gauges are
the same from every replica.
"""

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bot.queue import queue_summary
from bot.states import ModelStatus
from bot.storage.schema import ModelVersion, Task, WebhookDelivery
from bot.tasks import list_tasks
from bot.trust import live_precision

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Slack wants an ack within 3 s; the buckets around that say how close the bot comes.
ACK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
RETRAIN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Metrics:
    """The counters and histograms a serve process keeps, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._watched: dict[str, Collector] = {}
        self.items = Counter(
            "hitl_items",
            "Items submitted through the items API, by the route they took.",
            ["task", "route"],
            registry=self.registry,
        )
        self.answers = Counter(
            "hitl_answers",
            "Answers people gave that were stored (a repeated click counts once).",
            ["source"],
            registry=self.registry,
        )
        self.slack_ack = Histogram(
            "hitl_slack_ack_seconds",
            "Time from a Slack request's arrival to the answer sent back (the ack).",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.slack_api_calls = Counter(
            "hitl_slack_api_calls",
            "Slack Web API calls sent, by method.",
            ["method"],
            registry=self.registry,
        )
        self.slack_api_errors = Counter(
            "hitl_slack_api_errors",
            "Slack Web API calls that failed, by method and Slack's error (or `connection`).",
            ["method", "error"],
            registry=self.registry,
        )
        self.retrain_runs = Counter(
            "hitl_retrain_runs",
            "Scheduled retrains of a task, by how they ended.",
            ["outcome"],
            registry=self.registry,
        )
        self.retrain_seconds = Histogram(
            "hitl_retrain_seconds",
            "How long a scheduled retrain of one task took.",
            buckets=RETRAIN_BUCKETS,
            registry=self.registry,
        )

    def observe_slack_call(self, method: str, error: str | None) -> None:
        """Count one Web API call, and its error when it failed."""
        self.slack_api_calls.labels(method=method).inc()
        if error is not None:
            self.slack_api_errors.labels(method=method, error=error).inc()

    def watch_database(self, sessions: sessionmaker[Session]) -> None:
        """Export the per-task gauges read from the database at each scrape."""
        self.watch("database", DatabaseCollector(sessions))

    def watch(self, key: str, collector: Collector) -> None:
        """Export a collector's metrics too (e.g. the poster's counters); a later collector
        under the same `key` replaces the earlier one (a runtime built again)."""
        previous = self._watched.pop(key, None)
        if previous is not None:
            self.registry.unregister(previous)
        self.registry.register(collector)
        self._watched[key] = collector

    def render(self) -> bytes:
        """Every metric in Prometheus' text format."""
        return generate_latest(self.registry)


class DatabaseCollector(Collector):
    """Per task: the active model version, the live automatic precision (when spot checks
    measured it) and the items waiting for a person; all in one short session."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterable[Metric]:
        """The gauges, and `hitl_database_up` 0 (and nothing else) when the database fails."""
        up = GaugeMetricFamily("hitl_database_up", "1 when the database answered this scrape.")
        try:
            families = list(self._read())
        except SQLAlchemyError:
            # The driver's message names hosts; the log gets it, the scrape gets a 0.
            logger.warning("metrics: the database does not answer", exc_info=True)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]

    def _read(self) -> Iterator[Metric]:
        version = GaugeMetricFamily(
            "hitl_model_version", "The active model version of a task.", labels=["task"]
        )
        precision = GaugeMetricFamily(
            "hitl_auto_precision",
            "Precision of the automatic answers measured by spot checks (absent until measured).",
            labels=["task"],
        )
        waiting = GaugeMetricFamily(
            "hitl_queue_waiting", "Items of a task waiting for a person.", labels=["task"]
        )
        webhooks = GaugeMetricFamily(
            "hitl_webhook_events",
            "Webhook events of a task by state: pending (queued or retrying), delivered, failed "
            "(given up after a day), cancelled (the webhook was removed).",
            labels=["task", "state"],
        )
        with self._sessions.begin() as session:
            counts = session.execute(
                select(Task.name, WebhookDelivery.status, func.count())
                .join(Task, Task.id == WebhookDelivery.task_id)
                .group_by(Task.name, WebhookDelivery.status)
            )
            for name, state, count in counts:
                webhooks.add_metric([name, state], count)
            rows = session.execute(
                select(ModelVersion.task_id, ModelVersion.version).where(
                    ModelVersion.status == ModelStatus.ACTIVE
                )
            )
            active = {task_id: number for task_id, number in rows}
            for task in list_tasks(session):
                if task.id in active:
                    version.add_metric([task.name], active[task.id])
                live = live_precision(session, task)
                if live.estimate is not None:
                    precision.add_metric([task.name], live.estimate)
                waiting.add_metric([task.name], queue_summary(session, task).waiting)
        yield from (version, precision, waiting, webhooks)


class CountersCollector(Collector):
    """A counter family read at scrape time from numbers another object keeps."""

    def __init__(
        self, name: str, documentation: str, label: str, read: Callable[[], Mapping[str, float]]
    ) -> None:
        self._name, self._documentation, self._label, self._read = name, documentation, label, read

    def collect(self) -> Iterable[Metric]:
        """The counter, one sample per label value."""
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, count in self._read().items():
            family.add_metric([value], count)
        return [family]
