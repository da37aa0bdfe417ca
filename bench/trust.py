"""Does a target precision hold? Share answered automatically, and its precision, by answers.

For each seed the rows of a `text,label` CSV are shuffled and a test split set aside (a share of
the rows, at most 5,000); the rest is the pool of answers, in random order. For each size the
first N answers train a model the product's way (`model.trust.fit_with_evidence`: out-of-fold
evidence, then a refit on every answer), and for each target precision the threshold it chooses
is applied to the test split: the share answered automatically, the precision of those answers,
and the oracle share (the most a threshold chosen on the test split itself could automate at
the target). Also printed: calibration of the deployed model (accuracy, ECE, reliability bins),
a simulation of the product's 2 % spot checks (how often their 95 % Clopper-Pearson interval
covers the true precision), and seconds per fit. Goals: precision >= target - 0.01 wherever
anything is automated; share within 5 points of the oracle from 1,000 answers on; spot-check
intervals cover the true precision in >= 90 % of runs. Progress goes to stderr. On banking77
(13k rows, 77 labels) the defaults take about four minutes on two cores, most of it the three
fits on the whole pool.

    python bench/trust.py DATASET.csv [--seeds 3] [--sizes 100,200,500,1000,full]
        [--targets 0.90,0.95,0.99] [--test-share 0.3] [--features tfidf] [--json]
"""

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
from model.classifier import TrainingError
from model.features import DEFAULT_FEATURIZER, FEATURIZERS
from model.intervals import clopper_pearson, reliability_bins
from model.metrics import expected_calibration_error
from model.trust import ThresholdChoice, fit_with_evidence

MAX_TEST_ITEMS = 5_000
FULL = "full"
# A cell fails when measured precision falls this far below the target.
PRECISION_TOLERANCE = 0.01
# From this many answers the automated share should be within GAP_GOAL of the oracle's.
GAP_GOAL_FROM = 1_000
GAP_GOAL = 0.05
SPOT_TARGET = 0.95
SPOT_SHARE = 0.02
SPOT_MINIMUM = 30
SPOT_RUNS = 1_000
SPOT_CONFIDENCE = 0.95
SPOT_COVERAGE_GOAL = 0.90
RELIABILITY_BINS = 10


class DatasetError(ValueError):
    """A CSV this benchmark cannot use; the message says what to fix."""


@dataclass(frozen=True)
class Dataset:
    """The rows of a `text,label` CSV and its label set."""

    texts: list[str]
    labels: list[str]
    label_set: list[str]


@dataclass(frozen=True)
class Run:
    """One fit (seed, size): the deployed model's test-split scores and its threshold choices."""

    seed: int
    size: int
    seconds: float
    trained: bool
    confidence: NDArray[np.float64]  # top-label confidence per test item
    correct: NDArray[np.bool_]  # predicted label == true label
    eligible: NDArray[np.bool_]  # predicted label is one the product may automate
    auto_labels: int
    choices: dict[float, ThresholdChoice | None]  # None where no model could be trained

    def automated(self, target: float) -> NDArray[np.bool_]:
        """Test items answered automatically at `target`, the product's way."""
        choice = self.choices[target]
        if choice is None or choice.threshold is None:
            return np.zeros(len(self.confidence), dtype=bool)
        return (self.confidence >= choice.threshold) & self.eligible


@dataclass(frozen=True)
class Cell:
    """One (seed, size, target): what was automated on the test split and how precise it was."""

    seed: int
    size: int
    target: float
    threshold: float | None
    lower_bound: float | None
    evidence: tuple[int, int, int]  # out-of-fold items the choice saw: eligible, above, correct
    automated: int
    correct: int
    share: float
    precision: float | None
    oracle: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "seed": self.seed,
            "size": self.size,
            "target": self.target,
            "threshold": self.threshold,
            "precision_lower_bound": self.lower_bound,
            "evidence_items": self.evidence[0],
            "evidence_automated": self.evidence[1],
            "evidence_correct": self.evidence[2],
            "automated": self.automated,
            "correct": self.correct,
            "share": self.share,
            "precision": self.precision,
            "oracle_share": self.oracle,
        }


