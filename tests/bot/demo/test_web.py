"""`hitl demo --web`: the review channel drawn safely, a guarded server, and a real browser."""

import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.demo.web import (
    WEB_USER,
    WebDemo,
    channel_feed,
    render_block,
    render_mrkdwn,
    render_text,
    start_web_demo,
)
from bot.slack import ids
from bot.storage.schema import Answer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


# --- drawing Block Kit ------------------------------------------------------------------------


def test_mrkdwn_is_escaped_and_slack_entities_show_as_characters() -> None:
    shown = render_mrkdwn('*bold* &lt;script&gt;alert(1)&lt;/script&gt; "q" &amp;lt; _it_')
    assert shown == (
        "<b>bold</b> &lt;script&gt;alert(1)&lt;/script&gt; &quot;q&quot; &amp;lt; <i>it</i>"
    )


def test_raw_angle_brackets_in_mrkdwn_are_slack_markup_never_html_tags() -> None:
    """Unescaped `<…>` is Slack markup; one that is no mention or http(s) link shows as text."""
    shown = render_mrkdwn("<img src=x onerror=alert(1)> <script>alert(1)</script> `a<b`")
    assert "<" not in shown.replace("<code>", "").replace("</code>", "")
    assert shown.startswith("img src=x onerror=alert(1) script")


def test_mrkdwn_markup_renders_mentions_dates_and_only_http_links() -> None:
    text = (
        "<@U0ALICE01> <#C0DEMO01> <!channel> <!date^1700000000^{date_short}|2023-11-14 UTC> "
        '<https://example.com/?a=1&amp;b="2"|a &lt;link&gt;> <javascript:alert(1)|click>'
    )
    shown = render_mrkdwn(text)
    assert '<span class="mention">@U0ALICE01</span>' in shown
    assert '<span class="mention">#c0demo01</span>' in shown
    assert '<span class="mention">@channel</span>' in shown
    assert '<span class="date">2023-11-14 UTC</span>' in shown
    assert '<a href="https://example.com/?a=1&amp;b=&quot;2&quot;"' in shown
    assert ">a &lt;link&gt;</a>" in shown
    assert "javascript" not in shown and shown.endswith("click")


def test_plain_text_is_literal_and_emoji_only_when_allowed() -> None:
    literal = {"type": "plain_text", "text": "<!channel> *x* :mag: &lt;", "emoji": False}
    assert render_text(literal) == "&lt;!channel&gt; *x* :mag: &amp;lt;"
    assert render_text({"type": "plain_text", "text": ":mag: hi"}) == "🔍 hi"


def test_static_select_with_option_groups_and_styled_buttons() -> None:
    block = {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": "go",
                "value": 'v"1',
                "style": "primary",
                "text": {"type": "plain_text", "text": "Go <now>"},
            },
            {
                "type": "static_select",
                "action_id": "menu",
                "placeholder": {"type": "plain_text", "text": "Pick…"},
                "option_groups": [
                    {
                        "label": {"type": "plain_text", "text": "Cards & <PINs>"},
                        "options": [
                            {"text": {"type": "plain_text", "text": "pin"}, "value": "1:2"}
                        ],
                    }
                ],
            },
        ],
    }
    shown = render_block(block)
    assert (
        '<button type="button" class="btn btn-primary" data-action="go" data-value="v&quot;1">'
        "Go &lt;now&gt;</button>"
    ) in shown
    assert '<optgroup label="Cards &amp; &lt;PINs&gt;"><option value="1:2">pin</option>' in shown
    assert '<option value="" disabled selected>Pick…</option>' in shown


# --- the running web demo -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDemo]:
    """A web demo with no simulated reviewers: every prompt waits for the page."""
    database = tmp_path_factory.mktemp("web") / "web.db"
    with start_web_demo(database=database, items=40, rate=50.0) as running:
        running.bot.slack.wait_for_messages("C0DEMO01", 1, timeout=30)
        yield running


