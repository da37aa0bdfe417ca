"""Read-only look-ups of items, predictions and answers that several parts of the bot share."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from bot.errors import NotFoundError
from bot.ingest import is_encodable
from bot.states import IMPORT_USER, AnswerKind, AnswerSource, LabelSource, Route
from bot.storage.schema import Answer, Item, ModelVersion, Prediction, Task

_LOOKUP_CHUNK = 500
# Internal ids are 32-bit integers on PostgreSQL; a larger number names no item.
MAX_ITEM_ID = 2**31 - 1


def find_by_external_ids(session: Session, task: Task, ids: Sequence[str]) -> dict[str, Item]:
    """The task's items with these external ids, keyed by external id."""
    found: dict[str, Item] = {}
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        query = select(Item).where(Item.task_id == task.id, Item.external_id.in_(chunk))
        found.update(
            {item.external_id: item for item in session.scalars(query) if item.external_id}
        )
    return found


def find_item(session: Session, task: Task, key: str) -> Item:
    """An item of `task` by external id, or by internal id written `#123`."""
    query = select(Item).where(Item.task_id == task.id)
    if key.startswith("#") and key[1:].isascii() and key[1:].isdigit():
        number = int(key[1:]) if len(key) <= 12 else MAX_ITEM_ID + 1
        if number > MAX_ITEM_ID:
            raise NotFoundError(f"task {task.name!r} has no item with id {key[:40]!r}")
        query = query.where(Item.id == number)
    elif "\x00" in key or not is_encodable(key):
        raise NotFoundError(f"task {task.name!r} has no item with id {key[:40]!r}")
    else:
        query = query.where(Item.external_id == key)
    item = session.scalar(query)
    if item is None:
        raise NotFoundError(f"task {task.name!r} has no item with id {key!r}")
    return item


