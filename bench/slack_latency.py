"""Ack latency of concurrent clicks, and the poster's rate against Slack's allowed rate.

Starts the Slack stand-in and the bot (as `hitl serve` runs it) on 127.0.0.1. Part 1 sends 50
signed clicks at once and prints p50/p99 time to ack (Slack allows 3 s). Part 2 queues review
items for one channel at Slack's real limit (1 message/s) and prints the posting rate as a
share of the allowed rate, and how many 429s the poster caused.

    python bench/slack_latency.py [--clicks 50] [--prompts 12]
"""

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness lives in tests/
from bot.slack.simulator import FORM, sign
from tests.bot.slack.conftest import CHANNEL, Bot, start_bot


def percentile(values: list[float], share: float) -> float:
    """The `share` quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def clicks(bot: Bot, count: int) -> list[float]:
    """Send `count` signed clicks at once on as many prompts; returns each ack time.

    The signed bodies are built before the start signal and sent over plain http.client, so the
    figure is the bot's time to answer, not the cost of building a client or signing.
    """
    bot.submit(*[f"benchmark item {i}" for i in range(count)])
    messages = bot.prompts(count, timeout=60)
    url = urllib.parse.urlsplit(f"{bot.runtime.url}/slack/events")
    requests = []
    for i, message in enumerate(messages[:count]):
        action = next(
            e
            for b in message["blocks"]
            for e in b.get("elements") or []
            if e.get("action_id", "").startswith("hitl_label:")
        )
        person = bot.user(f"U0BENCH{i:03d}")
        payload = person.button_click_payload(
            message, action["action_id"], value=action["value"], channel_id=CHANNEL
        )
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        stamp = str(int(time.time()))
        requests.append(
            (
                body,
                {
                    "Content-Type": FORM,
                    "X-Slack-Request-Timestamp": stamp,
                    "X-Slack-Signature": sign(bot.secret, stamp, body),
                },
            )
        )
    elapsed: list[float] = [float("inf")] * count
    barrier = threading.Barrier(count)

    def click(i: int) -> None:
        body, headers = requests[i]
        connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
        barrier.wait()
        started = time.perf_counter()
        connection.request("POST", url.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            elapsed[i] = time.perf_counter() - started
        connection.close()

    threads = [threading.Thread(target=click, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(2)  # let the listeners finish their database writes and message updates
    return elapsed


def main() -> int:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "a").mkdir()
        (Path(folder) / "b").mkdir()
        with contextmanager(start_bot)(Path(folder) / "a", rate=200.0, trained=False) as bot:
            acks = clicks(bot, args.clicks)
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