@dataclass(frozen=True)
class Summary:
    """One (target, size) over seeds: a row of a target's table."""

    target: float
    size: int
    share_mean: float
    share_min: float
    share_max: float
    items_mean: float
    precision_mean: float | None  # over seeds that automated anything
    precision_min: float | None
    oracle_mean: float
    threshold_mean: float | None  # over seeds that chose a threshold
    failing: list[Cell]  # seeds whose measured precision missed the target by > tolerance

    @property
    def gap_points(self) -> float:
        """How far the automated share trails the oracle's, in percentage points."""
        return 100 * (self.oracle_mean - self.share_mean)

    @property
    def flag(self) -> str:
        """`FAIL` when a seed automated answers less precise than the target allows."""
        return "FAIL" if self.failing else "ok"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "target": self.target,
            "size": self.size,
            "share_mean": self.share_mean,
            "share_min": self.share_min,
            "share_max": self.share_max,
            "automated_items_mean": self.items_mean,
            "precision_mean": self.precision_mean,
            "precision_min": self.precision_min,
            "oracle_share_mean": self.oracle_mean,
            "gap_points": self.gap_points,
            "threshold_mean": self.threshold_mean,
            "flag": self.flag,
        }


@dataclass(frozen=True)
class SpotCheck:
    """Simulated spot checks of one seed's automated answers."""

    seed: int
    automated: int
    precision: float | None
    sample: int
    with_replacement: bool
    coverage: float | None
    mean_width: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "seed": self.seed,
            "automated": self.automated,
            "precision": self.precision,
            "sample": self.sample,
            "with_replacement": self.with_replacement,
            "coverage": self.coverage,
            "mean_width": self.mean_width,
        }


# --- input ---------------------------------------------------------------------------------------


def read_dataset(path: Path) -> Dataset:
    """Rows of a UTF-8 CSV with a header naming the columns `text` and `label`."""
    texts: list[str] = []
    labels: list[str] = []
    line = 1
    try:
        # utf-8-sig: spreadsheets often save a byte-order mark before the header.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DatasetError(f"{path} is empty; expected a header row: text,label")
            names = [name.strip() for name in header]
            if "text" not in names or "label" not in names:
                shown = ",".join(names[:6])[:80]
                raise DatasetError(
                    f"{path}: the header row must name the columns text and label; found {shown!r}"
                )
            text_at, label_at = names.index("text"), names.index("label")
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(names):
                    fields = f"{len(row)} field{'s' * (len(row) != 1)}"
                    raise DatasetError(
                        f"{path}, line {line}: {fields} where the header has {len(names)}; "
                        "quote texts that contain commas"
                    )
                text, label = row[text_at], row[label_at].strip()
                if not text.strip() or not label:
                    raise DatasetError(f"{path}, line {line}: the text or the label is empty")
                texts.append(text)
                labels.append(label)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 (byte {exc.start}); save it as UTF-8") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}, line {line}: not valid CSV: {exc}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    label_set = sorted(set(labels))
    if len(label_set) < 2:
        raise DatasetError(f"{path}: needs at least two different labels, found {len(label_set)}")
    return Dataset(texts, labels, label_set)


def parse_sizes(raw: str) -> list[int | str]:
    """`100,200,full` -> [100, 200, "full"]."""
    sizes: list[int | str] = []
    for part in raw.split(","):
        part = part.strip().lower()
        if part == FULL:
            sizes.append(FULL)
            continue
        try:
            size = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a size: {part!r} (numbers or 'full')") from None
        if size < 2:
            raise argparse.ArgumentTypeError(f"a size needs at least 2 answers, got {size}")
        sizes.append(size)
    return sizes


