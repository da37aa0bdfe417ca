"""How many answers does the product's queue order save against asking in random order?

For each seed the rows of a `text,label` CSV are shuffled and a test split set aside (a share of
the rows, at most 2,000); the rest is the pool of unanswered items. Both strategies start from the
same small random seed of answers. Then, round after round, a model is trained the product's way
(`model.trust.train_available`: labels with one answer wait) and `--round` more items are
answered (true labels play the people):

- product: the pool ranked by the product's own queue order (`model.ranking.rank`: margin
  uncertainty spread by feature similarity, as `hitl queue` shows it);
- random: the next items of a random order.

Printed: test accuracy and macro-F1 at each checkpoint (default 100, 200, 500, 1,000 answers)
for both, and how many answers the product needed to match random's accuracy at the last
checkpoint. With `--full` a model on the whole pool is measured too, with the chosen featurizer
and with TF-IDF, so the two can be compared at full data. Also printed: embedding throughput
(texts/s, with `--features embeddings`) and the seconds per retrain. Goals: the product matches
random at 1,000 answers with at most 500 (TF-IDF); with embeddings, never below TF-IDF at full
data. Progress goes to stderr.

    python bench/label_efficiency.py DATASET.csv [--features tfidf|embeddings] [--seeds 3]
        [--checkpoints 100,200,500,1000] [--round 20] [--seed-size 20] [--full] [--json]
        [--strategies product,random] [--per-label 5,10,20]
"""

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from bench.trust import DatasetError, read_dataset
from model.classifier import TextClassifier, TrainingError, train
from model.features import DEFAULT_FEATURIZER, FEATURIZERS
from model.metrics import evaluate
from model.ranking import rank
from model.trust import train_available

MAX_TEST_ITEMS = 2_000
TEST_SHARE = 0.2
GOAL_SHARE = 0.5  # the product should need at most half of random's answers


@dataclass
class Curve:
    """Test scores after each round of one strategy and seed."""

    answers: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    macro_f1: list[float] = field(default_factory=list)
    fit_seconds: list[float] = field(default_factory=list)

    def at(self, n: int) -> tuple[float, float]:
        """Scores with `n` answers (the last round at or below `n`)."""
        k = max(i for i, a in enumerate(self.answers) if a <= n)
        return self.accuracy[k], self.macro_f1[k]


Picker = Callable[[TextClassifier | None, NDArray[np.intp], int, np.random.Generator], list[int]]


def pick_random(
    model: TextClassifier | None,
    unanswered: NDArray[np.intp],
    count: int,
    rng: np.random.Generator,
) -> list[int]:
    """The next `count` items in random order."""
    return [int(i) for i in rng.choice(unanswered, size=min(count, len(unanswered)), replace=False)]


def product_picker(texts: Sequence[str]) -> Picker:
    """The product's queue order over the unanswered pool."""

    def pick(
        model: TextClassifier | None,
        unanswered: NDArray[np.intp],
        count: int,
        rng: np.random.Generator,
    ) -> list[int]:
        if model is None:
            return pick_random(model, unanswered, count, rng)
        pool_texts = [texts[i] for i in unanswered]
        prediction, features = model.predict_with_features(pool_texts)
        ranking = rank(prediction.probabilities, features=features)
        return [int(unanswered[k]) for k in ranking.order[:count]]

    return pick


def scores(
    model: TextClassifier | None, texts: Sequence[str], truth: Sequence[str], labels: Sequence[str]
) -> tuple[float, float]:
    """Accuracy and macro-F1 on the test split (a model that cannot train scores 0)."""
    if model is None:
        return 0.0, 0.0
    prediction = model.predict(texts)
    metrics = evaluate(prediction.probabilities, prediction.labels, truth)
    return float(metrics["accuracy"]), float(metrics["macro_f1"])


def fit(
    texts: Sequence[str], answers: Sequence[str], labels: Sequence[str], featurizer: str
) -> tuple[TextClassifier | None, float]:
    """Train the product's way; None while the answers cannot make a model yet."""
    started = time.perf_counter()
    try:
        model = train_available(texts, answers, labels=labels, featurizer=featurizer)
    except TrainingError:
        model = None
    return model, time.perf_counter() - started


