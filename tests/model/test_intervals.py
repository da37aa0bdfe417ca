"""Exact intervals, bootstrap intervals, McNemar, agreement and reliability bins."""

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.stats import binom, binomtest
from sklearn.metrics import cohen_kappa_score, f1_score

import model.intervals
from model.intervals import (
    Interval,
    McNemar,
    bootstrap_interval,
    clopper_pearson,
    cohen_kappa,
    krippendorff_alpha,
    mcnemar,
    paired_bootstrap_difference,
    precision_lower_bound,
    reliability_bins,
)
from model.metrics import expected_calibration_error

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section A: two observers,
# ten units, binary values, no missing data.
BINARY_A = ["0", "1", "0", "0", "0", "0", "0", "0", "1", "0"]
BINARY_B = ["1", "1", "1", "0", "0", "1", "0", "0", "0", "0"]


# --- Interval -------------------------------------------------------------------------------


def test_interval_as_dict_rounds_floats_to_four_decimals() -> None:
    interval = Interval(estimate=2 / 3, low=0.123456, high=0.987654, n=3)
    assert interval.as_dict() == {"estimate": 0.6667, "low": 0.1235, "high": 0.9877, "n": 3}


def test_interval_as_dict_keeps_missing_estimate_as_none() -> None:
    assert Interval(None, 0.0, 1.0, 0).as_dict() == {
        "estimate": None,
        "low": 0.0,
        "high": 1.0,
        "n": 0,
    }


# --- clopper_pearson ------------------------------------------------------------------------


@pytest.mark.parametrize(("successes", "trials"), [(0, 10), (10, 10), (5, 10), (3, 17)])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_clopper_pearson_matches_scipy_exact_interval(
    successes: int, trials: int, confidence: float
) -> None:
    reference = binomtest(successes, trials).proportion_ci(
        confidence_level=confidence, method="exact"
    )
    interval = clopper_pearson(successes, trials, confidence=confidence)
    assert interval.estimate == pytest.approx(successes / trials)
    assert interval.low == pytest.approx(reference.low, abs=1e-12)
    assert interval.high == pytest.approx(reference.high, abs=1e-12)
    assert interval.n == trials


def test_clopper_pearson_edges_are_exactly_zero_and_one() -> None:
    none_right = clopper_pearson(0, 10)
    all_right = clopper_pearson(10, 10)
    assert none_right.low == 0.0
    assert all_right.high == 1.0
    # With no successes the upper end solves (1 - p)^n = alpha/2.
    assert none_right.high == pytest.approx(1 - 0.025 ** (1 / 10))
    assert all_right.low == pytest.approx(0.025 ** (1 / 10))


def test_clopper_pearson_without_trials_is_the_whole_unit_interval() -> None:
    assert clopper_pearson(0, 0) == Interval(None, 0.0, 1.0, 0)


