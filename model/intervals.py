"""Uncertainty and agreement figures printed beside the product's numbers.

Exact binomial intervals, bootstrap intervals over resampled rows, McNemar's test, inter-rater
agreement (Cohen's kappa, Krippendorff's alpha) and reliability-diagram bins.
"""

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray
from scipy.stats import beta, binom

# Above this many drawn indices per batch, bootstrap draws are made in chunks to bound memory
# (5e6 intp values is 40 MB); chunking does not change the draws, only how many are held at once.
_MAX_INDICES_PER_BATCH = 5_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval, computed from `n` observations."""

    estimate: float | None
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain dict for reports, floats rounded to 4 decimals."""
        return {
            "estimate": None if self.estimate is None else round(self.estimate, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
            "n": self.n,
        }


@dataclass(frozen=True)
class McNemar:
    """Discordant-pair counts and the exact two-sided McNemar p-value."""

    new_only: int
    old_only: int
    p_value: float


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width confidence bin (low, high] of a reliability diagram."""

    low: float
    high: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


def _check_level(value: float, name: str) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


def clopper_pearson(successes: int, trials: int, *, confidence: float = 0.95) -> Interval:
    """Exact two-sided binomial (Clopper-Pearson) interval for successes / trials."""
    _check_level(confidence, "confidence")
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return Interval(None, 0.0, 1.0, 0)
    tail = (1.0 - confidence) / 2.0
    # The beta quantiles are 0 or 1 at the edges in theory but nan in scipy (a zero shape
    # parameter), so the edges are set explicitly.
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = (
        1.0
        if successes == trials
        else float(beta.ppf(1.0 - tail, successes + 1, trials - successes))
    )
    return Interval(successes / trials, low, high, trials)


def precision_lower_bound(successes: int, trials: int, *, delta: float = 0.05) -> float:
    """One-sided exact (Clopper-Pearson) lower bound on a proportion, holding with prob 1-delta."""
    _check_level(delta, "delta")
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if successes == 0:
        return 0.0
    return float(beta.ppf(delta, successes, trials - successes + 1))


def _resampled_indices(n: int, resamples: int, seed: int) -> Iterator[NDArray[np.intp]]:
    """Yield (rows, n) matrices of row indices drawn with replacement, `resamples` rows in all."""
    rng = np.random.default_rng(seed)
    per_batch = max(1, _MAX_INDICES_PER_BATCH // n)
    remaining = resamples
    while remaining > 0:
        rows = min(per_batch, remaining)
        yield rng.integers(0, n, size=(rows, n), dtype=np.intp)
        remaining -= rows


def _percentile_interval(
    estimate: float, replicates: NDArray[np.float64], *, n: int, confidence: float
) -> Interval:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return Interval(estimate, float(low), float(high), n)


def _check_resampling(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    _check_level(confidence, "confidence")


def bootstrap_interval(
    statistic: Callable[[NDArray[np.intp]], float],
    *,
    n: int,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of `statistic` evaluated on resampled row indices 0..n-1."""
    _check_resampling(resamples, confidence)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if n == 0:
        return Interval(None, 0.0, 1.0, 0)
    replicates = np.fromiter(
        (statistic(rows) for batch in _resampled_indices(n, resamples, seed) for rows in batch),
        dtype=np.float64,
        count=resamples,
    )
    estimate = float(statistic(np.arange(n, dtype=np.intp)))
    return _percentile_interval(estimate, replicates, n=n, confidence=confidence)


def _same_length_bools(
    correct_new: NDArray[np.bool_], correct_old: NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    new = np.asarray(correct_new, dtype=np.bool_)
    old = np.asarray(correct_old, dtype=np.bool_)
    if new.shape != old.shape or new.ndim != 1:
        raise ValueError(
            f"correct_new and correct_old must be 1-d and of the same length, "
            f"got shapes {new.shape} and {old.shape}"
        )
    return new, old


def paired_bootstrap_difference(
    correct_new: NDArray[np.bool_],
    correct_old: NDArray[np.bool_],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Paired bootstrap interval for accuracy(new) - accuracy(old) on the same rows."""
    _check_resampling(resamples, confidence)
    new, old = _same_length_bools(correct_new, correct_old)
    n = len(new)
    if n == 0:
        # A difference of two proportions can be anything in [-1, 1].
        return Interval(None, -1.0, 1.0, 0)
    # Per-row differences keep each row's pairing, so resampling them resamples both models at
    # once; this is the same draw bootstrap_interval would make, vectorised per batch.
    difference = new.astype(np.float64) - old.astype(np.float64)
    replicates = np.concatenate(
        [difference[batch].mean(axis=1) for batch in _resampled_indices(n, resamples, seed)]
    )
    return _percentile_interval(float(difference.mean()), replicates, n=n, confidence=confidence)


def mcnemar(correct_new: NDArray[np.bool_], correct_old: NDArray[np.bool_]) -> McNemar:
    """Exact two-sided McNemar test: a binomial test on the rows only one model gets right."""
    new, old = _same_length_bools(correct_new, correct_old)
    new_only = int(np.count_nonzero(new & ~old))
    old_only = int(np.count_nonzero(old & ~new))
    discordant = new_only + old_only
    if discordant == 0:
        return McNemar(new_only, old_only, 1.0)
    p_value = min(1.0, 2.0 * float(binom.cdf(min(new_only, old_only), discordant, 0.5)))
    return McNemar(new_only, old_only, p_value)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None where it is undefined."""
    if len(a) != len(b):
        raise ValueError(f"both raters must label the same items, got {len(a)} and {len(b)}")
    items = len(a)
    if items == 0:
        return None
    observed = Fraction(sum(x == y for x, y in zip(a, b, strict=True)), items)
    counts_a, counts_b = Counter(a), Counter(b)
    expected = Fraction(sum(counts_a[c] * counts_b[c] for c in counts_a), items * items)
    # Expected agreement 1 means both raters used one and the same label throughout: kappa is
    # 0/0 there (sklearn returns nan), and None keeps a nan out of reports.
    if expected == 1:
        return None
    return float((observed - expected) / (1 - expected))


def krippendorff_alpha(units: Sequence[Sequence[str]]) -> float | None:
    """Nominal Krippendorff's alpha over units labelled by any number of raters, gaps allowed."""
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", coincidence matrix:
    # each unit with m_u >= 2 values adds n_uc * n_uk / (m_u - 1) to o_ck, and
    # alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c * n_k.
    # Fractions keep the figure exact until the final conversion.
    disagreeing = Fraction(0)
    value_counts: Counter[str] = Counter()
    for unit in units:
        m_u = len(unit)
        if m_u < 2:
            continue
        in_unit = Counter(unit)
        # sum_{c != k} n_uc n_uk = m_u^2 - sum_c n_uc^2
        disagreeing += Fraction(m_u * m_u - sum(v * v for v in in_unit.values()), m_u - 1)
        value_counts.update(in_unit)
    n = sum(value_counts.values())
    expected_pairs = n * n - sum(v * v for v in value_counts.values())
    # With under two pairable values or a single category there is no expected disagreement
    # to compare against: alpha is 0/0.
    if n < 2 or expected_pairs == 0:
        return None
    return float(1 - (n - 1) * disagreeing / expected_pairs)


def reliability_bins(
    confidences: NDArray[np.floating], correct: NDArray[np.bool_], *, bins: int = 10
) -> list[ReliabilityBin]:
    """Equal-width confidence bins with their count, mean confidence and accuracy."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    confidence_values = np.asarray(confidences, dtype=np.float64)
    correct_values = np.asarray(correct, dtype=np.bool_)
    if confidence_values.shape != correct_values.shape:
        raise ValueError(
            f"confidences and correct must have the same shape, "
            f"got {confidence_values.shape} and {correct_values.shape}"
        )
    edges = np.linspace(0.0, 1.0, bins + 1)
    # The same binning as model.metrics.expected_calibration_error, so a diagram drawn from
    # these bins adds up to the ECE printed beside it: bin i holds (edges[i], edges[i+1]] and a
    # confidence of exactly 0 joins the first bin.
    index = np.clip(np.searchsorted(edges, confidence_values, side="left") - 1, 0, bins - 1)
    result = []
    for b in range(bins):
        mask = index == b
        count = int(np.count_nonzero(mask))
        result.append(
            ReliabilityBin(
                low=float(edges[b]),
                high=float(edges[b + 1]),
                count=count,
                mean_confidence=float(confidence_values[mask].mean()) if count else None,
                accuracy=float(correct_values[mask].mean()) if count else None,
            )
        )
    return result