def parse_targets(raw: str) -> list[float]:
    """`0.9,0.95` -> [0.9, 0.95]; each strictly between 0 and 1."""
    targets = []
    for part in raw.split(","):
        try:
            target = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a precision: {part.strip()!r}") from None
        if not 0.0 < target < 1.0:
            raise argparse.ArgumentTypeError(f"a target precision is between 0 and 1: {target}")
        targets.append(target)
    return sorted(set(targets))


def parse_share(raw: str) -> float:
    """A test share strictly between 0 and 1."""
    try:
        share = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a share: {raw!r}") from None
    if not 0.0 < share < 1.0:
        raise argparse.ArgumentTypeError(f"the test share is between 0 and 1: {share}")
    return share


def held_out_count(rows: int, share: float) -> int:
    """How many rows the test split takes."""
    return min(MAX_TEST_ITEMS, round(share * rows))


def resolve_sizes(requested: Sequence[int | str], pool: int) -> tuple[list[int], list[int]]:
    """Sizes that fit the pool (ascending, `full` = the pool), and the ones that do not."""
    kept = {pool if size == FULL else int(size) for size in requested}
    fits = sorted(size for size in kept if size <= pool)
    return fits, sorted(size for size in kept if size > pool)


# --- measuring -----------------------------------------------------------------------------------


def oracle_share(
    confidence: NDArray[np.float64], correct: NDArray[np.bool_], target: float
) -> float:
    """The largest share a confidence threshold chosen on these very items automates at target."""
    n = len(confidence)
    if n == 0:
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    hits = np.cumsum(correct[order])
    # A threshold takes every item at or above it: only the ends of tie groups are cuts.
    ends = np.flatnonzero(np.append(ranked[1:] < ranked[:-1], True))
    reaching = ends[hits[ends] >= target * (ends + 1) - 1e-9]
    return 0.0 if len(reaching) == 0 else float(reaching[-1] + 1) / n


def fit_one(
    data: Dataset,
    pool: NDArray[np.intp],
    test: NDArray[np.intp],
    *,
    seed: int,
    size: int,
    targets: Sequence[float],
    featurizer: str,
) -> Run:
    """Fit on the first `size` answers of the pool the product's way and score the test split."""
    chosen = pool[:size].tolist()
    test_texts = [data.texts[i] for i in test.tolist()]
    truth = np.asarray([data.labels[i] for i in test.tolist()], dtype=object)
    started = time.perf_counter()
    try:
        fitted = fit_with_evidence(
            [data.texts[i] for i in chosen],
            [data.labels[i] for i in chosen],
            labels=data.label_set,
            featurizer=featurizer,
            random_state=seed,
        )
    except TrainingError:
        empty = np.zeros(len(test), dtype=bool)
        return Run(
            seed=seed,
            size=size,
            seconds=time.perf_counter() - started,
            trained=False,
            confidence=np.zeros(len(test)),
            correct=empty,
            eligible=empty,
            auto_labels=0,
            choices=dict.fromkeys(targets),
        )
    seconds = time.perf_counter() - started
    prediction = fitted.classifier.predict(test_texts)
    allowed = set(fitted.auto_labels)
    return Run(
        seed=seed,
        size=size,
        seconds=seconds,
        trained=True,
        confidence=prediction.confidence,
        correct=np.asarray(np.asarray(prediction.predicted, dtype=object) == truth, dtype=bool),
        eligible=np.asarray([p in allowed for p in prediction.predicted], dtype=bool),
        auto_labels=len(fitted.auto_labels),
        choices={target: fitted.choose(target) for target in targets},
    )


def cell(run: Run, target: float) -> Cell:
    """What `run`'s threshold for `target` automates on the test split."""
    automated = run.automated(target)
    count = int(automated.sum())
    right = int(run.correct[automated].sum())
    choice = run.choices[target]
    evidence = (0, 0, 0) if choice is None else (choice.evidence, choice.automated, choice.correct)
    n = len(run.confidence)
    return Cell(
        seed=run.seed,
        size=run.size,
        target=target,
        threshold=None if choice is None else choice.threshold,
        lower_bound=None if choice is None else choice.lower_bound,
        evidence=evidence,
        automated=count,
        correct=right,
        share=count / n if n else 0.0,
        precision=right / count if count else None,
        oracle=oracle_share(run.confidence, run.correct, target) if run.trained else 0.0,
    )