@pytest.mark.parametrize(("successes", "trials"), [(-1, 5), (6, 5), (1, 0)])
def test_clopper_pearson_rejects_impossible_counts(successes: int, trials: int) -> None:
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson(successes, trials)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95.0])
def test_clopper_pearson_rejects_confidence_outside_zero_one(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        clopper_pearson(3, 10, confidence=confidence)


@pytest.mark.parametrize("p", [0.03, 0.2, 0.5, 0.85])
def test_clopper_pearson_covers_the_true_rate_on_simulated_binomials(p: float) -> None:
    trials, draws = 25, 2000
    successes = np.random.default_rng(7).binomial(trials, p, size=draws)
    # One interval per possible count; each draw looks its interval up.
    covers = np.array(
        [
            (interval := clopper_pearson(k, trials)).low <= p <= interval.high
            for k in range(trials + 1)
        ]
    )
    assert covers[successes].mean() >= 0.95


def test_clopper_pearson_exact_coverage_is_at_least_nominal() -> None:
    """Coverage summed over the binomial distribution never falls below the confidence."""
    trials = 30
    intervals = [clopper_pearson(k, trials, confidence=0.9) for k in range(trials + 1)]
    lows = np.array([i.low for i in intervals])
    highs = np.array([i.high for i in intervals])
    for p in np.linspace(0.01, 0.99, 50):
        weights = binom.pmf(np.arange(trials + 1), trials, p)
        assert weights[(lows <= p) & (p <= highs)].sum() >= 0.9 - 1e-12


# --- precision_lower_bound ------------------------------------------------------------------


@pytest.mark.parametrize("trials", [1, 5, 40])
@pytest.mark.parametrize("delta", [0.05, 0.1])
def test_precision_lower_bound_with_all_successes_is_delta_root(trials: int, delta: float) -> None:
    assert precision_lower_bound(trials, trials, delta=delta) == pytest.approx(
        delta ** (1 / trials)
    )


def test_precision_lower_bound_is_the_lower_end_of_a_two_sided_interval_at_twice_delta() -> None:
    assert precision_lower_bound(7, 20, delta=0.05) == pytest.approx(
        clopper_pearson(7, 20, confidence=0.9).low
    )


def test_precision_lower_bound_matches_scipy_one_sided_exact_bound() -> None:
    reference = binomtest(37, 50, alternative="greater").proportion_ci(
        confidence_level=0.95, method="exact"
    )
    assert precision_lower_bound(37, 50) == pytest.approx(reference.low, abs=1e-12)


@pytest.mark.parametrize(("successes", "trials"), [(0, 0), (0, 12)])
def test_precision_lower_bound_without_successes_is_zero(successes: int, trials: int) -> None:
    assert precision_lower_bound(successes, trials) == 0.0


def test_precision_lower_bound_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="successes"):
        precision_lower_bound(4, 3)


# --- bootstrap_interval ---------------------------------------------------------------------


def _correct_rows(n: int, rate: float, seed: int) -> NDArray[np.bool_]:
    return np.random.default_rng(seed).random(n) < rate


def test_bootstrap_interval_of_accuracy_contains_the_estimate() -> None:
    correct = _correct_rows(200, 0.7, seed=1)
    interval = bootstrap_interval(lambda rows: float(correct[rows].mean()), n=len(correct))
    assert interval.estimate is not None
    assert interval.estimate == pytest.approx(correct.mean())
    assert interval.low < interval.estimate < interval.high
    assert interval.n == 200


def test_bootstrap_interval_narrows_as_rows_grow() -> None:
    widths = []
    for n in (50, 800):
        correct = _correct_rows(n, 0.7, seed=2)

        def accuracy(rows: NDArray[np.intp], correct: NDArray[np.bool_] = correct) -> float:
            return float(correct[rows].mean())

        interval = bootstrap_interval(accuracy, n=n)
        widths.append(interval.high - interval.low)
    # The width shrinks like 1/sqrt(n): 16 times the rows, about a quarter of the width.
    assert widths[1] < widths[0] / 2.5


def test_bootstrap_interval_of_accuracy_is_near_the_exact_interval() -> None:
    correct = _correct_rows(400, 0.6, seed=3)
    interval = bootstrap_interval(
        lambda rows: float(correct[rows].mean()), n=len(correct), resamples=2000
    )
    exact = clopper_pearson(int(correct.sum()), len(correct))
    assert interval.low == pytest.approx(exact.low, abs=0.015)
    assert interval.high == pytest.approx(exact.high, abs=0.015)


def test_bootstrap_interval_passes_row_indices_so_any_figure_can_be_resampled() -> None:
    truth = np.array(["a", "b", "c", "a", "b", "c", "a", "a"])
    predicted = np.array(["a", "b", "b", "a", "c", "c", "a", "b"])
    seen: list[NDArray[np.intp]] = []

    def macro_f1(rows: NDArray[np.intp]) -> float:
        seen.append(rows)
        return float(f1_score(truth[rows], predicted[rows], average="macro", zero_division=0))

    interval = bootstrap_interval(macro_f1, n=len(truth), resamples=50)
    assert interval.estimate == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert len(seen) == 51  # 50 resamples and the estimate on all rows
    assert all(len(rows) == 8 and rows.min() >= 0 and rows.max() < 8 for rows in seen)
    assert seen[-1].tolist() == list(range(8))


