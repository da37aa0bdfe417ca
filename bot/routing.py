"""Submitting items: predict in one batch, store items and predictions, route by confidence."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy.orm import Session

from bot import outbox
from bot.errors import ConflictError
from bot.ingest import IncomingItem, check_batch
from bot.queries import find_by_external_ids, latest_prediction
from bot.registry import ModelRegistry
from bot.states import LabelSource, Route
from bot.storage.bulk import insert_returning_ids, insert_rows
from bot.storage.schema import Item, Prediction, Task, utcnow

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

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, as printed by `hitl submit --json` and the HTTP API."""
        return {
            "item_id": self.item_id,
            "id": self.external_id,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "route": self.route,
            "model_version": self.model_version,
            "duplicate": self.duplicate,
        }


def route_for(confidence: float, threshold: float) -> str:
    """`auto` when confidence reaches the threshold, else `review`."""
    return Route.AUTO if confidence >= threshold else Route.REVIEW


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
        prediction = loaded.classifier.predict([item.text for item in fresh])
        labels: list[str | None] = list(prediction.predicted)
        confidences = prediction.confidence
        probabilities: list[list[float]] | list[None] = np.round(
            prediction.probabilities, _PROBABILITY_DECIMALS
        ).tolist()
    else:
        labels = [None] * n
        confidences = np.zeros(n)
        probabilities = [None] * n
    routes = [route_for(float(c), task.threshold) if loaded else Route.REVIEW for c in confidences]
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
                }
                for item, route, label in zip(fresh, routes, labels, strict=True)
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
        outbox.enqueue(
            session,
            [i for i, route in zip(item_ids, routes, strict=True) if route == Route.REVIEW],
            channel=task.channel,
            now=now,
        )

    made = iter(zip(item_ids, labels, confidences, routes, strict=True))
    results: list[Routed] = []
    for item in checked:
        old = existing.get(item.external_id) if item.external_id is not None else None
        if old is not None:
            results.append(_replay(session, old))
            continue
        item_id, label, confidence, route = next(made)
        results.append(
            Routed(
                item_id=item_id,
                external_id=item.external_id,
                label=label,
                confidence=float(confidence),
                route=route,
                model_version=version,
            )
        )
    return results
