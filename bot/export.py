"""Exporting items with their final label and where it came from."""

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.errors import BadInputError
from bot.queries import answer_history, deciding_answer
from bot.storage.schema import Item, ModelVersion, Prediction, Task

FIELDS = [
    "item_id",
    "id",
    "text",
    "source",
    "submitted_at",
    "route",
    "final_label",
    "label_source",
    "answered_by",
    "answered_at",
    "predicted_label",
    "confidence",
    "model_version",
]
_BATCH = 2000


def export_rows(
    session: Session,
    task: Task,
    *,
    with_history: bool = True,
    submitted_before: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """One row per item, in submission order, streamed in batches.

    `answered_by` / `answered_at` name the answer that decided a person-given label;
    `answers` holds every answer of the item, oldest first (JSON Lines only: CSV has no room
    for a list, so `write_export` leaves it out there). `submitted_before` keeps only the
    items `hitl task purge` would delete.
    """
    last_id = 0
    while True:
        query = select(Item).where(Item.task_id == task.id, Item.id > last_id)
        if submitted_before is not None:
            query = query.where(Item.submitted_at < submitted_before)
        items = list(session.scalars(query.order_by(Item.id).limit(_BATCH)))
        if not items:
            return
        ids = [item.id for item in items]
        latest: dict[int, tuple[str | None, float | None, int | None]] = {}
        for item_id, predicted, score, model_version in session.execute(
            select(
                Prediction.item_id, Prediction.label, Prediction.confidence, ModelVersion.version
            )
            .outerjoin(ModelVersion, ModelVersion.id == Prediction.model_version_id)
            .where(Prediction.item_id.in_(ids))
            .order_by(Prediction.id)
        ):
            latest[item_id] = (predicted, score, model_version)
        history = answer_history(session, ids)
        for item in items:
            label, confidence, version = latest.get(item.id, (None, None, None))
            answers = history.get(item.id, [])
            decided = deciding_answer(item, answers)
            row: dict[str, Any] = {
                "item_id": item.id,
                "id": item.external_id,
                "text": item.text,
                "source": item.source,
                "submitted_at": item.submitted_at.isoformat(),
                "route": item.route,
                "final_label": item.final_label,
                "label_source": item.final_source or "pending",
                "answered_by": decided.user if decided else None,
                "answered_at": decided.at.isoformat() if decided else None,
                "predicted_label": label,
                "confidence": None if confidence is None else round(confidence, 6),
                "model_version": version,
            }
            if with_history:
                row["answers"] = [answer.as_dict() for answer in answers]
            yield row
        last_id = ids[-1]


def export_format(filename: str, explicit: str | None) -> str:
    """'csv' or 'jsonl', from --format or the file's extension."""
    chosen = explicit or ("jsonl" if filename.endswith((".jsonl", ".json", ".ndjson")) else None)
    if chosen is None and filename.endswith(".csv"):
        chosen = "csv"
    if chosen not in ("csv", "jsonl"):
        raise BadInputError(
            "cannot tell the format: name the file .csv or .jsonl, or pass --format"
        )
    return chosen


# Cells a spreadsheet would run as a formula (OWASP "CSV injection"): =, +, -, @, and the
# tab and carriage return that some programs skip before looking.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that would start a formula gets a leading apostrophe, as OWASP advises."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def write_export(rows: Iterator[dict[str, Any]], out: IO[str], *, fmt: str) -> int:
    """Write rows as CSV or JSON Lines; returns how many were written.

    CSV is for spreadsheets, so text cells that would run as formulas are neutralised there;
    JSON Lines keeps every value exactly as stored.
    """
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: spreadsheet_safe(value) for key, value in row.items()})
            count += 1
    else:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