def summarize(cells: Sequence[Cell]) -> Summary:
    """One table row from the seeds' cells of a (target, size)."""
    target = cells[0].target
    shares = [c.share for c in cells]
    precisions = [c.precision for c in cells if c.precision is not None]
    thresholds = [c.threshold for c in cells if c.threshold is not None]
    failing = [
        c for c in cells if c.precision is not None and c.precision < target - PRECISION_TOLERANCE
    ]
    return Summary(
        target=target,
        size=cells[0].size,
        share_mean=float(np.mean(shares)),
        share_min=min(shares),
        share_max=max(shares),
        items_mean=float(np.mean([c.automated for c in cells])),
        precision_mean=float(np.mean(precisions)) if precisions else None,
        precision_min=min(precisions) if precisions else None,
        oracle_mean=float(np.mean([c.oracle for c in cells])),
        threshold_mean=float(np.mean(thresholds)) if thresholds else None,
        failing=failing,
    )


def spot_check(run: Run, *, runs: int = SPOT_RUNS) -> SpotCheck:
    """Simulate the product's spot checks of `run`'s automated answers at SPOT_TARGET."""
    automated = run.automated(SPOT_TARGET)
    right = run.correct[automated]
    n = len(right)
    sample = max(SPOT_MINIMUM, math.ceil(SPOT_SHARE * n))
    with_replacement = n < sample
    if n == 0:
        return SpotCheck(run.seed, 0, None, sample, with_replacement, None, None)
    truth = float(right.mean())
    rng = np.random.default_rng(run.seed)
    hits = np.empty(runs, dtype=np.intp)
    for r in range(runs):
        drawn = (
            rng.integers(0, n, size=sample)
            if with_replacement
            else rng.choice(n, size=sample, replace=False)
        )
        hits[r] = int(right[drawn].sum())
    # The sample size is fixed, so each distinct number of hits needs its interval once.
    intervals = {
        int(k): clopper_pearson(int(k), sample, confidence=SPOT_CONFIDENCE) for k in np.unique(hits)
    }
    covered = [intervals[int(k)].low <= truth <= intervals[int(k)].high for k in hits]
    widths = [intervals[int(k)].high - intervals[int(k)].low for k in hits]
    return SpotCheck(
        seed=run.seed,
        automated=n,
        precision=truth,
        sample=sample,
        with_replacement=with_replacement,
        coverage=float(np.mean(covered)),
        mean_width=float(np.mean(widths)),
    )


# --- printing ------------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    )


def percent(value: float) -> str:
    """0.1234 -> '12.3 %'."""
    return f"{100 * value:.1f} %"


def optional(value: float | None, spec: str = ".3f") -> str:
    """A number, or a dash where there is none."""
    return "—" if value is None else format(value, spec)


def size_name(size: int, pool: int) -> str:
    """'1,000', or '9,158 (full)' for the whole pool."""
    return f"{size:,} (full)" if size == pool else f"{size:,}"


def target_table(rows: Sequence[Summary], *, pool: int) -> str:
    """One target's rows, one per size."""
    header = [
        "answers",
        "automated",
        "(min-max)",
        "items",
        "precision",
        "(min)",
        "oracle",
        "gap",
        "threshold",
        "flag",
    ]
    body = [
        [
            size_name(s.size, pool),
            percent(s.share_mean),
            f"({100 * s.share_min:.1f}-{100 * s.share_max:.1f})",
            f"{s.items_mean:.0f}",
            optional(s.precision_mean),
            f"({optional(s.precision_min)})",
            percent(s.oracle_mean),
            f"{s.gap_points:+.1f}",
            optional(s.threshold_mean),
            s.flag,
        ]
        for s in rows
    ]
    return table(header, body)


