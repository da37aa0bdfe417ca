"""Embedding throughput (texts/s) and peak memory: length-sorted batches against padded ones.

Embeds the first N banking77 texts with the configured model (needs the `embeddings` extra),
without any cache, three ways, each in a process of its own (so that peak RSS is its own):

(a) what `Embedder` does: sorted by token count, batches of 32 (fewer when long), each padded
    to its longest text;
(b) input order, batches of 256 texts, each padded to its longest text;
(c) input order, batches of 32, every text padded to 256 tokens.

Each way runs `--repeat` times and the best time counts. The vectors of all three are equal
(tests/model/test_embeddings.py checks (a) against one text at a time).

    python bench/embeddings.py [--texts 2000] [--repeat 3] [--threads N]
"""

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the dataset lookup lives in tests/
from model.embeddings import MAX_TOKENS, Embedder, clean_text, resolve_model
from tests.conftest import find_banking77

WAYS = {
    "a": "(a) sorted, batches of 32 (fewer if long), padded",
    "b": "(b) input order, batches of 256, padded to the batch",
    "c": f"(c) input order, batches of 32, padded to {MAX_TOKENS}",
}


def padded(
    embedder: Embedder, texts: list[str], *, batch: int, width: int | None
) -> NDArray[np.float32]:
    """Vectors in input order, batches padded to `width` tokens (None: the batch's longest)."""
    tokenizer = embedder._tokenizer  # a benchmark may look inside
    rows = []
    for start in range(0, len(texts), batch):
        encodings = tokenizer.encode_batch(texts[start : start + batch])
        wide = width or max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), wide), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, encoding in enumerate(encodings):
            ids[i, : len(encoding.ids)] = encoding.ids
            mask[i, : len(encoding.ids)] = 1
        rows.append(embedder._run(ids, mask))
    return np.concatenate(rows)


def run_one(way: str, args: argparse.Namespace) -> dict[str, float]:
    """Time one way in this process; texts/s and peak RSS in MiB."""
    with find_banking77().open(encoding="utf-8", newline="") as handle:
        texts = [clean_text(row["text"]) for row in csv.DictReader(handle)][: args.texts]
    embedder = Embedder(resolve_model(args.model), threads=args.threads)
    embedder.embed_uncached(texts[:64])  # warm up

    def work() -> object:
        if way == "a":
            return embedder.embed_uncached(texts)
        if way == "b":
            return padded(embedder, texts, batch=256, width=None)
        return padded(embedder, texts, batch=32, width=MAX_TOKENS)

    best = float("inf")
    for _ in range(args.repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"texts": len(texts), "per_second": len(texts) / best, "peak_mib": peak_kib / 1024}


def main() -> int:
    """Print texts per second and peak RSS for the three ways."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: cores, at most 4")
    parser.add_argument("--model", default=None, help="HITL_EMBEDDING_MODEL value")
    parser.add_argument("--way", choices=sorted(WAYS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        print(json.dumps(run_one(args.way, args)))
        return 0
    results = {}
    for way in WAYS:
        command = [sys.executable, __file__, "--way", way, *sys.argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[way] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"texts: {results['a']['texts']:.0f} of banking77, best of {args.repeat}")
    for way, name in WAYS.items():
        figures = results[way]
        slower = results["a"]["per_second"] / figures["per_second"]
        print(
            f"{name:<55} {figures['per_second']:7,.0f} texts/s  x{slower:4.1f} time  "
            f"peak RSS {figures['peak_mib']:5.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
