"""manifest.yml follows Slack's app manifest schema and declares what the code uses, no more."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.slack import ids

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifest.yml"

# Slack Web API methods the app calls, by the Python client's method name, with the bot scope
# each needs (None: no scope). `files_upload_v2` is two API methods, both under files:write.
METHOD_SCOPES: dict[str, tuple[str, str | tuple[str, ...] | None]] = {
    "chat_postMessage": ("chat.postMessage", "chat:write"),
    "chat_update": ("chat.update", "chat:write"),
    "chat_postEphemeral": ("chat.postEphemeral", "chat:write"),
    "files_upload_v2": ("files.getUploadURLExternal + files.completeUploadExternal", "files:write"),
    "files_getUploadURLExternal": ("files.getUploadURLExternal", "files:write"),
    "files_completeUploadExternal": ("files.completeUploadExternal", "files:write"),
    "views_publish": ("views.publish", None),
    "views_open": ("views.open", None),
    # Task channels may be public or private: each kind has its own history scope.
    "conversations_history": ("conversations.history", ("channels:history", "groups:history")),
    "auth_test": ("auth.test", None),
}
# Registering a slash command needs this scope, whatever the methods.
COMMAND_SCOPE = "commands"
# Method families of the Web API, to tell Slack calls from other `client.x(...)` calls.
_API_CALL = re.compile(
    r"client\.((?:admin|apps|assistant|auth|bookmarks|bots|calls|canvases|chat|conversations|dnd"
    r"|emoji|files|functions|pins|reactions|reminders|search|stars|team|usergroups|users|views)"
    r"_\w+)\("
)
# The Slack stand-in and the user simulator play Slack and its users; they are not the app.
_NOT_THE_APP = {"standin.py", "simulator.py"}

_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def app_sources() -> list[Path]:
    return [p for p in sorted((ROOT / "bot").rglob("*.py")) if p.name not in _NOT_THE_APP]


def called_methods() -> set[str]:
    """Web API methods called through a client anywhere in the app's code."""
    found: set[str] = set()
    for path in app_sources():
        found.update(_API_CALL.findall(path.read_text(encoding="utf-8")))
    return found


def listened_events() -> set[str]:
    found: set[str] = set()
    for path in app_sources():
        found.update(re.findall(r"\.event\(\s*[\"'](\w+)[\"']", path.read_text(encoding="utf-8")))
    return found


def text_within(value: Any, low: int, high: int) -> bool:
    return isinstance(value, str) and low <= len(value) <= high


def test_top_level_sections_are_known(manifest: dict[str, Any]) -> None:
    """Only sections the v1 schema knows; display_information is required."""
    allowed = {"_metadata", "display_information", "features", "oauth_config", "settings"}
    assert set(manifest) <= allowed
    assert "display_information" in manifest


def test_display_information(manifest: dict[str, Any]) -> None:
    """Name ≤ 35, description ≤ 140, long description 175-4000, a hex background colour."""
    info = manifest["display_information"]
    assert set(info) <= {"name", "description", "background_color", "long_description"}
    assert text_within(info["name"], 1, 35)
    assert text_within(info["description"], 1, 140)
    assert text_within(info["long_description"], 175, 4000)
    assert _HEX_COLOUR.fullmatch(info["background_color"])


def test_bot_user_and_app_home(manifest: dict[str, Any]) -> None:
    """A bot user that is always online; the Home tab on, the Messages tab read-only."""
    features = manifest["features"]
    bot_user = features["bot_user"]
    assert text_within(bot_user["display_name"], 1, 80)
    assert bot_user["always_online"] is True
    home = features["app_home"]
    assert home["home_tab_enabled"] is True
    assert home["messages_tab_enabled"] is True and home["messages_tab_read_only_enabled"] is True
    assert all(isinstance(value, bool) for value in home.values())


