"""The database schema: one DeclarativeBase, SQLAlchemy 2.0 typed mappings."""

from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column, relationship

from bot.states import AnswerKind, AnswerSource, DeliveryState, PromptState


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


IntPK = Annotated[int, mapped_column(Integer, primary_key=True)]
Timestamp = Annotated[datetime, mapped_column(UTCDateTime(), default=utcnow)]
SlackUser = Annotated[str, mapped_column(String(64))]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every mapped class."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        datetime: UTCDateTime(),
    }


class Task(Base):
    """A classification task: its ordered label set, review channel and threshold."""

    __tablename__ = "task"

    id: Mapped[IntPK]
    name: Mapped[str] = mapped_column(String(80), unique=True)
    labels: Mapped[list[str]]
    channel: Mapped[str | None] = mapped_column(String(32))
    # The Slack workspace (T…) the channel is in; None in single-workspace mode.
    team_id: Mapped[str | None] = mapped_column(String(32), index=True)
    threshold: Mapped[float] = mapped_column(Float)
    featurizer: Mapped[str] = mapped_column(String(40), default="tfidf")
    # Precision mode: the threshold is chosen at each retrain so that automatic answers reach
    # this precision with high confidence; None means the threshold is set by hand.
    target_precision: Mapped[float | None] = mapped_column(Float)
    # The lower confidence bound behind the chosen threshold; None while the evidence cannot
    # support the target (then nothing is automated).
    precision_lower_bound: Mapped[float | None] = mapped_column(Float)
    threshold_evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # When the current threshold took effect: spot checks since then measure it.
    threshold_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Share of automatic answers also posted for a person to check, without the model's guess.
    spot_check_rate: Mapped[float] = mapped_column(Float, default=0.02, server_default="0.02")
    # Agreeing answers needed before a person's label is final.
    votes_required: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # When the channel was told that spot checks show precision below the target.
    precision_alert_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Prompts posted per day (in HITL_TIMEZONE) at most; None: no limit. The rest wait, ranked.
    daily_budget: Mapped[int | None] = mapped_column(Integer)
    # The local day whose digest of waiting items was sent (or claimed by a poster sending it).
    digest_on: Mapped[date | None] = mapped_column(Date)
    # Where each resolved item's result is POSTed (`bot.webhooks`), and the key that signs it.
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    webhook_secret: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp] = mapped_column(onupdate=utcnow)

    def __repr__(self) -> str:
        return f"Task(id={self.id!r}, name={self.name!r}, labels={len(self.labels)})"


class Item(Base):
    """A text submitted for classification, with its current route and final label."""

    __tablename__ = "item"
    __table_args__ = (
        UniqueConstraint("task_id", "external_id", name="uq_item_task_external"),
        Index("ix_item_task_submitted", "task_id", "submitted_at"),
        Index("ix_item_task_route_final", "task_id", "route", "final_source"),
    )

    id: Mapped[IntPK]
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    external_id: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    submitted_at: Mapped[Timestamp]
    # Denormalised from the latest prediction and answers so that queues and stats stay cheap.
    route: Mapped[str | None] = mapped_column(String(16))
    final_label: Mapped[str | None] = mapped_column(String(200))
    final_source: Mapped[str | None] = mapped_column(String(16))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Who sent it from Slack ("Send to hitl"): told when a reviewer answers.
    requested_by: Mapped[str | None] = mapped_column(String(64))
    # Resolved automatically and also posted for a person to check (without the model's guess).
    spot_check: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Agreeing answers this item needs, when more than its task's (a second opinion).
    votes_required: Mapped[int | None] = mapped_column(Integer)
    # When the reviewers' disagreement was sent to the admins.
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    task: Mapped[Task] = relationship()

    def __repr__(self) -> str:
        return f"Item(id={self.id!r}, task_id={self.task_id!r}, route={self.route!r})"