def simulate(
    data_texts: Sequence[str],
    data_labels: Sequence[str],
    label_set: Sequence[str],
    *,
    pool: NDArray[np.intp],
    test: NDArray[np.intp],
    picker: Picker,
    seed_size: int,
    round_size: int,
    budget: int,
    featurizer: str,
    seed: int,
) -> Curve:
    """Answer up to `budget` items of `pool`, `round_size` at a time, scoring after each round."""
    rng = np.random.default_rng(10_000 + seed)
    answered: list[int] = [int(i) for i in pool[:seed_size]]
    taken = np.zeros(len(data_texts), dtype=bool)
    taken[answered] = True
    test_texts = [data_texts[i] for i in test]
    test_truth = [data_labels[i] for i in test]
    curve = Curve()
    while True:
        model, seconds = fit(
            [data_texts[i] for i in answered],
            [data_labels[i] for i in answered],
            label_set,
            featurizer,
        )
        accuracy, macro_f1 = scores(model, test_texts, test_truth, label_set)
        curve.answers.append(len(answered))
        curve.accuracy.append(accuracy)
        curve.macro_f1.append(macro_f1)
        curve.fit_seconds.append(seconds)
        if len(answered) >= budget:
            return curve
        unanswered = pool[~taken[pool]]
        if len(unanswered) == 0:
            return curve
        wanted = min(round_size, budget - len(answered))
        picked = picker(model, unanswered, wanted, rng)
        taken[picked] = True
        answered.extend(picked)


def answers_to_match(curve_answers: Sequence[int], accuracy: Sequence[float], goal: float) -> int:
    """The fewest answers at which the mean curve reaches `goal`; -1 if it never does."""
    for n, value in zip(curve_answers, accuracy, strict=True):
        if value >= goal - 1e-12:
            return int(n)
    return -1


def mean_curve(curves: Sequence[Curve]) -> tuple[list[int], list[float], list[float]]:
    """Mean accuracy and macro-F1 across seeds at the answer counts every seed reached."""
    answers = sorted(set.intersection(*(set(c.answers) for c in curves)))
    accuracy = [float(np.mean([c.accuracy[c.answers.index(n)] for c in curves])) for n in answers]
    macro_f1 = [float(np.mean([c.macro_f1[c.answers.index(n)] for c in curves])) for n in answers]
    return answers, accuracy, macro_f1


def embedding_throughput(texts: Sequence[str]) -> dict[str, float]:
    """Texts per second embedding fresh texts (no cache), and per second from the cache."""
    from model.embeddings import get_embedder  # the [embeddings] extra; imported only when asked

    embedder = get_embedder()
    sample = [f"{text} #{i}" for i, text in enumerate(texts[:2_000])]  # never seen: not cached
    started = time.perf_counter()
    embedder.embed(sample)
    fresh = time.perf_counter() - started
    started = time.perf_counter()
    embedder.embed(sample)
    cached = time.perf_counter() - started
    return {
        "texts": len(sample),
        "texts_per_second": len(sample) / fresh,
        "cached_texts_per_second": len(sample) / max(cached, 1e-9),
    }


def parse_counts(raw: str) -> list[int]:
    """`100,200,500,1000` as sorted positive integers."""
    try:
        counts = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of answer counts: {raw!r}") from None
    if not counts or counts[0] < 2:
        raise argparse.ArgumentTypeError("answer counts are whole numbers of at least 2")
    return counts


def parse_counts_any(raw: str) -> list[int]:
    """`5,10,20` as sorted positive integers."""
    try:
        counts = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {raw!r}") from None
    if not counts or counts[0] < 2:
        raise argparse.ArgumentTypeError("answers per label are whole numbers of at least 2")
    return counts


