"""Throughput of `submit` (predict + store + route) against the bare model, on banking77.

Trains on a stratified 80 % of banking77, then scores the other 20 % in batches twice:
(a) the bare pipeline's predict_proba, (b) `submit` end to end into a SQLite database.
Both are timed in the same run, so the ratio b/a is what to read (the machine is noisy).

    python bench/throughput.py [--batch 500] [--repeat 3] [--database-url URL]
"""

import argparse
import csv
import secrets
import sys
import tempfile
import time
from pathlib import Path

from sklearn.model_selection import train_test_split

from bot import tasks as task_ops
from bot.ingest import IncomingItem
from bot.registry import ModelRegistry, store_model
from bot.routing import submit
from bot.states import ModelStatus
from bot.storage.db import make_engine, make_sessionmaker, upgrade
from model import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the dataset lookup lives in tests/
from tests.conftest import find_banking77

DATASET = find_banking77()


def main() -> int:
    """Print items per second for the bare model and for submit, and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args()

    with args.dataset.open(encoding="utf-8", newline="") as handle:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(handle)]
    texts, labels = zip(*rows, strict=True)
    train_x, test_x, train_y, _ = train_test_split(
        list(texts), list(labels), test_size=0.2, random_state=42, stratify=labels
    )
    label_set = sorted(set(labels))
    started = time.perf_counter()
    classifier = train(train_x, train_y, labels=label_set)
    print(f"trained on {len(train_x)} texts in {time.perf_counter() - started:.1f}s")
    batches = [test_x[i : i + args.batch] for i in range(0, len(test_x), args.batch)]

    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{folder}/bench.db"
        engine = make_engine(url)
        upgrade(engine)
        sessions = make_sessionmaker(engine)
        registry = ModelRegistry(key=secrets.token_bytes(32))
        with sessions.begin() as session:
            task = task_ops.create_task(
                session, f"bench{int(time.time())}", label_set, channel="C0BENCH", threshold=0.8
            )
            store_model(
                session,
                task,
                classifier,
                registry=registry,
                status=ModelStatus.ACTIVE,
                train_size=len(train_x),
                metrics={},
            )
            task_id = task.id
        with sessions.begin() as session:  # load the artifact into the cache before timing
            registry.active(session, session.get_one(task_ops.Task, task_id))

        bare_best = submit_best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            for batch in batches:
                classifier.pipeline.predict_proba(batch)
            bare_best = min(bare_best, time.perf_counter() - started)
            started = time.perf_counter()
            for batch in batches:
                with sessions.begin() as session:
                    task = session.get_one(task_ops.Task, task_id)
                    submit(
                        session,
                        task,
                        [IncomingItem(t) for t in batch],
                        registry=registry,
                        max_chars=10_000,
                        source="bench",
                    )
            submit_best = min(submit_best, time.perf_counter() - started)
        engine.dispose()

    n = len(test_x)
    bare, end_to_end = n / bare_best, n / submit_best
    print(
        f"items: {n} in batches of {args.batch}, best of {args.repeat}, "
        f"database {url.split(':')[0]}"
    )
    print(f"(a) bare model predict_proba: {bare:,.0f} items/s")
    print(f"(b) submit end to end:        {end_to_end:,.0f} items/s")
    print(f"ratio b/a: {end_to_end / bare:.2f}  (goal >= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
