"""Which waiting item a person should answer first.

The order is uncertainty first (a small margin between the model's two best labels means an
answer teaches the model the most), spread out so that one batch is not ten near-duplicates of
the same confusing text, and aged so that nothing waits forever.

Diversity is greedy: walking down the uncertainty order, an item that looks like one already
placed (cosine similarity of the model's own features) is moved back by that similarity. Only the
`window` most uncertain items are spread this way; the rest keep their uncertainty order.
"""

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

# How much a near-duplicate of an item already placed loses: its score falls by this times
# the cosine similarity to its closest placed item (1.0 for an exact duplicate).
DIVERSITY_WEIGHT = 0.5
# After this many days waiting an item outranks any fresh one: age adds days / AGE_DAYS.
AGE_DAYS = 3.0
# The greedy spread is quadratic in this; beyond it uncertainty alone orders the queue.
DIVERSITY_WINDOW = 400


@dataclass(frozen=True)
class Ranking:
    """`order[k]` is the index of the k-th item to ask; `priority[i]` is item i's score
    (higher asks first, consistent with `order`)."""

    order: NDArray[np.intp]
    priority: NDArray[np.float64]


def margin_uncertainty(probabilities: NDArray[np.float64]) -> NDArray[np.float64]:
    """1 minus the gap between the two most probable labels: 1 is a coin toss, 0 is sure."""
    n, k = probabilities.shape
    if n == 0:
        return np.zeros(0)
    if k < 2:
        return np.zeros(n)
    top_two = np.partition(probabilities, k - 2, axis=1)[:, -2:]
    return np.asarray(1.0 - np.abs(top_two[:, 1] - top_two[:, 0]), dtype=np.float64)


def entropy_uncertainty(probabilities: NDArray[np.float64]) -> NDArray[np.float64]:
    """Shannon entropy of each row, divided by its maximum (log of the label count)."""
    n, k = probabilities.shape
    if n == 0 or k < 2:
        return np.zeros(n)
    p = np.clip(probabilities, 1e-12, 1.0)
    return np.asarray(-(p * np.log(p)).sum(axis=1) / np.log(k), dtype=np.float64)


def _unit_rows(features: NDArray[np.float64] | sp.spmatrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(features, dtype=np.float64)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ matrix)


def rank(
    probabilities: NDArray[np.float64],
    *,
    features: NDArray[np.float64] | sp.spmatrix | None = None,
    age_days: NDArray[np.float64] | None = None,
    diversity: float = DIVERSITY_WEIGHT,
    window: int = DIVERSITY_WINDOW,
) -> Ranking:
    """Order items for people: margin uncertainty, spread by `features`, aged by `age_days`."""
    n = probabilities.shape[0]
    score = margin_uncertainty(probabilities)
    if age_days is not None:
        score = score + np.clip(np.asarray(age_days, dtype=np.float64), 0.0, None) / AGE_DAYS
    # Stable sort, so equal scores keep arrival order (the caller's order).
    order = np.argsort(-score, kind="stable").astype(np.intp)
    priority = score.copy()
    if features is None or diversity <= 0 or n < 2:
        return Ranking(order, priority)
    head = order[: min(window, n)]
    unit = _unit_rows(features)[head]
    similarity = np.asarray((unit @ unit.T).todense())
    np.fill_diagonal(similarity, 0.0)
    remaining = np.ones(len(head), dtype=bool)
    closest = np.zeros(len(head))  # similarity to the closest item already placed
    base = score[head]
    placed: list[int] = []
    for _ in range(len(head)):
        adjusted = np.where(remaining, base - diversity * closest, -np.inf)
        pick = int(np.argmax(adjusted))
        placed.append(pick)
        priority[head[pick]] = adjusted[pick]
        remaining[pick] = False
        closest = np.maximum(closest, similarity[pick])
    spread = head[np.asarray(placed, dtype=np.intp)]
    # Keep priorities strictly consistent with the order: the spread head stays above the tail.
    head_priority = priority[spread]
    head_priority = np.minimum.accumulate(head_priority)
    priority[spread] = head_priority
    tail = order[len(head) :]
    if len(tail):
        floor = float(head_priority[-1]) - 1e-9
        steps = 1e-9 * np.arange(1, len(tail) + 1)
        priority[tail] = np.minimum(priority[tail], floor) - steps
    return Ranking(np.concatenate([spread, tail]).astype(np.intp), priority)