class ModelVersion(Base):
    """A trained model of a task, its metrics and its serialized artifact."""

    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("task_id", "version", name="uq_model_version_task_version"),)

    id: Mapped[IntPK]
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[Timestamp]
    train_size: Mapped[int] = mapped_column(Integer)
    featurizer: Mapped[str] = mapped_column(String(40))
    metrics: Mapped[dict[str, Any]]
    artifact_meta: Mapped[dict[str, Any]]
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    artifact: Mapped[bytes] = deferred(mapped_column(LargeBinary))
    # A pinned version keeps its artifact when old versions are pruned.
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    def __repr__(self) -> str:
        return f"ModelVersion(task_id={self.task_id!r}, version={self.version!r}, {self.status})"


class Prediction(Base):
    """One scoring of an item by a model version (or by nobody, at cold start)."""

    __tablename__ = "prediction"

    id: Mapped[IntPK]
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    label: Mapped[str | None] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[list[float] | None] = mapped_column(JSON)
    route: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[Timestamp]

    def __repr__(self) -> str:
        return f"Prediction(item_id={self.item_id!r}, label={self.label!r}, {self.confidence:.3f})"


class Answer(Base):
    """A person's (or an import's) label for an item; superseded answers stay as history."""

    __tablename__ = "answer"
    __table_args__ = (
        Index(
            "uq_answer_current",
            "item_id",
            "user_id",
            unique=True,
            sqlite_where=text("is_current"),
            postgresql_where=text("is_current"),
        ),
    )

    id: Mapped[IntPK]
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[SlackUser]
    kind: Mapped[str] = mapped_column(String(8), default=AnswerKind.LABEL)
    source: Mapped[str] = mapped_column(
        String(16), default=AnswerSource.SLACK, server_default=AnswerSource.SLACK.value
    )
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[Timestamp]
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"Answer(item_id={self.item_id!r}, user={self.user_id!r}, label={self.label!r})"


