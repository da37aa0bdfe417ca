"""Errors a user can cause, each with a message that says what to do."""


class HitlError(Exception):
    """Base class for every error hitl-bot reports to a user in one line."""

    exit_code = 1


class BadInputError(HitlError):
    """Input that cannot be accepted (malformed CSV, unknown label, bad threshold...)."""

    exit_code = 2


class NotFoundError(HitlError):
    """A named thing (task, item, model version) does not exist."""

    exit_code = 2


class ConflictError(HitlError):
    """The request contradicts stored data (e.g. an id reused with a different text)."""

    exit_code = 2


class UnavailableError(HitlError):
    """Something the request needs is missing here (e.g. the task's embedding model)."""

    exit_code = 1


class SchemaError(BadInputError):
    """A request body that is valid JSON but not the shape the API takes (HTTP 422)."""
