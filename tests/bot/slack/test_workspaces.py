"""Many workspaces, end to end: install over OAuth, per-workspace tokens, revocation."""

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore

from bot import outbox
from bot import tasks as task_ops
from bot.demo.simulator import SlackUser
from bot.demo.standin import SlackStandIn
from bot.runtime import Runtime, SlackSetupError, build_runtime, free_port
from bot.services import build_services
from bot.settings import Settings
from bot.states import PostingScope, PromptState
from bot.storage.schema import ReviewPrompt
from tests.bot.slack.conftest import wait_for

TEAM_A, TEAM_B = "T0ALPHA01", "T0BETA001"
CHANNEL_A, CHANNEL_B = "C0ALPHA01", "C0BETA001"


@dataclass
class Deployment:
    """One bot serving two workspaces of one stand-in Slack."""

    runtime: Runtime
    slack: SlackStandIn
    secret: str
    web: httpx.Client
    store: SQLAlchemyInstallationStore

    def user(self, team_id: str) -> SlackUser:
        """A person in workspace `team_id`."""
        return SlackUser(
            f"{self.runtime.url}/slack/events",
            self.secret,
            user_id="U0PERSON1",
            standin=self.slack,
            team_id=team_id,
            team_domain=team_id.lower(),
        )

    def install(self, team_id: str) -> httpx.Response:
        """A person opens /slack/install, approves in Slack, and comes back with a code."""
        page = self.web.get("/slack/install")
        assert page.status_code in (200, 302)
        state = page.cookies.get("slack-app-oauth-state")
        assert state
        assert f"state={state}" in page.text or state in page.headers.get("location", "")
        code = self.slack.issue_code(team_id)
        return self.web.get(
            "/slack/oauth_redirect",
            params={"code": code, "state": state},
            headers={"Cookie": f"slack-app-oauth-state={state}"},
        )

    def submit(self, task: str, text: str) -> None:
        """One item through the items API; untrained tasks send it to review."""
        response = self.web.post(
            f"/api/tasks/{task}/items",
            json={"items": [{"text": text}]},
            headers={"Authorization": "Bearer api-secret"},
        )
        assert response.status_code == 200, response.text

    def block_of(self, team_id: str) -> dict[str, Any]:
        """The posting state of the workspace's task channel."""
        channel = CHANNEL_A if team_id == TEAM_A else CHANNEL_B
        with self.runtime.services.sessions.begin() as session:
            return outbox.posting_state(session, channel, team_id=team_id)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    secret = secrets.token_hex(16)
    with SlackStandIn(rate_limit_per_channel=50.0) as slack:
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{tmp_path / 'bot.db'}",
            slack_signing_secret=secret,
            slack_api_url=slack.api_url,
            slack_client_id=slack.client_id,
            slack_client_secret=slack.client_secret,
            api_token="api-secret",
            digest_hour=None,  # the channels show prompts only, whatever the hour
        )
        services = build_services(settings)
        with services.sessions.begin() as session:
            for name, channel, team in (("alpha", CHANNEL_A, TEAM_A), ("beta", CHANNEL_B, TEAM_B)):
                task_ops.create_task(
                    session, name, ["yes", "no"], channel=channel, threshold=0.8, team_id=team
                )
        runtime = build_runtime(
            settings, services=services, host="127.0.0.1", port=free_port(), poster_interval=0.02
        )
        runtime.start(schedule=False)
        try:
            with httpx.Client(base_url=runtime.url, timeout=10) as web:
                store = SQLAlchemyInstallationStore(slack.client_id, engine=services.engine)
                yield Deployment(runtime, slack, secret, web, store)
        finally:
            runtime.stop()
            services.engine.dispose()


def tasks_reply(deployment: Deployment, team_id: str) -> str:
    """What `/hitl tasks` from workspace `team_id` answers, as one string."""
    sent = deployment.user(team_id).slash_command("tasks", channel_id="C0GENERAL")
    assert sent.status == 200
    assert sent.response_url is not None
    url = sent.response_url
    (reply,) = wait_for(lambda: deployment.slack.response_url_posts(url), 1)
    return str(reply)


def prompt_states(deployment: Deployment, channel: str) -> list[str]:
    """The states of the prompts of a channel's task."""
    with deployment.runtime.services.sessions.begin() as session:
        rows = session.query(ReviewPrompt).filter(ReviewPrompt.channel == channel).all()
        return [row.status for row in rows]