def failure_line(c: Cell) -> str:
    """A failing seed with the 95 % interval of its measured precision (test-split noise)."""
    interval = clopper_pearson(c.correct, c.automated)
    return (
        f"seed {c.seed}: {c.correct}/{c.automated} = {c.precision:.3f} "
        f"(95 % CI {interval.low:.3f}-{interval.high:.3f}) at threshold {c.threshold:.3f}, "
        f"chosen on {c.evidence[2]}/{c.evidence[1]} right out-of-fold answers above it"
    )


def calibration_rows(runs: Sequence[Run], sizes: Sequence[int], *, pool: int) -> list[list[str]]:
    """Per size: seconds per fit, accuracy and ECE of the deployed model on the test split."""
    rows = []
    for size in sizes:
        group = [r for r in runs if r.size == size]
        trained = [r for r in group if r.trained]
        seconds = [r.seconds for r in group]
        accuracy = [float(r.correct.mean()) for r in trained]
        ece = [expected_calibration_error(r.confidence, r.correct) for r in trained]
        rows.append(
            [
                size_name(size, pool),
                f"{np.mean(seconds):.1f}",
                f"({min(seconds):.1f}-{max(seconds):.1f})",
                optional(float(np.mean(accuracy)) if accuracy else None),
                optional(float(np.mean(ece)) if ece else None),
                f"{np.mean([r.auto_labels for r in group]):.0f}",
                f"{len(trained)}/{len(group)}",
            ]
        )
    return rows


def reliability_table(smallest: Run, largest: Run, *, pool: int) -> str:
    """Reliability bins of two seed-0 models side by side: items, mean confidence, accuracy."""
    sides = [
        reliability_bins(r.confidence, r.correct, bins=RELIABILITY_BINS)
        for r in (smallest, largest)
    ]
    header = ["confidence"]
    for run in (smallest, largest):
        header += [f"{size_name(run.size, pool)}: items", "conf", "acc"]
    body = []
    for i, first in enumerate(sides[0]):
        row = [f"{first.low:.1f}-{first.high:.1f}"]
        for side in sides:
            b = side[i]
            row += [str(b.count), optional(b.mean_confidence, ".2f"), optional(b.accuracy, ".2f")]
        body.append(row)
    return table(header, body)