class ReviewPrompt(Base):
    """Durable outbox: one Slack prompt per review item, sent by the poster."""

    __tablename__ = "review_prompt"
    __table_args__ = (Index("ix_review_prompt_pending", "status", "next_attempt_at"),)

    id: Mapped[IntPK]
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=PromptState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[Timestamp]
    channel: Mapped[str | None] = mapped_column(String(32))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Start of the earliest attempt whose outcome is unknown (a timeout, a dropped connection, a
    # poster killed mid-send): Slack may hold that message, so look before posting again.
    unconfirmed_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Its item's task, copied so that a task's queue is one index range (the row goes with the
    # item); None only for prompts queued before revision 0009 that had no item any more.
    task_id: Mapped[int | None] = mapped_column(Integer)
    # The order people are asked in, highest first (ties: oldest): uncertainty, spread, age
    # (`bot.queue`); 0 without a model, so arrival order.
    priority: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # When Slack last took a message of it (the first post, or its re-post): budgets count it.
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When an unanswered prompt was queued to be posted once more (it never is again).
    reposted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Its message shows an outdated state (an answer from `hitl import`): the poster redraws it.
    redraw_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    # While `sending`: the replica that holds it, and until when; after that another replica
    # may take it over (the holder died mid-send). Empty for claims older than revision 0011.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp] = mapped_column(onupdate=utcnow)

    def __repr__(self) -> str:
        return f"ReviewPrompt(item_id={self.item_id!r}, status={self.status!r})"


# "The next prompts of a task": pending ones by priority, highest first, ties oldest first.
Index(
    "ix_review_prompt_queue",
    ReviewPrompt.task_id,
    ReviewPrompt.status,
    ReviewPrompt.priority.desc(),
    ReviewPrompt.id,
)
# Prompts a task posted since the start of the day (its budget), and the oldest unanswered.
Index("ix_review_prompt_task_posted", ReviewPrompt.task_id, ReviewPrompt.posted_at)


class WebhookDelivery(Base):
    """Durable outbox of webhook events: one row per result of an item, sent by `bot.webhooks`.

    Written in the transaction that resolves the item, so a result is never lost; the body is
    the event as it happened (a later correction is a new row, with the next `sequence`).
    """

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("item_id", "sequence", name="uq_webhook_delivery_item_sequence"),
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_task_status", "task_id", "status"),
    )

    id: Mapped[IntPK]
    # The idempotency key receivers see (`X-Hitl-Delivery`): the same on every retry.
    delivery_id: Mapped[str] = mapped_column(String(32), unique=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"))
    # The item's events are numbered 1, 2, …: event n+1 waits until event n is delivered.
    sequence: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[Timestamp]
    # While a worker sends it: which one, and until when (then another may take it over).
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[Timestamp]
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return (
            f"WebhookDelivery(item_id={self.item_id!r}, #{self.sequence}, {self.status}, "
            f"attempts={self.attempts})"
        )


class AuditLog(Base):
    """Who changed which setting, from what to what, and when."""

    __tablename__ = "audit_log"

    id: Mapped[IntPK]
    task_id: Mapped[int | None] = mapped_column(ForeignKey("task.id", ondelete="SET NULL"))
    actor: Mapped[SlackUser]
    field: Mapped[str] = mapped_column(String(64))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    at: Mapped[Timestamp]

    def __repr__(self) -> str:
        return f"AuditLog({self.actor!r} {self.field}: {self.old_value!r} -> {self.new_value!r})"


class RetrainRun(Base):
    """One retrain of one task: who claimed it, how it ended, and the report it produced."""

    __tablename__ = "retrain_run"
    __table_args__ = (
        # Two schedulers on one database both try to claim the same nightly slot; one wins.
        UniqueConstraint("task_id", "scheduled_for", name="uq_retrain_run_task_slot"),
        Index("ix_retrain_run_task_started", "task_id", "started_at"),
    )

    id: Mapped[IntPK]
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(16))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str] = mapped_column(String(120))
    started_at: Mapped[Timestamp]
    heartbeat_at: Mapped[Timestamp]
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    old_version: Mapped[int | None] = mapped_column(Integer)
    new_version: Mapped[int | None] = mapped_column(Integer)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"RetrainRun(task_id={self.task_id!r}, {self.trigger}, {self.status})"


class PostingBlock(Base):
    """Posting to Slack is stopped, for every channel (a refused token) or for one channel.

    Kept in the database so that the CLI (another process) can show it and several posters
    agree on it: one of them probes at `next_probe_at`, and the first post that gets through
    removes the row.
    """

    __tablename__ = "posting_block"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    # The channel a channel block stops; "" for a token block, which stops them all.
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64))
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    next_probe_at: Mapped[datetime] = mapped_column(UTCDateTime())
    probes: Mapped[int] = mapped_column(Integer, default=0)

    def __repr__(self) -> str:
        where = self.channel or "every channel"
        return (
            f"PostingBlock({self.scope} {where}: {self.reason!r} since {self.since:%Y-%m-%d %H:%M})"
        )


class ChannelTurn(Base):
    """When a channel may take its next message: shared, so that several replicas together keep
    Slack's pace of about one message a second per channel (`outbox.take_turn`)."""

    __tablename__ = "channel_turn"

    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_at: Mapped[datetime] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"ChannelTurn({self.channel} at {self.next_at:%H:%M:%S.%f})"


class TextVector(Base):
    """A text's sentence embedding under one embedding model, kept so retrains reuse it.

    Keys only, no text: the item rows hold the texts, and a deleted task leaves nothing here
    that could be read back (`bot/vectors.py` writes and reads these rows).
    """

    __tablename__ = "text_vector"

    # `model.embeddings.ModelFiles.key`: sha256 of the model's files and how they are run.
    model_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # `model.embeddings.text_key`: sha256 of the text as embedded.
    text_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    # float32, little-endian.
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[Timestamp]

    def __repr__(self) -> str:
        return f"TextVector(model={self.model_key[:12]}…, text={self.text_key[:12]}…)"