def test_install_flow_stores_each_workspace_bot_token(deployment: Deployment) -> None:
    """GET /slack/install hands out a state; the redirect with Slack's code stores the token."""
    answer = deployment.install(TEAM_A)
    assert answer.status_code == 200, answer.text
    (token,) = deployment.slack.tokens_of(TEAM_A)
    bot = deployment.store.find_bot(enterprise_id=None, team_id=TEAM_A)
    assert bot is not None
    assert bot.bot_token == token
    assert bot.bot_user_id == deployment.slack.bot_user_id
    assert deployment.store.find_bot(enterprise_id=None, team_id=TEAM_B) is None


def test_redirect_without_a_valid_state_stores_nothing(deployment: Deployment) -> None:
    """A code presented with a state the bot never issued is refused."""
    code = deployment.slack.issue_code(TEAM_A)
    answer = deployment.web.get(
        "/slack/oauth_redirect",
        params={"code": code, "state": "forged"},
        headers={"Cookie": "slack-app-oauth-state=forged"},
    )
    assert answer.status_code == 401  # Bolt's failure page for `invalid_state`
    assert deployment.store.find_bot(enterprise_id=None, team_id=TEAM_A) is None
    assert deployment.slack.calls("oauth.v2.access") == []


def test_hitl_tasks_lists_only_the_workspace_tasks(deployment: Deployment) -> None:
    """A signed `/hitl tasks` from workspace A shows A's task and not B's; and B's only B's."""
    deployment.install(TEAM_A)
    deployment.install(TEAM_B)
    from_a = tasks_reply(deployment, TEAM_A)
    assert "alpha" in from_a
    assert "beta" not in from_a
    from_b = tasks_reply(deployment, TEAM_B)
    assert "beta" in from_b
    assert "alpha" not in from_b


def test_a_named_task_of_another_workspace_is_unknown(deployment: Deployment) -> None:
    """`/hitl stats beta` from workspace A does not show B's task."""
    deployment.install(TEAM_A)
    sent = deployment.user(TEAM_A).slash_command("stats beta", channel_id="C0GENERAL")
    assert sent.response_url is not None
    url = sent.response_url
    (reply,) = wait_for(lambda: deployment.slack.response_url_posts(url), 1)
    assert "no task named 'beta'" in str(reply)
    assert "known tasks: alpha" in str(reply)


def test_each_prompt_is_posted_with_its_workspace_token(deployment: Deployment) -> None:
    """A prompt of B's task goes out with B's bot token, one of A's with A's."""
    deployment.install(TEAM_A)
    deployment.install(TEAM_B)
    (token_a,) = deployment.slack.tokens_of(TEAM_A)
    (token_b,) = deployment.slack.tokens_of(TEAM_B)
    deployment.submit("beta", "is this fine?")
    deployment.submit("alpha", "and this?")
    wait_for(lambda: deployment.slack.messages(CHANNEL_B), 1)
    wait_for(lambda: deployment.slack.messages(CHANNEL_A), 1)
    posts_b = deployment.slack.calls_with_token(token_b, "chat.postMessage")
    posts_a = deployment.slack.calls_with_token(token_a, "chat.postMessage")
    assert [call.params["channel"] for call in posts_b] == [CHANNEL_B]
    assert [call.params["channel"] for call in posts_a] == [CHANNEL_A]


