"""Ack latency of concurrent clicks, and the poster's rate against Slack's allowed rate.

Part 1 runs `hitl serve` in its own process against the Slack stand-in on 127.0.0.1, sends it
50 signed clicks at once and prints p50/p99 time to ack (Slack allows 3 s). Part 2 (the bot in
this process) queues review items for one channel at Slack's real limit (1 message/s) and
prints the posting rate as a share of the allowed rate, and how many 429s the poster caused.

    python bench/slack_latency.py [--clicks 50] [--prompts 12]
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness lives in tests/
import httpx
from slack_sdk import WebClient

from bot import tasks as task_ops
from bot.demo.simulator import FORM, SlackUser, sign
from bot.demo.standin import SlackStandIn
from bot.review import item_view
from bot.runtime import free_port
from bot.services import build_services
from bot.settings import Settings
from bot.slack.messages import message_for
from tests.bot.slack.conftest import CHANNEL, start_bot


def percentile(values: list[float], share: float) -> float:
    """The `share` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def serve_and_click(folder: Path, count: int) -> list[float]:
    """Run `hitl serve` in its own process and send it `count` signed clicks at once.

    The bench process plays Slack: the stand-in, the prompts (posted here, one per item, so the
    bot's chat.update calls find them) and the clicks, built and signed before the start signal
    and sent over plain http.client, so the figure is the bot's time to answer.
    """
    secret = "bench-signing-secret"
    with SlackStandIn(bot_token="xoxb-bench", rate_limit_per_channel=None) as slack:
        settings = Settings(_env_file=None, database_url=f"sqlite:///{folder / 'serve.db'}")
        services = build_services(settings)
        with services.sessions.begin() as session:
            task_ops.create_task(session, "bench", ["positive", "negative"], threshold=0.9)
        port = free_port()
        env = {
            **os.environ,
            "HITL_DATABASE_URL": settings.database_url,
            "HITL_PORT": str(port),
            "HITL_HOST": "127.0.0.1",
            "HITL_API_TOKEN": "bench",
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": secret,
            "SLACK_API_URL": slack.api_url,
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, headers={"Authorization": "Bearer bench"}) as api:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        api.get("/healthz").raise_for_status()
                        break
                    except httpx.HTTPError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                body = {"items": [{"text": f"benchmark item {i}"} for i in range(count)]}
                routed = api.post("/api/tasks/bench/items", json=body).raise_for_status().json()
            client = WebClient(token="xoxb-bench", base_url=slack.api_url)
            requests = []
            for i, result in enumerate(routed["items"]):
                with services.sessions.begin() as session:
                    message = message_for(item_view(session, result["item_id"]))
                posted = client.chat_postMessage(channel=CHANNEL, **message)
                stored = slack.message(CHANNEL, str(posted["ts"]))
                person = SlackUser(
                    f"{base}/slack/events", secret, user_id=f"U0BENCH{i:03d}", standin=slack
                )
                action = next(
                    e
                    for b in stored["blocks"]
                    for e in b.get("elements") or []
                    if e.get("action_id", "").startswith("hitl_label:")
                )
                payload = person.button_click_payload(
                    stored, action["action_id"], value=action["value"], channel_id=CHANNEL
                )
                requests.append(urllib.parse.urlencode({"payload": json.dumps(payload)}))
            elapsed = _burst(port, secret, requests)
            time.sleep(2)  # let the listeners finish their writes before the server stops
        finally:
            server.terminate()
            server.wait(10)
            services.engine.dispose()
    return elapsed


def _burst(port: int, secret: str, bodies: list[str]) -> list[float]:
    """POST every body at the same moment; returns each time to a 200 (inf if none)."""
    elapsed = [float("inf")] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def click(i: int) -> None:
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": FORM,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": sign(secret, stamp, bodies[i]),
        }
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        barrier.wait()
        started = time.perf_counter()
        connection.request("POST", "/slack/events", body=bodies[i], headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            elapsed[i] = time.perf_counter() - started
        connection.close()

    threads = [threading.Thread(target=click, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return elapsed


def main() -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "b").mkdir()
        acks = serve_and_click(Path(folder), args.clicks)
        print(
            f"{args.clicks} concurrent clicks: ack p50 {statistics.median(acks) * 1000:.0f} ms, "
            f"p99 {percentile(acks, 0.99) * 1000:.0f} ms, max {max(acks) * 1000:.0f} ms "
            f"(Slack's limit 3000 ms)"
        )
        with contextmanager(start_bot)(Path(folder) / "b", rate=1.0, trained=False) as bot:
            started = time.monotonic()
            bot.submit(*[f"paced item {i}" for i in range(args.prompts)])
            bot.prompts(args.prompts, timeout=args.prompts * 3 + 10)
            times = bot.runtime.poster.stats.post_times
            rate = (len(times) - 1) / (times[-1] - times[0])
            print(
                f"poster: {len(times)} prompts in {time.monotonic() - started:.1f} s, "
                f"{rate:.2f} msg/s = {rate / 1.0:.2f} of the allowed 1 msg/s; "
                f"429s: {bot.slack.rate_limited_count}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
