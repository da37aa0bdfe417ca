"""Submitting items: predict in one batch, store items and predictions, route by confidence.

An item is answered automatically when the task is automating (a hand-set threshold, or a
target precision the evidence supports), its confidence reaches the threshold, and its
predicted label has enough answers to be trusted. A share of automatic answers is also
posted for a person to check (spot checks), without the model's guess. Items for people are
queued at their uncertainty (`bot.queue`), so the poster asks the most informative first.
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import outbox, webhooks
from bot.errors import ConflictError, UnavailableError
from bot.ingest import IncomingItem, check_batch
from bot.queries import find_by_external_ids, latest_prediction
from bot.queue import enqueue_priorities
from bot.registry import ModelRegistry
from bot.states import LabelSource, Route
from bot.storage.bulk import insert_returning_ids, insert_rows
from bot.storage.schema import Item, ModelVersion, Prediction, Task, utcnow
from bot.webhooks import Resolution
from model import Prediction as Scores
from model.embeddings import EmbeddingModelError

_PROBABILITY_DECIMALS = 5


@dataclass(frozen=True)
class Routed:
    """The outcome for one submitted item."""

    item_id: int
    external_id: str | None
    label: str | None
    confidence: float
    route: str
    model_version: int | None
    duplicate: bool = False
    spot_check: bool = False

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, as printed by `hitl submit --json` and the HTTP API."""
        return {
            "item_id": self.item_id,
            "id": self.external_id,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "route": self.route,
            "spot_check": self.spot_check,
            "model_version": self.model_version,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True)
class AutoRule:
    """Which predictions are answered automatically.

    `threshold` None automates nothing (a target precision the evidence cannot support yet);
    `auto_labels` None allows every label (models stored before labels were judged one by one).
    """

    threshold: float | None
    auto_labels: frozenset[str] | None = None

    @classmethod
    def nothing(cls) -> "AutoRule":
        """Every item goes to a person."""
        return cls(None)

    @classmethod
    def of(cls, task: Task, metrics: dict[str, Any] | None) -> "AutoRule":
        """The rule a task applies with a model stored with `metrics`."""
        labels = (metrics or {}).get("auto_labels")
        allowed = frozenset(str(x) for x in labels) if isinstance(labels, list) else None
        return cls(effective_threshold(task), allowed)

    def with_threshold(self, threshold: float | None) -> "AutoRule":
        """The same labels at another threshold."""
        return AutoRule(threshold, self.auto_labels)

    def mask(self, scores: Scores) -> NDArray[np.bool_]:
        """True for each prediction answered automatically."""
        return self.mask_of(scores.confidence, scores.predicted)

    def mask_of(
        self, confidences: NDArray[np.float64], predicted: Sequence[str | None]
    ) -> NDArray[np.bool_]:
        """The same from bare confidences and labels."""
        if self.threshold is None:
            return np.zeros(len(confidences), dtype=bool)
        sure: NDArray[np.bool_] = np.asarray(confidences, dtype=np.float64) >= self.threshold
        if self.auto_labels is None:
            return sure
        allowed = self.auto_labels
        known: NDArray[np.bool_] = np.asarray([p in allowed for p in predicted], dtype=bool)
        return sure & known


def effective_threshold(task: Task) -> float | None:
    """The threshold routing uses now; None while a target precision is not supported yet."""
    if task.target_precision is not None and task.precision_lower_bound is None:
        return None
    return task.threshold


def model_rule(session: Session, task: Task, model_id: int | None) -> AutoRule:
    """The task's rule with the stored model `model_id` (nothing automated without a model)."""
    if model_id is None:
        return AutoRule.nothing()
    metrics = session.scalar(select(ModelVersion.metrics).where(ModelVersion.id == model_id))
    return AutoRule.of(task, metrics)


def pick_spot_checks(
    automatic: Sequence[bool], *, rate: float, rng: random.Random | None = None
) -> list[bool]:
    """Each automatic answer is also sent to a person with probability `rate`."""
    draw = (rng or _spot_rng).random
    return [bool(auto) and rate > 0 and draw() < rate for auto in automatic]


# Not for secrets: an unbiased coin per item is all a spot check needs.
_spot_rng = random.Random()


def _replay(session: Session, item: Item) -> Routed:
    prediction, version = latest_prediction(session, item.id)
    return Routed(
        item_id=item.id,
        external_id=item.external_id,
        label=prediction.label if prediction else item.final_label,
        confidence=prediction.confidence if prediction else 0.0,
        route=item.route or Route.REVIEW,
        model_version=version,
        duplicate=True,
        spot_check=item.spot_check,
    )