def test_a_task_in_a_workspace_without_installation_waits(deployment: Deployment) -> None:
    """Nothing is installed in B: its prompt waits under a workspace block, A's goes out."""
    deployment.install(TEAM_A)
    deployment.submit("beta", "waiting")
    deployment.submit("alpha", "going")
    wait_for(lambda: deployment.slack.messages(CHANNEL_A), 1)
    wait_for(lambda: [1] if deployment.block_of(TEAM_B)["state"] == "blocked" else [], 1)
    assert deployment.block_of(TEAM_B)["reason"] == "not_installed"
    assert deployment.slack.messages(CHANNEL_B) == []
    deployment.install(TEAM_B)
    wait_for(lambda: deployment.slack.messages(CHANNEL_B), 1)
    assert deployment.block_of(TEAM_B) == {"state": "ok"}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["U0BOT"]}}, "tokens_revoked"),
        ({"type": "app_uninstalled"}, "app_uninstalled"),
    ],
)
def test_revocation_pauses_only_that_workspace(
    deployment: Deployment, event: dict[str, Any], reason: str
) -> None:
    """After A's revocation A's installation is gone and A's prompts wait; B posts on;
    installing A again posts A's waiting prompt with the new token."""
    deployment.install(TEAM_A)
    deployment.install(TEAM_B)
    delivered = deployment.user(TEAM_A).event(event)
    assert delivered.status == 200
    deadline = time.monotonic() + 10
    while deployment.store.find_bot(enterprise_id=None, team_id=TEAM_A) is not None:
        assert time.monotonic() < deadline, "the installation of A was not removed"
        time.sleep(0.05)
    assert deployment.block_of(TEAM_A) == {
        "state": "blocked",
        "reason": reason,
        "since": deployment.block_of(TEAM_A)["since"],
    }
    assert deployment.block_of(TEAM_B) == {"state": "ok"}
    assert deployment.store.find_bot(enterprise_id=None, team_id=TEAM_B) is not None

    deployment.submit("alpha", "held back")
    deployment.submit("beta", "goes out")
    wait_for(lambda: deployment.slack.messages(CHANNEL_B), 1)
    deployment.runtime.poster.wait_for_sends(5)
    assert deployment.slack.messages(CHANNEL_A) == []
    assert prompt_states(deployment, CHANNEL_A) == [PromptState.PENDING]
    assert deployment.block_of(TEAM_A)["reason"] == reason
    with deployment.runtime.services.sessions.begin() as session:
        scopes = {(b.scope, b.channel) for b in outbox.posting_blocks(session)}
    assert scopes == {(PostingScope.WORKSPACE, TEAM_A)}

    # The same event again (Slack retries) changes nothing.
    assert deployment.user(TEAM_A).event(event).status == 200
    assert deployment.block_of(TEAM_A)["reason"] == reason

    assert deployment.install(TEAM_A).status_code == 200
    (_, new_token) = deployment.slack.tokens_of(TEAM_A)
    wait_for(lambda: deployment.slack.messages(CHANNEL_A), 1)
    assert deployment.block_of(TEAM_A) == {"state": "ok"}
    posts = deployment.slack.calls_with_token(new_token, "chat.postMessage")
    assert [call.params["channel"] for call in posts] == [CHANNEL_A]


def test_multi_workspace_mode_needs_no_bot_token(tmp_path: Path) -> None:
    """With a client ID and secret, no SLACK_BOT_TOKEN; Socket Mode is refused."""
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'bot.db'}",
        slack_signing_secret="s",
        slack_client_id="1.2",
        slack_client_secret="client-secret-42",
        slack_app_token="xapp-1",
    )
    assert settings.multi_workspace
    assert settings.slack_bot_token is None
    services = build_services(settings)
    try:
        with pytest.raises(SlackSetupError, match="Socket Mode serves one workspace"):
            build_runtime(settings, services=services, host="127.0.0.1", port=free_port())
    finally:
        services.engine.dispose()
    assert "client-secret-42" not in repr(settings)
    assert "client-secret-42" not in str(settings.slack_client_secret)


def test_app_home_shows_only_the_workspace_tasks(deployment: Deployment) -> None:
    """Opening App Home in workspace B publishes B's task only, with B's token."""
    deployment.install(TEAM_A)
    deployment.install(TEAM_B)
    (token_b,) = deployment.slack.tokens_of(TEAM_B)
    assert deployment.user(TEAM_B).app_home_opened().status == 200
    (publish,) = wait_for(lambda: deployment.slack.calls("views.publish"), 1)
    assert publish.token == token_b
    shown = str(publish.params["view"])
    assert "beta" in shown
    assert "alpha" not in shown


def test_a_refused_workspace_token_blocks_that_workspace_only(deployment: Deployment) -> None:
    """Slack refusing A's token (no event came) blocks A's posting, not B's nor every channel."""
    deployment.install(TEAM_A)
    deployment.install(TEAM_B)
    deployment.slack.revoke_team(TEAM_A)
    deployment.submit("alpha", "refused")
    deployment.submit("beta", "accepted")
    wait_for(lambda: deployment.slack.messages(CHANNEL_B), 1)
    wait_for(lambda: [1] if deployment.block_of(TEAM_A)["state"] == "blocked" else [], 1)
    assert deployment.block_of(TEAM_A)["reason"] == "token_revoked"
    assert deployment.block_of(TEAM_B) == {"state": "ok"}
    health = deployment.runtime.poster.health()
    assert health["scope"] == PostingScope.WORKSPACE
    assert health["reason"] == "token_revoked"
    assert list(health["workspaces"]) == [TEAM_A]


def test_retrain_reports_go_out_with_the_task_workspace_token(deployment: Deployment) -> None:
    """The retrain report of B's task (here: a failure notice) is posted with B's token."""
    from bot.slack.reporting import publish_failure

    deployment.install(TEAM_A)
    deployment.install(TEAM_B)
    (token_b,) = deployment.slack.tokens_of(TEAM_B)
    publish_failure(deployment.runtime.deps, "beta", CHANNEL_B, "not enough answers")
    (post,) = deployment.slack.calls("chat.postMessage")
    assert post.token == token_b
    assert post.params["channel"] == CHANNEL_B