def positive(raw: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run every strategy and seed; the JSON-ready result."""
    data = read_dataset(args.dataset)
    rows = len(data.texts)
    n_test = min(MAX_TEST_ITEMS, max(1, int(rows * TEST_SHARE)))
    budget = args.checkpoints[-1]
    if rows - n_test < budget:
        raise DatasetError(
            f"{args.dataset}: {rows - n_test:,} pool rows are fewer than the {budget:,} answers "
            "asked for; lower --checkpoints"
        )
    pickers: dict[str, Picker] = {"product": product_picker(data.texts), "random": pick_random}
    curves: dict[str, list[Curve]] = {name: [] for name in args.strategies}
    full: list[dict[str, float]] = []
    for seed in range(args.seeds):
        order = np.random.default_rng(seed).permutation(rows).astype(np.intp)
        test, pool = order[:n_test], order[n_test:]
        for name in args.strategies:
            started = time.perf_counter()
            curve = simulate(
                data.texts,
                data.labels,
                data.label_set,
                pool=pool,
                test=test,
                picker=pickers[name],
                seed_size=args.seed_size,
                round_size=args.round,
                budget=budget,
                featurizer=args.features,
                seed=seed,
            )
            curves[name].append(curve)
            print(
                f"seed {seed}, {name}: {curve.answers[-1]:,} answers, accuracy "
                f"{curve.accuracy[-1]:.3f}, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if args.full:
            pool_texts = [data.texts[i] for i in pool]
            pool_labels = [data.labels[i] for i in pool]
            test_texts = [data.texts[i] for i in test]
            test_truth = [data.labels[i] for i in test]
            row: dict[str, float] = {"seed": seed, "answers": len(pool)}
            for featurizer in dict.fromkeys([args.features, DEFAULT_FEATURIZER]):
                started = time.perf_counter()
                model = train(
                    pool_texts,
                    pool_labels,
                    labels=data.label_set,
                    featurizer=featurizer,
                    min_per_label=2,
                    require_every_label=False,
                )
                accuracy, macro_f1 = scores(model, test_texts, test_truth, data.label_set)
                row[f"{featurizer}_accuracy"] = accuracy
                row[f"{featurizer}_macro_f1"] = macro_f1
                row[f"{featurizer}_fit_seconds"] = time.perf_counter() - started
            full.append(row)
            print(f"seed {seed}, full data: {row}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "dataset": str(args.dataset),
        "rows": rows,
        "labels": len(data.label_set),
        "test_items": n_test,
        "features": args.features,
        "seeds": args.seeds,
        "seed_size": args.seed_size,
        "round": args.round,
        "strategies": {},
    }
    means = {name: mean_curve(curves[name]) for name in args.strategies}
    for name in args.strategies:
        answers, accuracy, macro_f1 = means[name]
        per_checkpoint = {}
        for n in args.checkpoints:
            k = max(i for i, a in enumerate(answers) if a <= n)
            per_checkpoint[str(n)] = {
                "answers": answers[k],
                "accuracy": accuracy[k],
                "macro_f1": macro_f1[k],
                "accuracy_min_seed": min(c.at(n)[0] for c in curves[name]),
            }
        fits = [s for c in curves[name] for s in c.fit_seconds]
        result["strategies"][name] = {
            "checkpoints": per_checkpoint,
            "mean_fit_seconds": float(np.mean(fits)),
        }
    if "product" in means and "random" in means:
        goal = means["random"][1][-1]
        needed = answers_to_match(means["product"][0], means["product"][1], goal)
        result["random_accuracy_at_budget"] = goal
        result["product_answers_to_match_random"] = needed
        result["goal_met"] = 0 < needed <= GOAL_SHARE * budget
    if full:
        result["full_data"] = full
    if args.per_label:
        result["per_label"] = per_label_scores(data, args, n_test)
    if args.features != DEFAULT_FEATURIZER:
        result["embedding_throughput"] = embedding_throughput(data.texts)
    return result


def per_label_scores(data: Any, args: argparse.Namespace, n_test: int) -> list[dict[str, Any]]:
    """Test accuracy with k random answers of every label (no queue order), per featurizer."""
    rows = len(data.texts)
    out: list[dict[str, Any]] = []
    for k in args.per_label:
        for featurizer in dict.fromkeys([args.features, DEFAULT_FEATURIZER]):
            accuracies = []
            for seed in range(args.seeds):
                order = np.random.default_rng(seed).permutation(rows).astype(np.intp)
                test, pool = order[:n_test], order[n_test:]
                taken: dict[str, int] = {}
                chosen = []
                for i in pool:
                    label = data.labels[i]
                    if taken.get(label, 0) < k:
                        taken[label] = taken.get(label, 0) + 1
                        chosen.append(int(i))
                model, _ = fit(
                    [data.texts[i] for i in chosen],
                    [data.labels[i] for i in chosen],
                    data.label_set,
                    featurizer,
                )
                accuracy, _ = scores(
                    model,
                    [data.texts[i] for i in test],
                    [data.labels[i] for i in test],
                    data.label_set,
                )
                accuracies.append(accuracy)
            out.append(
                {
                    "per_label": k,
                    "features": featurizer,
                    "accuracy": float(np.mean(accuracies)),
                    "accuracy_min_seed": float(min(accuracies)),
                }
            )
            print(f"{k} per label, {featurizer}: {out[-1]}", file=sys.stderr, flush=True)
    return out


def print_table(result: dict[str, Any]) -> None:
    """The result as a few readable lines."""
    print(
        f"{result['dataset']}: {result['rows']:,} rows, {result['labels']} labels, "
        f"{result['test_items']:,} test items, features {result['features']}, "
        f"{result['seeds']} seeds, rounds of {result['round']} after {result['seed_size']} random"
    )
    names = list(result["strategies"])
    print("answers  " + "  ".join(f"{name + ' acc / macro-F1':>28}" for name in names))
    first = result["strategies"][names[0]]["checkpoints"]
    for n in first:
        cells = []
        for name in names:
            point = result["strategies"][name]["checkpoints"][n]
            cells.append(
                f"{point['accuracy']:.3f} (min {point['accuracy_min_seed']:.3f}) / "
                f"{point['macro_f1']:.3f}"
            )
        print(f"{int(n):>7,}  " + "  ".join(f"{c:>28}" for c in cells))
    if "product_answers_to_match_random" in result:
        needed = result["product_answers_to_match_random"]
        shown = "never" if needed < 0 else f"{needed:,}"
        verdict = "met" if result["goal_met"] else "NOT met"
        print(
            f"product answers to match random's {result['random_accuracy_at_budget']:.3f} "
            f"at {int(list(first)[-1]):,}: {shown} (goal: at most half: {verdict})"
        )
    for name in names:
        seconds = result["strategies"][name]["mean_fit_seconds"]
        print(f"{name}: {seconds:.2f} s per retrain")
    for row in result.get("full_data", []):
        print(f"full data (seed {row['seed']}, {int(row['answers']):,} answers): {row}")
    for row in result.get("per_label", []):
        print(
            f"{row['per_label']} random answers per label, {row['features']}: accuracy "
            f"{row['accuracy']:.3f} (min seed {row['accuracy_min_seed']:.3f})"
        )
    if "embedding_throughput" in result:
        t = result["embedding_throughput"]
        print(
            f"embedding: {t['texts_per_second']:.0f} texts/s fresh, "
            f"{t['cached_texts_per_second']:.0f} texts/s from the cache"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run, print; 2 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--features", choices=sorted(FEATURIZERS), default=DEFAULT_FEATURIZER)
    parser.add_argument("--seeds", type=positive, default=3)
    parser.add_argument("--checkpoints", type=parse_counts, default=[100, 200, 500, 1000])
    parser.add_argument("--round", type=positive, default=20)
    parser.add_argument("--seed-size", type=positive, default=20)
    parser.add_argument("--full", action="store_true", help="also fit on the whole pool")
    parser.add_argument(
        "--strategies",
        type=lambda raw: [s.strip() for s in raw.split(",") if s.strip()],
        default=["product", "random"],
    )
    parser.add_argument(
        "--per-label",
        type=parse_counts_any,
        default=[],
        help="also train on k random answers of every label, e.g. 5,10,20",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    unknown = set(args.strategies) - {"product", "random"}
    if unknown or not args.strategies:
        parser.error(f"unknown strategies: {sorted(unknown)}; choose from product, random")
    try:
        result = measure(args)
    except (DatasetError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
