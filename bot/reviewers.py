"""Figures per reviewer (answers, agreement with final labels and spot checks) and team agreement.

Only current answers count, and only people's: labels from `hitl import` are nobody's.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session, aliased

from bot.states import IMPORT_USER, AnswerKind, AnswerSource, LabelSource
from bot.storage.schema import Answer, Item, Prediction, Task
from model.intervals import Interval, clopper_pearson, cohen_kappa, krippendorff_alpha

COHEN_KAPPA = "cohen_kappa"
KRIPPENDORFF_ALPHA = "krippendorff_alpha"


def _share(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _bounds(interval: Interval) -> list[float] | None:
    # With no trials the interval is all of [0, 1] and says nothing; None keeps that plain.
    return [round(interval.low, 4), round(interval.high, 4)] if interval.n else None


@dataclass(frozen=True)
class ReviewerFigures:
    """One person's answers on a task and how often they agree with final and model labels."""

    user: str
    answers: int  # current label answers (Slack and spot checks; not imports, not skips)
    skips: int  # current skip answers
    resolved: int  # of their label answers, on items whose final label was given by people
    agree_final: float | None  # share of `resolved` where their label is the final label
    spot_checks: int  # spot-check items (Item.spot_check) they labelled
    # Share of `spot_checks` where their label is the model's automatic one (the item's first
    # prediction); a spot-check item with no stored prediction counts as not confirmed.
    agree_model_on_spot_checks: float | None
    agreed_final: int = 0  # the count behind `agree_final`
    confirmed_model: int = 0  # the count behind `agree_model_on_spot_checks`

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form; shares rounded to 4 decimals, with their exact 95% intervals."""
        return {
            "user": self.user,
            "answers": self.answers,
            "skips": self.skips,
            "resolved": self.resolved,
            "agree_final": _share(self.agree_final),
            "agree_final_interval": _bounds(clopper_pearson(self.agreed_final, self.resolved)),
            "spot_checks": self.spot_checks,
            "agree_model_on_spot_checks": _share(self.agree_model_on_spot_checks),
            "agree_model_on_spot_checks_interval": _bounds(
                clopper_pearson(self.confirmed_model, self.spot_checks)
            ),
        }


@dataclass(frozen=True)
class TeamAgreement:
    """Chance-corrected agreement of the people who labelled the same items."""

    raters: int  # people with a label answer on an item someone else also labelled
    items: int  # items labelled by at least two people
    # "cohen_kappa" for exactly two raters, "krippendorff_alpha" for more, None with no
    # shared item. The value is None where the measure is undefined (a single label used).
    measure: str | None
    value: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form; the value rounded to 4 decimals."""
        return {
            "raters": self.raters,
            "items": self.items,
            "measure": self.measure,
            "value": _share(self.value),
        }


