"""Installing the app in many workspaces: Bolt's OAuth flow on the bot's own database.

With `SLACK_CLIENT_ID` and `SLACK_CLIENT_SECRET` set, a workspace installs the app at
`/slack/install`; Slack sends the person back to `/slack/oauth_redirect`, where Bolt trades the
code for the workspace's bot token (`oauth.v2.access`) and keeps it in slack_sdk's
`SQLAlchemyInstallationStore`. The OAuth `state` lives in `SQLAlchemyOAuthStateStore`, so no
state secret is needed and every replica accepts every redirect. Both stores use the tables of
migration 0007.
"""

import logging

from slack_bolt import BoltResponse
from slack_bolt.oauth.callback_options import CallbackOptions, FailureArgs, SuccessArgs
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from bot import outbox
from bot.settings import Settings
from bot.states import PostingScope

logger = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
# The bot scopes of manifest.yml (tests/test_manifest.py keeps the two in step).
BOT_SCOPES = ("chat:write", "commands", "files:write", "channels:history", "groups:history")
# How long a person has between opening /slack/install and approving in Slack.
STATE_SECONDS = 600


def installation_store(settings: Settings, engine: Engine) -> SQLAlchemyInstallationStore:
    """slack_sdk's installation store on the bot's database (tables of migration 0007)."""
    if not settings.slack_client_id:
        raise ValueError("the installation store needs SLACK_CLIENT_ID")
    return SQLAlchemyInstallationStore(client_id=settings.slack_client_id, engine=engine)


def oauth_settings(
    settings: Settings,
    *,
    store: SQLAlchemyInstallationStore,
    engine: Engine,
    sessions: sessionmaker[Session],
) -> OAuthSettings:
    """Bolt's OAuth settings: the install and redirect paths, the scopes, both stores."""
    secret = settings.slack_client_secret
    if not settings.slack_client_id or secret is None:
        raise ValueError("OAuth needs SLACK_CLIENT_ID and SLACK_CLIENT_SECRET")

    def installed(args: SuccessArgs) -> BoltResponse:
        team_id = args.installation.team_id
        if team_id:
            # Installing again is how a revoked or uninstalled workspace comes back.
            with sessions.begin() as session:
                lifted = outbox.unblock_posting(session, PostingScope.WORKSPACE, channel=team_id)
            if lifted is not None:
                logger.info(
                    "posting to workspace %s resumed: the app was installed again (%s since %s)",
                    team_id,
                    lifted.reason,
                    lifted.since.isoformat(timespec="seconds"),
                )
        logger.info("installed in workspace %s (%s)", team_id, args.installation.team_name)
        return args.default.success(args)

    def failed(args: FailureArgs) -> BoltResponse:
        logger.warning("an installation failed: %s", args.reason)
        return args.default.failure(args)

    return OAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=secret.get_secret_value(),
        scopes=list(BOT_SCOPES),
        install_path=INSTALL_PATH,
        redirect_uri_path=REDIRECT_PATH,
        installation_store=store,
        installation_store_bot_only=True,
        state_store=SQLAlchemyOAuthStateStore(expiration_seconds=STATE_SECONDS, engine=engine),
        state_expiration_seconds=STATE_SECONDS,
        callback_options=CallbackOptions(success=installed, failure=failed),
    )