def _request(
    demo: WebDemo,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = demo.url.removeprefix("http://").rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_page_carries_its_token_and_a_strict_content_security_policy(demo: WebDemo) -> None:
    status, headers, body = _request(demo, "GET", "/")
    assert status == 200
    assert f'<meta name="demo-token" content="{demo.token}">' in body.decode()
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_foreign_host_name_is_refused_so_dns_rebinding_cannot_read_the_token(
    demo: WebDemo,
) -> None:
    status, _, body = _request(demo, "GET", "/", headers={"Host": "evil.example"})
    assert status == 421
    assert demo.token.encode() not in body


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Content-Type": "application/json"}, 403),  # no token
        ({"Content-Type": "application/json", "X-Demo-Token": "guess"}, 403),
        ({"Content-Type": "text/plain", "X-Demo-Token": "TOKEN"}, 415),
        (
            {
                "Content-Type": "application/json",
                "X-Demo-Token": "TOKEN",
                "Origin": "https://evil.example",
            },
            403,
        ),
        (
            {
                "Content-Type": "application/json",
                "X-Demo-Token": "TOKEN",
                "Sec-Fetch-Site": "cross-site",
            },
            403,
        ),
    ],
)
def test_posts_without_the_page_token_or_from_another_origin_are_refused(
    demo: WebDemo, headers: dict[str, str], expected: int
) -> None:
    sent = {name: demo.token if value == "TOKEN" else value for name, value in headers.items()}
    before = len(demo.bot.slack.ephemerals(user=WEB_USER))
    status, _, _ = _request(demo, "POST", "/api/command", body={"text": "stats"}, headers=sent)
    assert status == expected
    assert len(demo.bot.slack.ephemerals(user=WEB_USER)) == before  # nothing reached the bot


def test_feed_lists_open_prompts_with_their_buttons(demo: WebDemo) -> None:
    feed = channel_feed(demo.bot.slack, channel="C0DEMO01", user=WEB_USER)
    assert feed["open"] >= 1
    assert any(f'data-action="{ids.ACTION_SKIP}"' in entry["html"] for entry in feed["entries"])


def _stored_answer(demo: WebDemo, item_id: int) -> str | None:
    with demo.bot.services.sessions.begin() as session:
        return session.scalar(
            select(Answer.label).where(
                Answer.item_id == item_id, Answer.user_id == WEB_USER, Answer.is_current
            )
        )


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()) or shutil.which("chromium") is None,
    reason="needs Chromium and its driver: apt-get install -y chromium chromium-driver "
    "(.ci/run installs them)",
)
def test_in_a_browser_a_click_answers_the_item_and_a_command_gets_its_reply(
    demo: WebDemo, tmp_path: Path
) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        # The page redraws its feed as prompts arrive: an element found a moment ago may be gone.
        wait = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,))
        driver.get(demo.url)
        label_button = f"[data-open-item] button[data-action^='{ids.ACTION_LABEL}:']"
        # A spot check whose answer contradicts the model waits for a second opinion, so the
        # click goes to an ordinary review prompt (spot checks rank first in the queue).

        def review_buttons(d: Any) -> list[Any]:
            return [
                b
                for b in d.find_elements(By.CSS_SELECTOR, label_button)
                if "Spot check"
                not in b.find_element(By.XPATH, "ancestor::*[@data-open-item][1]").text
            ]

        wait.until(review_buttons)
        button = review_buttons(driver)[0]
        message = button.find_element(By.XPATH, "ancestor::*[@data-open-item][1]")
        item_id = int(message.get_attribute("data-open-item") or "")
        ts = message.get_attribute("data-ts")
        label = button.text
        button.click()

        answered = f"[data-ts='{ts}']"

        def shows_answer(d: Any) -> bool:
            found = d.find_elements(By.CSS_SELECTOR, answered)
            return bool(found) and found[0].get_attribute("data-open-item") is None

        wait.until(shows_answer)
        text = driver.find_element(By.CSS_SELECTOR, answered).text
        assert "Answered" in text and f"Label: {label}" in text and "@U0YOU0001" in text
        assert _stored_answer(demo, item_id) == label

        box = driver.find_element(By.ID, "command")
        box.send_keys("/hitl stats\n")
        wait.until(
            lambda d: any(
                "Stats: banking-demo" in e.text
                for e in d.find_elements(By.CSS_SELECTOR, ".ephemeral")
            )
        )
        reply = driver.find_elements(By.CSS_SELECTOR, ".ephemeral")[-1].text
        assert "Only visible to you" in reply and "Threshold" in reply
        driver.save_screenshot(str(tmp_path / "web-demo.png"))
        severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert severe == []  # no CSP violation, no script error, no failed request
    finally:
        driver.quit()


def test_web_options_without_web_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from bot import cli

    assert cli.main(["demo", "--reviewers", "1"]) == 2
    assert "--port and --reviewers go with --web" in capsys.readouterr().err