def submit(
    session: Session,
    task: Task,
    items: Sequence[IncomingItem],
    *,
    registry: ModelRegistry,
    max_chars: int,
    source: str = "api",
    requested_by: str | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> list[Routed]:
    """Classify and store a batch; review items are queued for a person.

    An external id seen before with the same text returns the stored outcome (safe retries);
    with a different text the whole batch is refused.
    """
    checked = check_batch(items, labels=None, max_chars=max_chars)
    now = now or utcnow()
    ids = [item.external_id for item in checked if item.external_id is not None]
    existing = find_by_external_ids(session, task, ids) if ids else {}
    for item in checked:
        old = existing.get(item.external_id) if item.external_id is not None else None
        if old is not None and old.text != item.text:
            raise ConflictError(
                f"{item.where()}: id {item.external_id!r} was submitted before with a different "
                "text; use a new id"
            )
    fresh = [
        item for item in checked if item.external_id is None or item.external_id not in existing
    ]
    loaded = registry.active(session, task)
    n = len(fresh)
    if loaded is not None and n:
        try:
            prediction = loaded.classifier.predict([item.text for item in fresh])
        except EmbeddingModelError as exc:  # the task's embedding model is missing here
            raise UnavailableError(f"task {task.name!r} cannot score items: {exc}") from exc
        labels: list[str | None] = list(prediction.predicted)
        confidences = prediction.confidence
        probabilities: list[list[float]] | list[None] = np.round(
            prediction.probabilities, _PROBABILITY_DECIMALS
        ).tolist()
    else:
        labels = [None] * n
        confidences = np.zeros(n)
        probabilities = [None] * n
    rule = model_rule(session, task, loaded.id if loaded else None)
    automatic = rule.mask_of(confidences, labels).tolist() if n else []
    routes = [Route.AUTO if auto else Route.REVIEW for auto in automatic]
    spot = pick_spot_checks(automatic, rate=task.spot_check_rate, rng=rng)
    model_id = loaded.id if loaded else None
    version = loaded.version if loaded else None

    item_ids: list[int] = []
    if n:
        item_ids = insert_returning_ids(
            session,
            Item,
            [
                {
                    "task_id": task.id,
                    "external_id": item.external_id,
                    "text": item.text,
                    "source": source,
                    "submitted_at": now,
                    "route": route,
                    "final_label": label if route == Route.AUTO else None,
                    "final_source": LabelSource.MODEL if route == Route.AUTO else None,
                    "resolved_at": now if route == Route.AUTO else None,
                    "requested_by": requested_by,
                    "spot_check": checked_spot,
                }
                for item, route, label, checked_spot in zip(
                    fresh, routes, labels, spot, strict=True
                )
            ],
        )
        insert_rows(
            session,
            Prediction,
            [
                {
                    "item_id": item_id,
                    "model_version_id": model_id,
                    "label": label,
                    "confidence": float(confidence),
                    "probabilities": probs,
                    "route": route,
                    "created_at": now,
                }
                for item_id, label, confidence, probs, route in zip(
                    item_ids, labels, confidences, probabilities, routes, strict=True
                )
            ],
        )
        # Only a task with a webhook pays for its events (a submit may hold 10,000 items).
        if task.webhook_url is not None:
            webhooks.record_resolutions(
                session,
                task,
                [
                    Resolution.by_model(
                        item_id,
                        item.external_id,
                        route=route,
                        label=label,
                        confidence=float(confidence),
                        model_version=version,
                        at=now,
                    )
                    for item_id, item, label, confidence, route in zip(
                        item_ids, fresh, labels, confidences, routes, strict=True
                    )
                    if route == Route.AUTO
                ],
                now=now,
            )
        asked = [
            k
            for k, (route, checked_spot) in enumerate(zip(routes, spot, strict=True))
            if route == Route.REVIEW or checked_spot
        ]
        outbox.enqueue(
            session,
            [item_ids[k] for k in asked],
            channel=task.channel,
            now=now,
            priorities=enqueue_priorities(
                [probabilities[k] for k in asked], [spot[k] for k in asked]
            ),
            task_id=task.id,
        )

    made = iter(zip(item_ids, labels, confidences, routes, spot, strict=True))
    results: list[Routed] = []
    for item in checked:
        old = existing.get(item.external_id) if item.external_id is not None else None
        if old is not None:
            results.append(_replay(session, old))
            continue
        item_id, label, confidence, route, checked_spot = next(made)
        results.append(
            Routed(
                item_id=item_id,
                external_id=item.external_id,
                label=label,
                confidence=float(confidence),
                route=route,
                model_version=version,
                spot_check=checked_spot,
            )
        )
    return results
