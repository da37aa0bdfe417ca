"""The queue order: uncertain first, near-duplicates spread out, old items not forgotten."""

import numpy as np
import pytest
import scipy.sparse as sp

from model.ranking import AGE_DAYS, entropy_uncertainty, margin_uncertainty, rank


def test_margin_uncertainty_is_one_minus_the_gap_between_the_two_best() -> None:
    probabilities = np.array([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    assert margin_uncertainty(probabilities) == pytest.approx([1.0, 0.15, 0.8])


def test_entropy_uncertainty_is_one_for_a_uniform_row_and_zero_for_a_sure_one() -> None:
    probabilities = np.array([[0.25] * 4, [1.0, 0.0, 0.0, 0.0]])
    assert entropy_uncertainty(probabilities) == pytest.approx([1.0, 0.0], abs=1e-9)


def test_uncertain_items_come_first_without_features() -> None:
    probabilities = np.array([[0.95, 0.05], [0.55, 0.45], [0.7, 0.3]])
    ranking = rank(probabilities)
    assert ranking.order.tolist() == [1, 2, 0]


def test_a_near_duplicate_waits_behind_a_different_uncertain_item() -> None:
    """Three copies of one confusing text and one other, slightly less uncertain text: the
    different one is asked second, the copies after it."""
    probabilities = np.array([[0.50, 0.50], [0.51, 0.49], [0.52, 0.48], [0.60, 0.40]])
    features = np.array([[1.0, 0.0], [1.0, 0.0], [0.99, 0.01], [0.0, 1.0]])
    ranking = rank(probabilities, features=features)
    assert ranking.order.tolist()[:2] == [0, 3]
    assert set(ranking.order.tolist()[2:]) == {1, 2}
    # Without the spread the copies would come first.
    assert rank(probabilities).order.tolist() == [0, 1, 2, 3]


def test_sparse_features_give_the_same_order_as_dense() -> None:
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(4), size=30)
    features = (rng.random((30, 12)) < 0.3).astype(float)
    dense = rank(probabilities, features=features)
    sparse = rank(probabilities, features=sp.csr_matrix(features))
    assert dense.order.tolist() == sparse.order.tolist()


def test_age_lets_a_sure_item_overtake_fresh_uncertain_ones() -> None:
    probabilities = np.array([[0.99, 0.01], [0.5, 0.5], [0.55, 0.45]])
    fresh = rank(probabilities, age_days=np.array([0.0, 0.0, 0.0]))
    assert fresh.order[0] == 1 and fresh.order[-1] == 0
    old = rank(probabilities, age_days=np.array([AGE_DAYS, 0.0, 0.0]))
    assert old.order[0] == 0


def test_priorities_agree_with_the_order_beyond_the_diversity_window() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=50)
    features = rng.random((50, 5))
    ranking = rank(probabilities, features=features, window=10)
    ordered = ranking.priority[ranking.order]
    assert np.all(np.diff(ordered) < 0)
    assert sorted(ranking.order.tolist()) == list(range(50))


def test_ties_keep_arrival_order() -> None:
    probabilities = np.full((4, 2), 0.5)
    assert rank(probabilities).order.tolist() == [0, 1, 2, 3]


def test_nothing_to_rank_and_one_label() -> None:
    assert rank(np.zeros((0, 3))).order.tolist() == []
    single = rank(np.ones((2, 1)), features=np.eye(2))
    assert single.order.tolist() == [0, 1]
