"""Retrain time and peak memory at 1k, 10k and 100k answers (banking77), and test accuracy.

A test split of 2,000 banking77 rows is set aside first; training rows are drawn from the other
rows (minus any whose text also sits in the test split), so no test text is ever trained on.
Each size draws without replacement while those rows suffice; a larger size takes every row
once and repeats rows drawn at random to reach it, and says so (its model has seen no more
distinct texts than the dataset holds). Each size runs in its own process (so peak RSS belongs
to that size alone): a temporary SQLite database gets a task and N imported answers, then the
full retrain job runs (load answers, holdout split, train, evaluate, store the artifact).
Printed: seconds and peak MB per size, the growth factor between consecutive sizes (10x more
answers; linear growth would be 10x), and the accuracy on the test split of the model the run
stored, loaded back from the registry (not timed, and after peak memory is read).

    python bench/retrain.py [--sizes 1000,10000,100000]
"""

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the dataset lookup lives in tests/
from tests.conftest import find_banking77

DATASET = find_banking77()
# Rows set aside before any training row is drawn; never imported as answers.
TEST_ROWS = 2_000


def split_rows(
    rows: list[tuple[str, str]],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(test rows, training source): the same split in every child process."""
    picked = set(random.Random(0).sample(range(len(rows)), min(TEST_ROWS, len(rows) // 5)))
    test = [rows[i] for i in sorted(picked)]
    # The dataset repeats a few texts: a repeat of a test text would be trained on.
    test_texts = {text for text, _ in test}
    source = [r for i, r in enumerate(rows) if i not in picked and r[0] not in test_texts]
    return test, source


def draw(source: list[tuple[str, str]], size: int, *, seed: int) -> list[tuple[str, str]]:
    """`size` training rows from `source`, each at most once while `source` suffices."""
    rng = random.Random(seed)
    if size > len(source):
        # Every row once, then repeats: more answers than the dataset has distinct texts.
        return source + [source[rng.randrange(len(source))] for _ in range(size - len(source))]
    by_label: dict[str, list[int]] = {}
    for i, (_, label) in enumerate(source):
        by_label.setdefault(label, []).append(i)
    # Every label a few times (distinct rows), so that small sizes can train at all.
    floor = (
        [i for members in by_label.values() for i in rng.sample(members, min(3, len(members)))]
        if size >= 3 * len(by_label)
        else []
    )
    taken = set(floor)
    rest = [i for i in range(len(source)) if i not in taken]
    picked = floor + rng.sample(rest, size - len(floor))
    rng.shuffle(picked)
    return [source[i] for i in picked]


def one(size: int) -> dict[str, Any]:
    """Import `size` answers into a fresh database, time one retrain, measure on the test split."""
    from bot import tasks as task_ops
    from bot.answers import import_examples
    from bot.ingest import IncomingItem
    from bot.registry import active_version
    from bot.services import build_services
    from bot.settings import Settings
    from bot.training import retrain_task

    with DATASET.open(encoding="utf-8", newline="") as handle:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(handle)]
    labels = sorted({label for _, label in rows})
    test, source = split_rows(rows)
    sample = draw(source, size, seed=size)
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(_env_file=None, database_url=f"sqlite:///{folder}/bench.db")
        services = build_services(settings)
        with services.sessions.begin() as session:
            task = task_ops.create_task(session, "bench", labels, threshold=0.8)
            import_examples(
                session, task, [IncomingItem(t, label=lab) for t, lab in sample], max_chars=10_000
            )
        started = time.perf_counter()
        retrain_task(
            services.sessions, "bench", registry=services.registry, settings=settings, force=True
        )
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # Measured here on rows no size ever trains on: the report's holdout is chosen by item
        # id, so a text repeated among the answers can sit on both sides of it.
        with services.sessions.begin() as session:
            stored = active_version(session, task_ops.get_task(session, "bench"))
            classifier = None if stored is None else services.registry.load(session, stored.id)
        accuracy = None
        if classifier is not None:
            predicted = classifier.predict([text for text, _ in test]).predicted
            right = sum(p == label for p, (_, label) in zip(predicted, test, strict=True))
            accuracy = right / len(test)
        services.engine.dispose()
    return {
        "size": size,
        "seconds": seconds,
        "peak_mb": peak_mb,
        "accuracy": accuracy,
        "test_rows": len(test),
        "distinct_rows": len(set(sample)),
        "source_rows": len(source),
    }


def main() -> int:
    """Run every size in a child process and print the table with growth factors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return 0
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(size)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        r = results[-1]
        growth = ""
        if len(results) > 1:
            prev = results[-2]
            growth = (
                f"  x{r['seconds'] / prev['seconds']:.1f} time, "
                f"x{r['peak_mb'] / prev['peak_mb']:.1f} memory"
                f" for x{size / prev['size']:.0f} answers"
            )
        accuracy = "none (no model stored)" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        resampled = (
            f"; resampled: {size:,} exceed the {r['source_rows']:,} training rows, "
            f"so only {r['distinct_rows']:,} are distinct"
            if size > r["source_rows"]
            else ""
        )
        print(
            f"{size:>7} answers: {r['seconds']:6.1f} s, peak {r['peak_mb']:6.0f} MB, "
            f"accuracy on {r['test_rows']:,} unseen test rows {accuracy}{growth}{resampled}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
