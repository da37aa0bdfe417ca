"""Every state a stored row can be in, in one place (the database keeps their string values)."""

from enum import StrEnum
from typing import Final

# The user id recorded on answers that came from `hitl import`, not from a person in Slack.
IMPORT_USER: Final = "import"


class Route(StrEnum):
    """Where an item went after it was scored."""

    AUTO = "auto"  # confident enough: the model's label is final
    REVIEW = "review"  # below the threshold: a person is asked


class LabelSource(StrEnum):
    """Who gave an item its final label."""

    MODEL = "model"
    PERSON = "person"


class AnswerKind(StrEnum):
    """What an answer row says about its item."""

    LABEL = "label"
    SKIP = "skip"


class AnswerSource(StrEnum):
    """Where a stored answer came from; every label is counted once, under its source."""

    SLACK = "slack"  # a click on a review prompt
    IMPORT = "import"  # `hitl import` of labelled examples
    SPOT_CHECK = "spot_check"  # a person re-checking an automatic answer


class PromptState(StrEnum):
    """The outbox life of a review prompt: pending → sending → posted → answered / resolved.

    `failed` is for a message Slack refuses as malformed; only `bot.outbox` moves prompts
    between states.
    """

    PENDING = "pending"
    SENDING = "sending"
    POSTED = "posted"
    ANSWERED = "answered"  # a person answered it
    RESOLVED = "resolved"  # a newer model became sure enough and resolved it
    FAILED = "failed"


class DeliveryState(StrEnum):
    """The outbox life of a webhook event: pending → delivered, or failed after a day of
    retries, or cancelled when its task's webhook is removed (only `bot.webhooks` moves them)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PostingScope(StrEnum):
    """What a posting block stops: every post (Slack refuses the token) or one channel's."""

    TOKEN = "token"
    CHANNEL = "channel"
    # One workspace's installation (multi-workspace mode): its `channel` is the team ID.
    WORKSPACE = "workspace"


class RunStatus(StrEnum):
    """How a retrain run ended (or that it is still running)."""

    RUNNING = "running"
    PROMOTED = "promoted"
    KEPT = "kept"
    SKIPPED = "skipped"
    COLD = "cold"  # not enough answers for a first model
    FAILED = "failed"
    CLAIMED = "claimed_elsewhere"  # another scheduler owns this slot


class ModelStatus(StrEnum):
    """The life of a stored model version."""

    ACTIVE = "active"
    REJECTED = "rejected"
    RETIRED = "retired"