def test_slash_commands_follow_the_schema(manifest: dict[str, Any]) -> None:
    """Each command: "/name" of 2-32 characters, a description, a usage hint, an https URL."""
    commands = manifest["features"]["slash_commands"]
    assert isinstance(commands, list) and 1 <= len(commands) <= 50
    for command in commands:
        assert set(command) <= {"command", "url", "description", "usage_hint", "should_escape"}
        assert text_within(command["command"], 2, 32) and command["command"].startswith("/")
        assert text_within(command["description"], 1, 2000)
        assert text_within(command["usage_hint"], 1, 1000)
        assert command["should_escape"] is False
        assert command["url"].startswith("https://") and len(command["url"]) <= 3000


def test_every_command_of_the_code_is_declared(manifest: dict[str, Any]) -> None:
    """Each slash command in bot/slack/ids.py is declared, and its usage hint names every word."""
    declared = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    for command in ids.SLASH_COMMANDS:
        assert command in declared
    hint = declared[ids.SLASH_COMMAND]["usage_hint"]
    for word in ids.COMMAND_WORDS:
        assert re.search(rf"\b{word}\b", hint), f"usage hint does not mention {word}"


def test_scopes_are_a_list_of_strings(manifest: dict[str, Any]) -> None:
    """oauth_config.scopes.bot is a list of short strings without repeats."""
    scopes = manifest["oauth_config"]["scopes"]
    assert set(scopes) <= {"bot", "user", "bot_optional", "user_optional"}
    bot = scopes["bot"]
    assert isinstance(bot, list) and bot
    assert all(text_within(scope, 1, 50) for scope in bot)
    assert len(bot) == len(set(bot))


def test_every_called_method_has_its_scope_and_no_scope_is_spare(manifest: dict[str, Any]) -> None:
    """The bot scopes are exactly those of the Web API methods the code calls, plus commands."""
    called = called_methods()
    assert "chat_postMessage" in called  # the scan finds calls at all
    unknown = called - set(METHOD_SCOPES)
    assert not unknown, f"add these methods and their scopes to METHOD_SCOPES: {unknown}"
    needed = {COMMAND_SCOPE}
    for name in called:
        scopes = METHOD_SCOPES[name][1]
        needed |= {scopes} if isinstance(scopes, str) else set(scopes or ())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed


def test_events_and_interactivity(manifest: dict[str, Any]) -> None:
    """app_home_opened and every event the code listens to are subscribed; clicks are enabled."""
    settings = manifest["settings"]
    events = settings["event_subscriptions"]
    assert "app_home_opened" in events["bot_events"]
    assert listened_events() <= set(events["bot_events"])
    assert len(events["bot_events"]) == len(set(events["bot_events"]))
    assert settings["interactivity"]["is_enabled"] is True
    for flag in ("org_deploy_enabled", "socket_mode_enabled", "token_rotation_enabled"):
        assert settings[flag] is False


def test_http_variant_uses_one_request_url(manifest: dict[str, Any]) -> None:
    """Commands, events and clicks all go to Bolt's /slack/events over https."""
    settings = manifest["settings"]
    urls = {
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
        *(c["url"] for c in manifest["features"]["slash_commands"]),
    }
    assert len(urls) == 1
    (url,) = urls
    assert re.fullmatch(r"https://[^/\s]+/slack/events", url)


def test_oauth_install_asks_for_the_manifest_scopes(manifest: dict[str, Any]) -> None:
    """The install flow (many workspaces) requests exactly the manifest's bot scopes."""
    from bot.slack.install import BOT_SCOPES, REDIRECT_PATH

    assert set(BOT_SCOPES) == set(manifest["oauth_config"]["scopes"]["bot"])
    assert len(BOT_SCOPES) == len(set(BOT_SCOPES))
    # For one workspace the redirect URL stays commented out; the comment shows the path.
    assert "redirect_urls" not in manifest["oauth_config"]
    assert f"#   - https://YOUR-HOST{REDIRECT_PATH}" in MANIFEST.read_text(encoding="utf-8")


def test_revocation_events_are_subscribed(manifest: dict[str, Any]) -> None:
    """app_uninstalled and tokens_revoked reach the bot (Bolt's token revocation listeners)."""
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert {"app_uninstalled", "tokens_revoked"} <= set(events)