@dataclass(frozen=True)
class ReviewerReport:
    """Every reviewer of a task, most answers first, and the team's agreement."""

    task: str
    reviewers: list[ReviewerFigures]
    agreement: TeamAgreement

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: `{task, reviewers: [...], agreement: {...}}`."""
        return {
            "task": self.task,
            "reviewers": [reviewer.as_dict() for reviewer in self.reviewers],
            "agreement": self.agreement.as_dict(),
        }


def _people_answers(task: Task, since: datetime | None) -> ColumnElement[bool]:
    """Current answers of `task` by people (given after `since`, if set)."""
    conditions = [
        Item.task_id == task.id,
        Answer.is_current.is_(True),
        Answer.source != AnswerSource.IMPORT,
        Answer.user_id != IMPORT_USER,
    ]
    if since is not None:
        conditions.append(Answer.created_at > since)
    return and_(*conditions)


def _tally(condition: ColumnElement[bool]) -> Any:
    return func.sum(case((condition, 1), else_=0))


def _reviewer_figures(
    session: Session, task: Task, people: ColumnElement[bool]
) -> list[ReviewerFigures]:
    # The model's automatic label is the one it gave when the item was routed: the first
    # prediction (later ones are re-scores). Only spot-check items need it.
    first = (
        select(Prediction.item_id, func.min(Prediction.id).label("prediction_id"))
        .join(Item, Item.id == Prediction.item_id)
        .where(Item.task_id == task.id, Item.spot_check.is_(True))
        .group_by(Prediction.item_id)
        .subquery("first_prediction")
    )
    routing = aliased(Prediction, name="routing_prediction")
    label = Answer.kind == AnswerKind.LABEL
    resolved = and_(label, Item.final_source == LabelSource.PERSON)
    spot_check = and_(label, Item.spot_check.is_(True))
    rows = session.execute(
        select(
            Answer.user_id,
            _tally(label),
            _tally(Answer.kind == AnswerKind.SKIP),
            _tally(resolved),
            _tally(and_(resolved, Answer.label == Item.final_label)),
            _tally(spot_check),
            _tally(and_(spot_check, Answer.label == routing.label)),
        )
        .join(Item, Item.id == Answer.item_id)
        .outerjoin(first, first.c.item_id == Answer.item_id)
        .outerjoin(routing, routing.id == first.c.prediction_id)
        .where(people)
        .group_by(Answer.user_id)
    ).all()
    figures = []
    for user, answers, skips, on_resolved, agreed, checks, confirmed in rows:
        on_resolved, agreed = int(on_resolved or 0), int(agreed or 0)
        checks, confirmed = int(checks or 0), int(confirmed or 0)
        figures.append(
            ReviewerFigures(
                user=str(user),
                answers=int(answers or 0),
                skips=int(skips or 0),
                resolved=on_resolved,
                agree_final=clopper_pearson(agreed, on_resolved).estimate,
                spot_checks=checks,
                agree_model_on_spot_checks=clopper_pearson(confirmed, checks).estimate,
                agreed_final=agreed,
                confirmed_model=confirmed,
            )
        )
    return sorted(figures, key=lambda f: (-f.answers, f.user))


def _team_agreement(session: Session, people: ColumnElement[bool]) -> TeamAgreement:
    labels = and_(people, Answer.kind == AnswerKind.LABEL, Answer.label.is_not(None))
    shared = (
        select(Answer.item_id)
        .join(Item, Item.id == Answer.item_id)
        .where(labels)
        .group_by(Answer.item_id)
        .having(func.count(func.distinct(Answer.user_id)) >= 2)
    )
    rows = session.execute(
        select(Answer.item_id, Answer.user_id, Answer.label)
        .join(Item, Item.id == Answer.item_id)
        .where(labels, Answer.item_id.in_(shared))
        .order_by(Answer.item_id, Answer.user_id)
    ).all()
    units: dict[int, dict[str, str]] = defaultdict(dict)
    for item_id, user, label in rows:
        units[int(item_id)][str(user)] = str(label)
    raters = sorted({user for unit in units.values() for user in unit})
    if not units:
        return TeamAgreement(raters=0, items=0, measure=None, value=None)
    if len(raters) == 2:
        # Every shared item has two raters out of these two, so both labelled each of them.
        first, second = raters
        value = cohen_kappa(
            [unit[first] for unit in units.values()], [unit[second] for unit in units.values()]
        )
        return TeamAgreement(raters=2, items=len(units), measure=COHEN_KAPPA, value=value)
    value = krippendorff_alpha([list(unit.values()) for unit in units.values()])
    return TeamAgreement(
        raters=len(raters), items=len(units), measure=KRIPPENDORFF_ALPHA, value=value
    )


def reviewer_report(
    session: Session, task: Task, *, since: datetime | None = None
) -> ReviewerReport:
    """Per-reviewer figures and team agreement of `task`, from answers given after `since`."""
    people = _people_answers(task, since)
    return ReviewerReport(
        task=task.name,
        reviewers=_reviewer_figures(session, task, people),
        agreement=_team_agreement(session, people),
    )