def report_text(result: dict[str, Any], runs: Sequence[Run], summaries: Sequence[Summary]) -> str:
    """Everything a reader needs, as tables."""
    pool, sizes, targets = result["pool"], result["sizes"], result["targets"]
    out = [
        f"{result['dataset']}: {result['rows']:,} rows, {result['labels']} labels; "
        f"test split {result['test_items']:,} items, pool {pool:,} answers; "
        f"{result['seeds']} seed{'s' * (result['seeds'] != 1)}; features {result['features']}",
    ]
    if result["skipped_sizes"]:
        skipped = ", ".join(f"{s:,}" for s in result["skipped_sizes"])
        out.append(f"skipped sizes larger than the pool: {skipped}")
    out.append(
        "means over seeds; items = automated test items; precision (min) = worst seed; "
        "oracle = best threshold chosen on the test split; gap = oracle - automated, in points"
    )
    for target in targets:
        out += ["", f"Target precision {target:.2f}"]
        out.append(target_table([s for s in summaries if s.target == target], pool=pool))

    goals = result["goals"]
    out += ["", "Goals"]
    precision_goal = goals["precision"]
    out.append(
        f"(1) measured precision >= target - {PRECISION_TOLERANCE} wherever anything was "
        f"automated: {'holds' if precision_goal['holds'] else 'FAILS'}"
    )
    for s in summaries:
        for c in s.failing:
            out.append(f"    target {s.target:.2f}, {size_name(s.size, pool)}: {failure_line(c)}")
    gap_goal = goals["oracle_gap"]
    if gap_goal["holds"] is None:
        out.append(
            f"(2) share within 5 points of the oracle: no size of {GAP_GOAL_FROM:,}+ answers"
        )
    else:
        out.append(
            f"(2) share within {100 * GAP_GOAL:.0f} points of the oracle from {GAP_GOAL_FROM:,} "
            f"answers on: {'holds' if gap_goal['holds'] else 'FAILS'}"
        )
        for miss in gap_goal["misses"]:
            out.append(
                f"    target {miss['target']:.2f}, {size_name(miss['size'], pool)}: "
                f"{percent(miss['share'])} automated vs oracle {percent(miss['oracle'])} "
                f"({miss['gap_points']:.1f} points)"
            )

    spot = result["spot_check"]
    out += [
        "",
        f"Spot checks (target {SPOT_TARGET}, {size_name(spot['size'], pool)} answers): "
        f"{spot['runs']:,} runs of a {100 * SPOT_SHARE:.0f} % sample (at least {SPOT_MINIMUM}) "
        f"of the automated test items; {100 * SPOT_CONFIDENCE:.0f} % Clopper-Pearson interval",
    ]
    spot_rows = [
        [
            str(s["seed"]),
            str(s["automated"]),
            optional(s["precision"]),
            "—"
            if not s["automated"]
            else f"{s['sample']}{' (with replacement)' if s['with_replacement'] else ''}",
            "—" if s["coverage"] is None else percent(s["coverage"]),
            optional(s["mean_width"]),
        ]
        for s in spot["seeds"]
    ]
    out.append(
        table(["seed", "automated", "true precision", "sample", "coverage", "width"], spot_rows)
    )
    verdict = {True: "holds", False: "FAILS", None: "not measured (nothing automated)"}
    out.append(
        f"(3) coverage >= {100 * SPOT_COVERAGE_GOAL:.0f} % in every seed: "
        f"{verdict[goals['spot_check']['holds']]}"
    )

    out += [
        "",
        "Calibration of the deployed model on the test split, and seconds per fit",
        table(
            ["answers", "s/fit", "(min-max)", "accuracy", "ECE", "auto labels", "trained"],
            calibration_rows(runs, sizes, pool=pool),
        ),
    ]
    seed0 = [r for r in runs if r.seed == 0]
    smallest, largest = seed0[0], seed0[-1]
    if smallest.trained and largest.trained:
        out += [
            "",
            "Reliability (seed 0): items per confidence bin, their mean confidence and accuracy",
            reliability_table(smallest, largest, pool=pool),
        ]
    total = sum(r.seconds for r in runs)
    out += ["", f"{len(runs)} fits in {total:.0f} s"]
    return "\n".join(out)


# --- the run -------------------------------------------------------------------------------------