def test_bootstrap_interval_is_reproducible_for_a_seed_and_varies_across_seeds() -> None:
    correct = _correct_rows(60, 0.5, seed=4)

    def accuracy(rows: NDArray[np.intp]) -> float:
        return float(correct[rows].mean())

    first = bootstrap_interval(accuracy, n=60, resamples=200, seed=11)
    again = bootstrap_interval(accuracy, n=60, resamples=200, seed=11)
    other = bootstrap_interval(accuracy, n=60, resamples=200, seed=12)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)


def test_bootstrap_interval_is_the_same_whether_draws_are_chunked_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    correct = _correct_rows(30, 0.5, seed=5)

    def accuracy(rows: NDArray[np.intp]) -> float:
        return float(correct[rows].mean())

    whole = bootstrap_interval(accuracy, n=30, resamples=101)
    # 70 indices per batch: two resamples at a time, the last batch a single one.
    monkeypatch.setattr(model.intervals, "_MAX_INDICES_PER_BATCH", 70)
    chunked = bootstrap_interval(accuracy, n=30, resamples=101)
    assert chunked == whole


def test_bootstrap_interval_without_rows_is_the_whole_unit_interval() -> None:
    def never_called(rows: NDArray[np.intp]) -> float:
        raise AssertionError("the statistic must not be called without rows")

    assert bootstrap_interval(never_called, n=0) == Interval(None, 0.0, 1.0, 0)


def test_bootstrap_interval_rejects_no_resamples() -> None:
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval(lambda rows: 0.0, n=5, resamples=0)


# --- paired_bootstrap_difference ------------------------------------------------------------


def test_paired_difference_of_identical_models_is_exactly_zero() -> None:
    correct = _correct_rows(100, 0.7, seed=6)
    interval = paired_bootstrap_difference(correct, correct.copy())
    assert interval == Interval(0.0, 0.0, 0.0, 100)


def test_paired_difference_estimate_is_the_accuracy_difference() -> None:
    old = _correct_rows(300, 0.6, seed=8)
    new = old | _correct_rows(300, 0.2, seed=9)
    interval = paired_bootstrap_difference(new, old)
    assert interval.estimate is not None
    assert interval.estimate == pytest.approx(new.mean() - old.mean())
    assert interval.low < interval.estimate < interval.high
    # The new model is never worse on a row, so no resample can make it worse overall.
    assert interval.low >= 0.0


def test_paired_difference_is_narrower_than_resampling_the_models_independently() -> None:
    """Pairing cancels the shared per-row difficulty; that is why the rows are shared."""
    old = _correct_rows(400, 0.7, seed=10)
    new = old.copy()
    new[:20] = True
    paired = paired_bootstrap_difference(new, old)
    rng = np.random.default_rng(0)
    independent = [
        new[rng.integers(0, 400, 400)].mean() - old[rng.integers(0, 400, 400)].mean()
        for _ in range(500)
    ]
    low, high = np.quantile(independent, [0.025, 0.975])
    assert paired.high - paired.low < (high - low) / 2


def test_paired_difference_draws_the_same_rows_as_bootstrap_interval() -> None:
    old = _correct_rows(150, 0.6, seed=12)
    new = _correct_rows(150, 0.7, seed=13)
    difference = new.astype(float) - old.astype(float)

    def mean_difference(rows: NDArray[np.intp]) -> float:
        return float(difference[rows].mean())

    paired = paired_bootstrap_difference(new, old, resamples=300, seed=5)
    general = bootstrap_interval(mean_difference, n=150, resamples=300, seed=5)
    assert paired.estimate == pytest.approx(general.estimate)
    assert (paired.low, paired.high) == pytest.approx((general.low, general.high))


def test_paired_difference_without_rows_spans_minus_one_to_one() -> None:
    empty = np.array([], dtype=bool)
    assert paired_bootstrap_difference(empty, empty) == Interval(None, -1.0, 1.0, 0)