def latest_prediction(session: Session, item_id: int) -> tuple[Prediction | None, int | None]:
    """An item's most recent prediction and the version of the model that made it."""
    row = session.execute(
        select(Prediction, ModelVersion.version)
        .outerjoin(ModelVersion, ModelVersion.id == Prediction.model_version_id)
        .where(Prediction.item_id == item_id)
        .order_by(Prediction.id.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else (None, None)


@dataclass(frozen=True)
class AnswerRecord:
    """One answer in an item's history."""

    label: str | None  # None for a skip
    user: str
    at: datetime
    source: str
    kind: str
    current: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: `{label, user, at, source, kind, current}`."""
        return {
            "label": self.label,
            "user": self.user,
            "at": self.at.isoformat(),
            "source": self.source,
            "kind": self.kind,
            "current": self.current,
        }


def answer_history(session: Session, item_ids: Sequence[int]) -> dict[int, list[AnswerRecord]]:
    """Every answer (superseded ones too) of these items, oldest first, keyed by item id."""
    history: dict[int, list[AnswerRecord]] = {}
    for start in range(0, len(item_ids), _LOOKUP_CHUNK):
        chunk = item_ids[start : start + _LOOKUP_CHUNK]
        rows = session.scalars(
            select(Answer).where(Answer.item_id.in_(chunk)).order_by(Answer.created_at, Answer.id)
        )
        for answer in rows:
            history.setdefault(answer.item_id, []).append(
                AnswerRecord(
                    label=answer.label,
                    user=answer.user_id,
                    at=answer.created_at,
                    source=answer.source,
                    kind=answer.kind,
                    current=answer.is_current,
                )
            )
    return history


class Vote(Protocol):
    """What deciding an item's label needs of an answer (a stored row or a history record)."""

    @property
    def kind(self) -> str: ...

    @property
    def label(self) -> str | None: ...


V = TypeVar("V", bound=Vote)


def decide_final(answers: Sequence[V]) -> V | None:
    """The answer that decides an item's label: the majority, ties going to the latest."""
    labelled = [a for a in answers if a.kind == AnswerKind.LABEL and a.label is not None]
    if not labelled:
        return None
    counts = Counter(a.label for a in labelled)
    best = max(counts.values())
    return [a for a in labelled if counts[a.label] == best][-1]


def deciding_answer(item: Item, history: Sequence[AnswerRecord]) -> AnswerRecord | None:
    """The answer that gave a person-labelled item its final label (see `decide_final`)."""
    if item.final_source != LabelSource.PERSON:
        return None
    current = [a for a in history if a.current]
    decided = decide_final(current)
    if decided is not None and decided.label == item.final_label:
        return decided
    # Votes, an admin's decision or an import decided otherwise: the latest answer giving the
    # final label is the one that settled it.
    giving = [a for a in current if a.kind == AnswerKind.LABEL and a.label == item.final_label]
    return giving[-1] if giving else None


def item_status(item: Item) -> str:
    """`resolved`, `waiting_for_review`, or `unrouted` (imported examples)."""
    if item.final_source is not None:
        return "resolved"
    if item.route == Route.REVIEW:
        return "waiting_for_review"
    return "unrouted"


def item_details(session: Session, task: Task, key: str) -> dict[str, Any]:
    """An item as the items API shows it: route, final label, who decided it, and its history."""
    item = find_item(session, task, key)
    prediction, version = latest_prediction(session, item.id)
    history = answer_history(session, [item.id]).get(item.id, [])
    decided = deciding_answer(item, history)
    return {
        "item_id": item.id,
        "id": item.external_id,
        "status": item_status(item),
        "route": item.route,
        "final_label": item.final_label,
        "label_source": item.final_source,
        "answered_by": decided.user if decided else None,
        "answered_at": decided.at.isoformat() if decided else None,
        "resolved_at": item.resolved_at.isoformat() if item.resolved_at else None,
        "predicted_label": prediction.label if prediction else None,
        "confidence": prediction.confidence if prediction else None,
        "model_version": version,
        "answers": [record.as_dict() for record in history],
    }


@dataclass(frozen=True)
class LabelCounts:
    """Stored labels of a task, each counted once under where it came from."""

    slack: int
    imported: int
    spot_check: int
    people: int  # distinct people who answered in Slack or by spot check

    @property
    def total(self) -> int:
        """Every stored label."""
        return self.slack + self.imported + self.spot_check

    def breakdown(self) -> str:
        """Like "3 from Slack by 2 people, 10 imported[, 1 spot checks]": one wording for all."""
        parts = [f"{self.slack} from Slack by {self.people} people", f"{self.imported} imported"]
        if self.spot_check:
            parts.append(f"{self.spot_check} spot checks")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, int]:
        """JSON-ready form, keyed by answer source."""
        return {
            AnswerSource.SLACK.value: self.slack,
            AnswerSource.IMPORT.value: self.imported,
            AnswerSource.SPOT_CHECK.value: self.spot_check,
            "total": self.total,
            "people": self.people,
        }


def label_counts(session: Session, task: Task, *, since: datetime | None = None) -> LabelCounts:
    """Current label answers of `task` (given after `since`, if set), by source.

    A person who changes an answer still counts once: superseded answers are history, and
    skips are not labels.
    """
    conditions = [
        Item.task_id == task.id,
        Answer.kind == AnswerKind.LABEL,
        Answer.is_current.is_(True),
    ]
    if since is not None:
        conditions.append(Answer.created_at > since)
    where = and_(*conditions)
    by_source = dict(
        session.execute(
            select(Answer.source, func.count())
            .join(Item, Item.id == Answer.item_id)
            .where(where)
            .group_by(Answer.source)
        ).all()
    )
    people = session.scalar(
        select(func.count(func.distinct(Answer.user_id)))
        .join(Item, Item.id == Answer.item_id)
        .where(where, Answer.source != AnswerSource.IMPORT, Answer.user_id != IMPORT_USER)
    )
    return LabelCounts(
        slack=int(by_source.get(AnswerSource.SLACK, 0)),
        imported=int(by_source.get(AnswerSource.IMPORT, 0)),
        spot_check=int(by_source.get(AnswerSource.SPOT_CHECK, 0)),
        people=int(people or 0),
    )


RECENT_LIMIT = 20_000


def recent_texts(session: Session, task: Task, *, since: datetime) -> list[str]:
    """Texts of items submitted since `since` (not imports), newest first, capped."""
    return list(
        session.scalars(
            select(Item.text)
            .where(Item.task_id == task.id, Item.source != "import", Item.submitted_at >= since)
            .order_by(Item.id.desc())
            .limit(RECENT_LIMIT)
        )
    )
