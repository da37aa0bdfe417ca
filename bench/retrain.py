"""Retrain time and peak memory at 1k, 10k and 100k answers (banking77 texts resampled).

Each size runs in its own process (so peak RSS belongs to that size alone): a temporary SQLite
database gets a task and N imported answers, then the full retrain job runs (load answers,
holdout split, train, evaluate, store the artifact). Printed: seconds and peak MB per size, and
the growth factor between consecutive sizes (10x more answers; linear growth would be 10x).

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the dataset lookup lives in tests/
from tests.conftest import find_banking77

DATASET = find_banking77()


def one(size: int) -> dict[str, float]:
    """Import `size` answers into a fresh database and time one retrain."""
    from bot import tasks as task_ops
    from bot.answers import import_examples
    from bot.ingest import IncomingItem
    from bot.services import build_services
    from bot.settings import Settings
    from bot.training import retrain_task

    with DATASET.open(encoding="utf-8", newline="") as handle:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(handle)]
    labels = sorted({label for _, label in rows})
    rng = random.Random(size)
    sample = [rows[rng.randrange(len(rows))] for _ in range(size)]
    # every label at least a few times, so that small sizes can train at all
    sample[: 3 * len(labels)] = [
        next(r for r in rows if r[1] == lab) for lab in labels for _ in range(3)
    ]
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(_env_file=None, database_url=f"sqlite:///{folder}/bench.db")  # type: ignore[call-arg]
        services = build_services(settings)
        with services.sessions.begin() as session:
            task = task_ops.create_task(session, "bench", labels, threshold=0.8)
            import_examples(
                session, task, [IncomingItem(t, label=lab) for t, lab in sample], max_chars=10_000
            )
        started = time.perf_counter()
        result = retrain_task(
            services.sessions, "bench", registry=services.registry, settings=settings, force=True
        )
        seconds = time.perf_counter() - started
        services.engine.dispose()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    accuracy = result.report.new_accuracy
    accuracy = float("nan") if accuracy is None else accuracy
    return {"size": size, "seconds": seconds, "peak_mb": peak_mb, "accuracy": accuracy}


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
        print(
            f"{size:>7} answers: {r['seconds']:6.1f} s, peak {r['peak_mb']:6.0f} MB, "
            f"holdout accuracy {r['accuracy']:.3f}{growth}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