def test_paired_difference_rejects_rows_of_different_length() -> None:
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_difference(np.ones(3, dtype=bool), np.ones(4, dtype=bool))


# --- mcnemar --------------------------------------------------------------------------------


def test_mcnemar_on_a_hand_made_table() -> None:
    # Both right 5, new only 8, old only 2, both wrong 3.
    new = np.array([True] * 5 + [True] * 8 + [False] * 2 + [False] * 3)
    old = np.array([True] * 5 + [False] * 8 + [True] * 2 + [False] * 3)
    result = mcnemar(new, old)
    # P(X <= 2) for X ~ Bin(10, 1/2) is (1 + 10 + 45) / 1024; two-sided doubles it.
    assert (result.new_only, result.old_only) == (8, 2)
    assert result.p_value == pytest.approx(112 / 1024)
    assert result.p_value == pytest.approx(binomtest(8, 10, 0.5).pvalue)


def test_mcnemar_with_balanced_discordant_pairs_caps_p_at_one() -> None:
    new = np.array([True, False, True, False])
    old = np.array([False, True, False, True])
    assert mcnemar(new, old) == McNemar(new_only=2, old_only=2, p_value=1.0)


def test_mcnemar_without_discordant_pairs_has_p_one() -> None:
    correct = np.array([True, False, True])
    assert mcnemar(correct, correct) == McNemar(new_only=0, old_only=0, p_value=1.0)


def test_mcnemar_rejects_rows_of_different_length() -> None:
    with pytest.raises(ValueError, match="same length"):
        mcnemar(np.ones(2, dtype=bool), np.ones(3, dtype=bool))