def measure(
    data: Dataset,
    *,
    seeds: int,
    requested_sizes: Sequence[int | str],
    targets: Sequence[float],
    test_share: float,
    featurizer: str,
    dataset_name: str,
) -> tuple[dict[str, Any], list[Run], list[Summary]]:
    """Fit every (seed, size), measure every target; the JSON result, runs and table rows."""
    rows = len(data.texts)
    n_test = held_out_count(rows, test_share)
    pool = rows - n_test
    if n_test < 1 or pool < 2:
        raise DatasetError(
            f"{dataset_name}: {rows} rows are too few to split off a test share of {test_share}"
        )
    sizes, skipped = resolve_sizes(requested_sizes, pool)
    if not sizes:
        raise DatasetError(f"{dataset_name}: no size fits the pool of {pool:,} answers; add 'full'")
    # The spot check needs a threshold for its own target even if it is not printed.
    wanted = sorted({*targets, SPOT_TARGET})
    runs: list[Run] = []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(rows)
        test, pool_order = order[:n_test], order[n_test:]
        for size in sizes:
            run = fit_one(
                data, pool_order, test, seed=seed, size=size, targets=wanted, featurizer=featurizer
            )
            runs.append(run)
            note = "" if run.trained else " (too few answers to train)"
            print(
                f"seed {seed}, {size:,} answers: fit in {run.seconds:.1f} s{note}",
                file=sys.stderr,
                flush=True,
            )
    cells = [cell(run, target) for run in runs for target in targets]
    summaries = [
        summarize([c for c in cells if c.target == target and c.size == size])
        for target in targets
        for size in sizes
    ]
    gap_misses = [
        {
            "target": s.target,
            "size": s.size,
            "share": s.share_mean,
            "oracle": s.oracle_mean,
            "gap_points": s.gap_points,
        }
        for s in summaries
        if s.size >= GAP_GOAL_FROM and s.gap_points > 100 * GAP_GOAL
    ]
    spot_size = sizes[-1]
    spots = [spot_check(r) for r in runs if r.size == spot_size]
    coverages = [s.coverage for s in spots if s.coverage is not None]
    reliability = {
        str(run.size): [
            asdict(b) for b in reliability_bins(run.confidence, run.correct, bins=RELIABILITY_BINS)
        ]
        for run in runs
        if run.seed == 0 and run.size in (sizes[0], sizes[-1]) and run.trained
    }
    result: dict[str, Any] = {
        "dataset": dataset_name,
        "rows": rows,
        "labels": len(data.label_set),
        "test_items": n_test,
        "pool": pool,
        "seeds": seeds,
        "features": featurizer,
        "sizes": sizes,
        "skipped_sizes": skipped,
        "targets": list(targets),
        "summary": [s.as_dict() for s in summaries],
        "goals": {
            "precision": {
                "tolerance": PRECISION_TOLERANCE,
                "holds": not any(s.failing for s in summaries),
                "misses": [c.as_dict() for s in summaries for c in s.failing],
            },
            "oracle_gap": {
                "from_answers": GAP_GOAL_FROM,
                "points": 100 * GAP_GOAL,
                "holds": None if sizes[-1] < GAP_GOAL_FROM else not gap_misses,
                "misses": gap_misses,
            },
            "spot_check": {
                "coverage_goal": SPOT_COVERAGE_GOAL,
                "holds": all(c >= SPOT_COVERAGE_GOAL for c in coverages) if coverages else None,
            },
        },
        "spot_check": {
            "target": SPOT_TARGET,
            "size": spot_size,
            "runs": SPOT_RUNS,
            "share": SPOT_SHARE,
            "minimum": SPOT_MINIMUM,
            "confidence": SPOT_CONFIDENCE,
            "coverage_mean": float(np.mean(coverages)) if coverages else None,
            "seeds": [s.as_dict() for s in spots],
        },
        "fits": [
            {
                "seed": r.seed,
                "size": r.size,
                "seconds": r.seconds,
                "trained": r.trained,
                "accuracy": float(r.correct.mean()) if r.trained else None,
                "ece": expected_calibration_error(r.confidence, r.correct) if r.trained else None,
                "auto_labels": r.auto_labels,
            }
            for r in runs
        ],
        "reliability_seed0": reliability,
        "cells": [c.as_dict() for c in cells],
    }
    return result, runs, summaries


def main() -> int:
    """Parse options, run the benchmark and print tables (or one JSON object)."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("dataset", type=Path, help="a UTF-8 CSV with a header row: text,label")
    parser.add_argument("--seeds", type=int, default=3, help="repetitions with other shuffles")
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes("100,200,500,1000,full"),
        help="answers to train on; 'full' = every answer outside the test split",
    )
    parser.add_argument("--targets", type=parse_targets, default=parse_targets("0.90,0.95,0.99"))
    parser.add_argument("--test-share", type=parse_share, default=0.3)
    parser.add_argument("--features", choices=sorted(FEATURIZERS), default=DEFAULT_FEATURIZER)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    try:
        data = read_dataset(args.dataset)
        result, runs, summaries = measure(
            data,
            seeds=args.seeds,
            requested_sizes=args.sizes,
            targets=args.targets,
            test_share=args.test_share,
            featurizer=args.features,
            dataset_name=str(args.dataset),
        )
    except DatasetError as exc:
        print(f"{Path(__file__).name}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print(report_text(result, runs, summaries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