# --- cohen_kappa ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cohen_kappa_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.choice(["spam", "ham", "other"], size=60).tolist()
    # The second rater copies the first on about two thirds of the items.
    b = [x if rng.random() < 0.66 else str(rng.choice(["spam", "ham", "other"])) for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_cohen_kappa_of_a_hand_made_table() -> None:
    # Rater A says "1" on 2 of 10 items, rater B on 4; they agree on 6. Expected agreement is
    # 0.2 * 0.4 + 0.8 * 0.6 = 0.56, so kappa = (0.6 - 0.56) / (1 - 0.56) = 1 / 11.
    assert cohen_kappa(BINARY_A, BINARY_B) == pytest.approx(1 / 11)


def test_cohen_kappa_of_perfect_agreement_is_one() -> None:
    assert cohen_kappa(["a", "b", "a"], ["a", "b", "a"]) == 1.0


def test_cohen_kappa_is_none_when_both_raters_use_one_label_only() -> None:
    assert cohen_kappa(["a", "a", "a"], ["a", "a", "a"]) is None


def test_cohen_kappa_is_none_without_items() -> None:
    assert cohen_kappa([], []) is None


def test_cohen_kappa_rejects_raters_of_different_length() -> None:
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa(["a"], ["a", "b"])


# --- krippendorff_alpha ---------------------------------------------------------------------


def test_krippendorff_alpha_of_the_binary_worked_example() -> None:
    """Krippendorff (2011) section A gives 0.095.

    Four units disagree, each adding 2 to sum_{c != k} o_ck = 8; the twenty values are six
    "1" and fourteen "0", so sum_{c != k} n_c n_k = 400 - 36 - 196 = 168 and
    alpha = 1 - 19 * 8 / 168 = 2 / 21.
    """
    units = [[x, y] for x, y in zip(BINARY_A, BINARY_B, strict=True)]
    assert krippendorff_alpha(units) == pytest.approx(2 / 21)


def test_krippendorff_alpha_of_two_raters_is_scotts_pi_rescaled() -> None:
    """With two raters and no gaps, alpha = 1 - (2N - 1) / (2N) * (1 - pi) over N items."""
    # Scott's pi: observed 0.6, expected 0.3^2 + 0.7^2 = 0.58, pi = 0.02 / 0.42 = 1 / 21.
    scotts_pi = 1 / 21
    units = [[x, y] for x, y in zip(BINARY_A, BINARY_B, strict=True)]
    assert krippendorff_alpha(units) == pytest.approx(1 - 19 / 20 * (1 - scotts_pi))


def test_krippendorff_alpha_with_many_raters_and_missing_values() -> None:
    """Krippendorff (2011) section C: four observers, twelve units, gaps; nominal alpha 0.743."""
    table = [
        "1 1 . 1",
        "2 2 3 2",
        "3 3 3 3",
        "3 3 3 3",
        "2 2 2 2",
        "1 2 3 4",
        "4 4 4 4",
        "1 1 2 1",
        "2 2 2 2",
        ". 5 5 5",
        ". . 1 1",
        ". . 3 .",  # a single value is not pairable and drops out
    ]
    units = [[v for v in row.split() if v != "."] for row in table]
    # By hand: units 2, 6 and 8 disagree, adding (16 - 10) / 3 + (16 - 4) / 3 + (16 - 10) / 3 = 8
    # to sum_{c != k} o_ck. The n = 40 pairable values split 9, 13, 10, 5, 3 over "1".."5", so
    # sum_{c != k} n_c n_k = 1600 - 384 = 1216 and alpha = 1 - 39 * 8 / 1216 = 113 / 152.
    assert krippendorff_alpha(units) == pytest.approx(113 / 152)
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_of_perfect_agreement_is_one() -> None:
    assert krippendorff_alpha([["a", "a", "a"], ["b", "b"], ["c", "c", "c", "c"], ["a"]]) == 1.0


def test_krippendorff_alpha_is_none_with_a_single_category() -> None:
    assert krippendorff_alpha([["a", "a"], ["a", "a", "a"]]) is None


def test_krippendorff_alpha_is_none_without_pairable_values() -> None:
    assert krippendorff_alpha([["a"], ["b"], []]) is None
    assert krippendorff_alpha([]) is None


# --- reliability_bins -----------------------------------------------------------------------


def test_reliability_bins_are_equal_width_with_counts_and_means() -> None:
    confidences = np.array([0.0, 0.1, 0.15, 0.5, 0.95, 1.0])
    correct = np.array([False, True, False, True, True, False])
    result = reliability_bins(confidences, correct, bins=4)
    assert [(b.low, b.high) for b in result] == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    # 0 joins the first bin; 0.5 sits at the top of (0.25, 0.5].
    assert [b.count for b in result] == [3, 1, 0, 2]
    assert result[0].mean_confidence == pytest.approx(0.25 / 3)
    assert result[0].accuracy == pytest.approx(1 / 3)
    assert result[1].mean_confidence == pytest.approx(0.5)
    assert result[1].accuracy == 1.0
    assert result[2].mean_confidence is None
    assert result[2].accuracy is None
    assert result[3].mean_confidence == pytest.approx(0.975)
    assert result[3].accuracy == 0.5


@pytest.mark.parametrize("bins", [1, 5, 10, 15])
def test_reliability_bins_add_up_to_the_expected_calibration_error(bins: int) -> None:
    rng = np.random.default_rng(bins)
    # Edges and zero included so the boundary rule is exercised, not just interior values.
    confidences = np.concatenate([rng.random(300), np.linspace(0.0, 1.0, bins + 1)])
    correct = rng.random(len(confidences)) < confidences
    result = reliability_bins(confidences, correct, bins=bins)
    total = len(confidences)
    assert sum(b.count for b in result) == total
    gap = sum(
        b.count / total * abs(b.accuracy - b.mean_confidence)
        for b in result
        if b.accuracy is not None and b.mean_confidence is not None
    )
    assert gap == pytest.approx(expected_calibration_error(confidences, correct, bins=bins))


def test_reliability_bins_without_rows_are_all_empty() -> None:
    result = reliability_bins(np.array([]), np.array([], dtype=bool), bins=3)
    assert [b.count for b in result] == [0, 0, 0]
    assert all(b.accuracy is None and b.mean_confidence is None for b in result)


def test_reliability_bins_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same shape"):
        reliability_bins(np.array([0.5, 0.6]), np.array([True]))
